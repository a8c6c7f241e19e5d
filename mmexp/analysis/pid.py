"""Partial information decomposition (PID) of two discrete modalities about a target.

The decomposition splits ``I(X1, X2; Y)`` into redundancy ``R``, the unique information of
each modality ``U1`` and ``U2``, and synergy ``S``, with the definitions of Bertschinger et
al., "Quantifying Unique Information", Entropy 2014 (BROJA), as estimated by the CVX
estimator of Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information
Decomposition Framework", NeurIPS 2023. With ``Delta_P`` the distributions ``Q`` over
``(x1, x2, y)`` that keep the ``(x1, y)`` and ``(x2, y)`` marginals of ``P``::

    Q*  = argmin_{Q in Delta_P} I_Q(X1, X2; Y)
    U1  = I_Q*(X1; Y | X2)        U2 = I_Q*(X2; Y | X1)
    R   = I(X1; Y) - U1           S  = I_P(X1, X2; Y) - I_Q*(X1, X2; Y)

so ``R + U1 = I(X1; Y)``, ``R + U2 = I(X2; Y)`` and ``R + U1 + U2 + S = I_P(X1, X2; Y)``.
Since ``Q(y)`` is fixed on ``Delta_P``, ``I_Q(X1, X2; Y) = KL(Q || Q(x1, x2) P(y))`` with a
second argument affine in ``Q``; CVXPY writes it with exponential cones and a conic solver
that ships with it (Clarabel by default) solves it. All values are in bits.

A decomposition is returned only when the solver reports ``optimal``, or
``optimal_inaccurate`` and the checks below pass; anything else raises
:class:`PIDSolverError`. Each check allows ``tol`` (:data:`DEFAULT_TOL` unless given), in
bits, or in probability for the marginals:

* ``Q*`` keeps the ``(x_i, y)`` marginals of ``P``, and so ``I_Q*(X_i; Y) = I_P(X_i; Y)``;
* ``Q*`` is within ``tol`` of the minimum: ``I_Q*(X1, X2; Y)`` minus a lower bound on the
  minimum from the solver's dual multipliers (:mod:`mmexp.analysis.pid_program`). On
  ``Delta_P`` each atom moves one for one with the objective, so this bounds their error;
* no atom is below ``-tol``. BROJA atoms are non-negative, so this would mean ``Q*`` is
  not a distribution in ``Delta_P`` or not its minimiser.

Atoms in ``[-tol, 0)`` are round-off and are clipped to 0, which can move their sum off
``I(X1, X2; Y)`` by at most ``4 * tol``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import entr

from mmexp.analysis.pid_program import PIDSolverError, solve

log = logging.getLogger(__name__)

#: Tolerance, in bits (and probability for marginals), of the checks on a solution.
#: Clarabel's default settings certify about 1e-7 bits on 20 x 20 x 10 joints; much larger
#: alphabets may need a looser ``tol`` or tighter solver settings.
DEFAULT_TOL = 1e-6
DEFAULT_SOLVER = "CLARABEL"

__all__ = [
    "DEFAULT_TOL",
    "PIDResult",
    "PIDSolverError",
    "empirical_joint",
    "pid_from_joint",
    "pid_from_samples",
]


@dataclass(frozen=True)
class PIDResult:
    """A BROJA decomposition of ``I(X1, X2; Y)``, in bits.

    Attributes:
        redundancy: ``R``, what either modality tells about ``Y``.
        unique: ``(U1, U2)``, what only ``X1`` and only ``X2`` tell.
        synergy: ``S``, what only the two together tell.
        total: ``I(X1, X2; Y)`` under the given joint.
        status: The solver status that was accepted.
        solver: The CVXPY solver name.
        gap: Certified bound, in bits, on how far ``I_Q*(X1, X2; Y)`` is above its
            minimum, and so on the error of each atom beyond the marginals' round-off.
    """

    redundancy: float
    unique: tuple[float, float]
    synergy: float
    total: float
    status: str
    solver: str
    gap: float

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-ready mapping, one key per atom."""
        return {
            "redundancy": self.redundancy,
            "unique_1": self.unique[0],
            "unique_2": self.unique[1],
            "synergy": self.synergy,
            "total": self.total,
            "status": self.status,
            "solver": self.solver,
            "gap": self.gap,
        }


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy in bits of a (possibly multi-dimensional) distribution."""
    return float(entr(p).sum() / np.log(2))


def _mi(p2: np.ndarray) -> float:
    """``I(A; B)`` in bits from a 2-D joint ``p(a, b)``."""
    return _entropy(p2.sum(1)) + _entropy(p2.sum(0)) - _entropy(p2)


def _mi_with_target(p: np.ndarray) -> float:
    """``I(X1, X2; Y)`` from ``p(x1, x2, y)``."""
    return _mi(p.reshape(-1, p.shape[2]))


def _conditional_mi(p: np.ndarray) -> float:
    """``I(X1; Y | X2)`` from ``p(x1, x2, y)``."""
    return _entropy(p.sum(2)) + _entropy(p.sum(0)) - _entropy(p.sum((0, 2))) - _entropy(p)


def _check_joint(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"the joint must be 3-D [n1, n2, ny], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("the joint must be finite and non-negative")
    total = p.sum()
    if total <= 0:
        raise ValueError("the joint has no mass")
    return p / total


def pid_from_joint(
    p: np.ndarray,
    *,
    solver: str = DEFAULT_SOLVER,
    tol: float = DEFAULT_TOL,
    solver_options: Mapping[str, Any] | None = None,
) -> PIDResult:
    """BROJA decomposition of a discrete joint ``p(x1, x2, y)``.

    Args:
        p: Joint ``[n1, n2, ny]``; counts are accepted and normalised.
        solver: A CVXPY solver that handles exponential cones (``"CLARABEL"``, ``"SCS"``).
        tol: Tolerance of the checks described in the module docstring.
        solver_options: Keyword arguments for ``Problem.solve`` (``{"max_iter": 500}`` for
            Clarabel, ``{"max_iters": 5000}`` for SCS).

    Returns:
        The decomposition, each atom in ``[0, I(X1, X2; Y)]`` up to ``tol``.

    Raises:
        ValueError: If ``p`` is not a 3-D non-negative array with mass.
        PIDSolverError: If the solver status is not accepted or a check fails.
    """
    p = _check_joint(p)
    solution = solve(p, solver, solver_options or {})
    q, status = solution.q, solution.status
    i1, i2, i12 = _mi(p.sum(1)), _mi(p.sum(0)), _mi_with_target(p)
    iq12 = _mi_with_target(q)
    u1 = _conditional_mi(q)
    u2 = _conditional_mi(q.transpose(1, 0, 2))
    atoms = {"redundancy": i1 - u1, "unique_1": u1, "unique_2": u2, "synergy": i12 - iq12}
    problems = [f"{name} = {value:.3g} bits" for name, value in atoms.items() if value < -tol]
    marginal_gap = max(np.abs(q.sum(1) - p.sum(1)).max(), np.abs(q.sum(0) - p.sum(0)).max())
    if marginal_gap > tol:
        problems.append(f"Q misses the (x_i, y) marginals of P by {marginal_gap:.3g}")
    mi_gap = max(abs(_mi(q.sum(1)) - i1), abs(_mi(q.sum(0)) - i2))
    if mi_gap > tol:
        problems.append(f"I_Q(X_i; Y) differs from I_P(X_i; Y) by {mi_gap:.3g} bits")
    # A Q a little off Delta_P can sit a little below the bound: that is round-off, which
    # the marginal checks above already bound, not a negative distance to the minimum.
    gap = max(iq12 - solution.lower_bound, 0.0)
    if gap > tol:
        problems.append(f"I_Q(X1,X2;Y) may be {gap:.3g} bits above its minimum")
    if problems:
        raise PIDSolverError(status, f"beyond tol={tol:g}: " + "; ".join(problems))
    if status != "optimal":
        log.warning("PID solver status %r accepted: every check passed within %g", status, tol)
    clipped = {name: max(value, 0.0) for name, value in atoms.items()}
    return PIDResult(
        redundancy=clipped["redundancy"],
        unique=(clipped["unique_1"], clipped["unique_2"]),
        synergy=clipped["synergy"],
        total=i12,
        status=status,
        solver=solver,
        gap=gap,
    )


def empirical_joint(
    x1: np.ndarray, x2: np.ndarray, y: np.ndarray, sizes: tuple[int, int, int]
) -> np.ndarray:
    """Empirical ``p(x1, x2, y)`` of integer codes, shape ``sizes``.

    Raises:
        ValueError: If the arrays are not 1-D integer arrays of one length with codes in
            ``[0, size)``.
    """
    arrays = [np.asarray(a) for a in (x1, x2, y)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 or arrays[0].size == 0:
        raise ValueError(
            f"x1, x2, y must be non-empty 1-D of one length: {[a.shape for a in arrays]}"
        )
    for name, a, size in zip(("x1", "x2", "y"), arrays, sizes, strict=True):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer codes, got {a.dtype}")
        if a.min() < 0 or a.max() >= size:
            raise ValueError(f"{name} has codes outside [0, {size})")
    flat = np.ravel_multi_index(arrays, sizes)
    counts = np.bincount(flat, minlength=int(np.prod(sizes)))
    return (counts / counts.sum()).reshape(sizes)


def pid_from_samples(
    x1: np.ndarray,
    x2: np.ndarray,
    y: np.ndarray,
    *,
    sizes: tuple[int, int, int] | None = None,
    **kwargs: Any,
) -> PIDResult:
    """BROJA decomposition of the empirical joint of paired integer codes.

    Args:
        x1: Codes of the first modality, ``[N]`` (k-means clusters, see
            :func:`mmexp.analysis.discretize.discretize`).
        x2: Codes of the second modality, ``[N]``.
        y: Codes of the target, ``[N]`` (labels or a model's predictions).
        sizes: Alphabet sizes ``(n1, n2, ny)``; ``max + 1`` of each array when ``None``.
            Unused codes change nothing but the problem size.
        **kwargs: Passed to :func:`pid_from_joint`.

    Returns:
        The decomposition of the plug-in joint. Like any plug-in estimate it overstates
        ``I(X1, X2; Y)`` when ``N`` is small against ``n1 * n2 * ny``.
    """
    if sizes is None:
        n1, n2, ny = (int(np.max(a)) + 1 if np.size(a) else 0 for a in (x1, x2, y))
        sizes = (n1, n2, ny)
    return pid_from_joint(empirical_joint(x1, x2, y, sizes), **kwargs)
