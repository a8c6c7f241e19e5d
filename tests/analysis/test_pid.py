"""PID on distributions whose decomposition is known, and k-means codes of clustered data."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.metrics import adjusted_rand_score

from mmexp.analysis.discretize import discretize, discretize_with_info, encode_labels
from mmexp.analysis.pid import (
    PIDSolverError,
    empirical_joint,
    pid_from_joint,
    pid_from_samples,
)
from mmexp.analysis.pid_program import _dual_bound

# Solutions are accurate to ~1e-8 bits; the checks allow a margin on top of that.
ATOL = 1e-5


def gate(fn) -> np.ndarray:
    """Joint of two uniform independent bits and ``y = fn(x1, x2)``."""
    p = np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            p[a, b, fn(a, b)] = 0.25
    return p


def atoms(result) -> list[float]:
    return [result.redundancy, *result.unique, result.synergy]


def h2(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda a, b: a ^ b, [0.0, 0.0, 0.0, 1.0]),  # synergy only
        (lambda a, b: a, [0.0, 1.0, 0.0, 0.0]),  # x2 is independent noise
        (lambda a, b: b, [0.0, 0.0, 1.0, 0.0]),
    ],
    ids=["xor", "unique_1", "unique_2"],
)
def test_gates_with_one_atom(fn, expected):
    result = pid_from_joint(gate(fn))
    assert atoms(result) == pytest.approx(expected, abs=ATOL)
    assert result.total == pytest.approx(1.0, abs=1e-12)
    assert result.status == "optimal"


def test_copy_is_all_redundancy():
    p = np.zeros((2, 2, 2))
    p[0, 0, 0] = p[1, 1, 1] = 0.5  # x1 = x2 = y
    assert atoms(pid_from_joint(p)) == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=ATOL)


def test_and_gate_matches_broja_literature():
    # Bertschinger et al., "Quantifying Unique Information", Entropy 2014, AND example (dit's
    # PID_BROJA gives the same): no unique information, R = I(X1; Y) = h(1/4) - 1/2 = 0.3113
    # and S = 1/2 bit.
    result = pid_from_joint(gate(lambda a, b: a & b))
    assert atoms(result) == pytest.approx([h2(0.25) - 0.5, 0.0, 0.0, 0.5], abs=ATOL)
    assert result.redundancy == pytest.approx(0.3113, abs=1e-4)


def test_reduced_or_matches_dit_documentation():
    # dit's PID documentation, "reduced or" (p(000) = 1/2, p(011) = p(101) = 1/4) under
    # I_broja: R = 0.3113, U1 = U2 = 0, S = 0.6887.
    p = np.zeros((2, 2, 2))
    p[0, 0, 0], p[0, 1, 1], p[1, 0, 1] = 0.5, 0.25, 0.25
    assert atoms(pid_from_joint(p)) == pytest.approx([0.3113, 0.0, 0.0, 0.6887], abs=1e-4)


def random_joint(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    return rng.dirichlet(np.full(math.prod(shape), 0.5)).reshape(shape)


def marginal_mi(p2: np.ndarray) -> float:
    outer = p2.sum(1, keepdims=True) * p2.sum(0, keepdims=True)
    nz = p2 > 0
    return float((p2[nz] * np.log2(p2[nz] / outer[nz])).sum())


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 4, 2), (5, 3, 3), (8, 8, 4)])
def test_invariants_on_random_joints(shape):
    rng = np.random.default_rng(math.prod(shape))
    for _ in range(3):
        p = random_joint(rng, shape)
        result = pid_from_joint(p)
        r, u1, u2, s = atoms(result)
        assert min(r, u1, u2, s) >= 0.0
        assert r + u1 + u2 + s == pytest.approx(result.total, abs=ATOL)
        assert r + u1 == pytest.approx(marginal_mi(p.sum(1)), abs=ATOL)
        assert r + u2 == pytest.approx(marginal_mi(p.sum(0)), abs=ATOL)
        assert result.total == pytest.approx(marginal_mi(p.reshape(-1, shape[2])), abs=1e-9)


def test_swapping_modalities_swaps_unique_terms():
    p = random_joint(np.random.default_rng(3), (3, 4, 2))
    a, b = pid_from_joint(p), pid_from_joint(p.transpose(1, 0, 2))
    assert b.unique == pytest.approx(a.unique[::-1], abs=ATOL)
    assert (b.redundancy, b.synergy) == pytest.approx((a.redundancy, a.synergy), abs=ATOL)


def min_iq_binary(p: np.ndarray) -> float:
    """``min I_Q(X1, X2; Y)`` over Delta_P by a direct search, for binary x1 and x2.

    With both marginals fixed, each 2x2 slice ``Q(., ., y)`` has one free entry, so
    Delta_P is a box in ``(Q(0, 0, 0), Q(0, 0, 1))`` and the convex objective is minimised
    there by L-BFGS-B: an optimiser and a parametrisation unrelated to the conic program.
    """
    a, b = p.sum(1), p.sum(0)
    lo = [max(0.0, b[0, y] - a[1, y]) for y in range(2)]
    hi = [min(a[0, y], b[0, y]) for y in range(2)]

    def q_of(t: np.ndarray) -> np.ndarray:
        q = np.empty((2, 2, 2))
        q[0, 0], q[0, 1] = t, a[0] - t
        q[1, 0], q[1, 1] = b[0] - t, a[1] - b[0] + t
        return np.clip(q, 0.0, None)

    start = (np.array(lo) + np.array(hi)) / 2
    res = minimize(
        lambda t: marginal_mi(q_of(t).reshape(4, 2)),
        start,
        bounds=list(zip(lo, hi, strict=True)),
        method="L-BFGS-B",
        options={"ftol": 1e-14, "gtol": 1e-12},
    )
    return float(res.fun)


def test_minimum_matches_a_direct_search_on_binary_joints():
    rng = np.random.default_rng(7)
    for _ in range(4):
        p = random_joint(rng, (2, 2, 2))
        result = pid_from_joint(p)
        assert result.total - result.synergy == pytest.approx(min_iq_binary(p), abs=1e-6)


def test_agrees_with_dit_on_random_joints():
    dit = pytest.importorskip("dit")
    from dit.pid import PID_BROJA

    rng = np.random.default_rng(11)
    for shape in [(2, 2, 2), (2, 3, 2), (3, 3, 2)]:
        p = random_joint(rng, shape)
        cells = list(np.ndindex(shape))
        # dit's alternating divergence minimisation (Banerjee et al., ISIT 2018): its
        # default SLSQP with random restarts stops up to ~0.02 bits short on such joints.
        ref = PID_BROJA(
            dit.Distribution(cells, [p[c] for c in cells]), [[0], [1]], [2], method="admui"
        )
        theirs = [ref[((0,), (1,))], ref[((0,),)], ref[((1,),)], ref[((0, 1),)]]
        assert atoms(pid_from_joint(p)) == pytest.approx(theirs, abs=1e-6)


def test_xor_from_samples():
    rng = np.random.default_rng(0)
    x1, x2 = rng.integers(0, 2, 20_000), rng.integers(0, 2, 20_000)
    result = pid_from_samples(x1, x2, x1 ^ x2)
    assert result.synergy == pytest.approx(1.0, abs=0.01)
    assert max(result.redundancy, *result.unique) < 0.01


def test_empirical_joint_counts_and_validates():
    p = empirical_joint(np.array([0, 1, 1]), np.array([2, 0, 0]), np.array([0, 1, 1]), (2, 3, 2))
    assert p.shape == (2, 3, 2)
    assert p[0, 2, 0] == pytest.approx(1 / 3) and p[1, 0, 1] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outside"):
        empirical_joint(np.array([0, 2]), np.array([0, 0]), np.array([0, 0]), (2, 1, 1))
    with pytest.raises(ValueError, match="integer"):
        empirical_joint(np.array([0.0]), np.array([0]), np.array([0]), (1, 1, 1))


def test_bad_joint_is_rejected():
    with pytest.raises(ValueError, match="3-D"):
        pid_from_joint(np.ones((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        pid_from_joint(-np.ones((2, 2, 2)))


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_iteration_limit_raises_with_the_status():
    with pytest.raises(PIDSolverError, match="user_limit") as info:
        pid_from_joint(gate(lambda a, b: a & b), solver_options={"max_iter": 1})
    assert info.value.status == "user_limit"


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_inaccurate_solution_failing_the_checks_raises():
    # One SCS iteration: CVXPY calls the iterate optimal_inaccurate, far off Delta_P.
    with pytest.raises(PIDSolverError, match="optimal_inaccurate.*marginals") as info:
        pid_from_joint(gate(lambda a, b: a & b), solver="SCS", solver_options={"max_iters": 1})
    assert info.value.status == "optimal_inaccurate"


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_feasible_but_suboptimal_iterate_is_rejected_by_the_gap():
    # Ten SCS iterations land near Delta_P (within 0.01) but 0.14 bits above the minimum.
    with pytest.raises(PIDSolverError, match="optimal_inaccurate.*above its minimum"):
        pid_from_joint(
            gate(lambda a, b: a & b), solver="SCS", solver_options={"max_iters": 10}, tol=1e-2
        )


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_inaccurate_but_certified_solution_is_accepted_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="mmexp.analysis.pid"):
        result = pid_from_joint(
            gate(lambda a, b: a & b), solver="SCS", solver_options={"max_iters": 50}, tol=1e-2
        )
    assert result.status == "optimal_inaccurate" and "optimal_inaccurate" in caplog.text
    assert result.gap <= 1e-2
    exact = [h2(0.25) - 0.5, 0.0, 0.0, 0.5]
    assert atoms(result) == pytest.approx(exact, abs=result.gap + 1e-2)


def test_dual_bound_holds_for_any_multipliers():
    rng = np.random.default_rng(5)
    p = random_joint(rng, (3, 4, 3))
    result = pid_from_joint(p)
    minimum = result.total - result.synergy
    cells = np.nonzero(np.ones(p.shape, dtype=bool))  # a Dirichlet joint has full support
    for scale in (0.0, 0.1, 1.0, 10.0):
        lam1, lam2 = rng.normal(scale=scale, size=(3, 3)), rng.normal(scale=scale, size=(4, 3))
        assert _dual_bound(p, cells, lam1, lam2) <= minimum + 1e-9


def test_result_as_dict():
    record = pid_from_joint(gate(lambda a, b: a ^ b)).as_dict()
    assert set(record) == {
        "redundancy",
        "unique_1",
        "unique_2",
        "synergy",
        "total",
        "status",
        "solver",
        "gap",
    }
    assert record["solver"] == "CLARABEL" and 0.0 <= record["gap"] <= 1e-6


def blobs(rng: np.random.Generator, n_per: int, k: int, dim: int) -> tuple[np.ndarray, ...]:
    centres = rng.normal(scale=20.0, size=(k, dim))
    truth = np.repeat(np.arange(k), n_per)
    return centres[truth] + rng.normal(size=(k * n_per, dim)), truth


def test_discretize_recovers_separated_clusters():
    x, truth = blobs(np.random.default_rng(0), 200, 5, 8)
    labels = discretize(x, n_clusters=5, seed=0)
    assert labels.shape == truth.shape and labels.dtype == np.int64
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)


def test_discretize_subsample_is_seeded_and_recorded():
    x, truth = blobs(np.random.default_rng(1), 300, 4, 6)
    info = discretize_with_info(x, n_clusters=4, seed=3, max_samples=200, pca_components=3)
    again = discretize_with_info(x, n_clusters=4, seed=3, max_samples=200, pca_components=3)
    assert np.array_equal(info.labels, again.labels)
    assert info.record()["n_fit_samples"] == 200 and info.n_samples == 1200
    assert adjusted_rand_score(truth, info.labels) == pytest.approx(1.0)


def test_discretize_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        discretize(np.full((30, 2), np.nan), n_clusters=2)
    with pytest.raises(ValueError, match="cannot make"):
        discretize(np.zeros((3, 2)), n_clusters=5)


def test_encode_labels_keeps_classes():
    codes, classes = encode_labels(np.array(["pos", "neg", "pos"]))
    assert codes.tolist() == [1, 0, 1] and classes.tolist() == ["neg", "pos"]
