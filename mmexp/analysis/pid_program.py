"""The BROJA convex program behind :mod:`mmexp.analysis.pid`, and a bound on its minimum.

``min_{Q in Delta_P} I_Q(X1, X2; Y)``, with ``Delta_P`` the distributions that keep the
``(x1, y)`` and ``(x2, y)`` marginals of ``P``, as in the CVX estimator of Liang et al.,
NeurIPS 2023: ``Q(y) = P(y)`` on ``Delta_P``, so the objective is
``KL(Q || Q(x1, x2) P(y))``, whose second argument is affine in ``Q``, and CVXPY writes it
with exponential cones.

The solver's duals of the marginal constraints also give a lower bound on the minimum
that holds however inaccurate they are (:func:`_dual_bound`), so the distance of the
returned ``Q`` from the optimum is known, not assumed from the status alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

_LN2 = float(np.log(2))
_ACCEPTED = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)


class PIDSolverError(RuntimeError):
    """The convex program gave no decomposition that can be trusted.

    Attributes:
        status: The CVXPY status (``"user_limit"``, ``"optimal_inaccurate"``, ...), or
            ``"solver_error"`` when the solver raised.
        detail: What went wrong, after the status.
    """

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"PID solver status {status!r}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Solution:
    """What the program returned.

    Attributes:
        q: The solver's ``Q``, ``[n1, n2, ny]``, negatives from round-off set to 0.
        status: The CVXPY status.
        lower_bound: A lower bound, in bits, on ``min_{Q in Delta_P} I_Q(X1, X2; Y)``.
    """

    q: np.ndarray
    status: str
    lower_bound: float


def _dual_bound(
    p: np.ndarray, cells: tuple[np.ndarray, ...], lam1: np.ndarray, lam2: np.ndarray
) -> float:
    """Lagrangian lower bound, in bits, from multipliers of the marginal constraints.

    The objective is a sum over ``(x1, x2)`` of ``s * KL(r || P(y))`` with ``s = Q(x1, x2)``
    and ``r = Q(y | x1, x2)``, so the Lagrangian's minimum over ``Q >= 0`` is
    ``-<lam1, P(x1, y)> - <lam2, P(x2, y)>`` when every pair has
    ``sum_y P(y) exp(-lam1(x1, y) - lam2(x2, y)) <= 1``, and minus infinity otherwise.
    Adding the log of the largest such sum over ``x2`` to ``lam1(x1, .)`` satisfies them
    all, so any multipliers, accurate or not, give a valid bound.

    Args:
        p: The joint ``P``.
        cells: ``(i, j, k)`` indices of the cells ``Q`` may use.
        lam1: Multipliers of the ``(x1, y)`` constraints, nats, ``[n1, ny]``.
        lam2: Multipliers of the ``(x2, y)`` constraints, nats, ``[n2, ny]``.
    """
    i, j, k = cells
    log_sums = np.full(p.shape[:2], -np.inf)
    np.logaddexp.at(log_sums, (i, j), np.log(p.sum((0, 1))[k]) - lam1[i, k] - lam2[j, k])
    shift = log_sums.max(axis=1)
    lam1 = lam1 + np.where(np.isfinite(shift), shift, 0.0)[:, None]
    bound = -(lam1 * p.sum(1)).sum() - (lam2 * p.sum(0)).sum()
    return float(bound / _LN2)


def solve(p: np.ndarray, solver: str, solver_options: Mapping[str, Any]) -> Solution:
    """Minimise ``I_Q(X1, X2; Y)`` over ``Delta_P``.

    Args:
        p: A normalised joint ``[n1, n2, ny]``.
        solver: A CVXPY solver with exponential cones.
        solver_options: Keyword arguments of ``Problem.solve``.

    Raises:
        PIDSolverError: If the solver raised, or its status is neither ``optimal`` nor
            ``optimal_inaccurate``.
    """
    n1, n2, ny = p.shape
    p1y, p2y, py = p.sum(1), p.sum(0), p.sum((0, 1))
    # Q must vanish wherever P(x1, y) or P(x2, y) does; leaving those cells out keeps the
    # cones away from points the constraints pin to zero.
    cells = np.nonzero((p1y[:, None, :] > 0) & (p2y[None, :, :] > 0))
    i, j, k = cells
    m = len(i)
    cols = np.arange(m)

    def incidence(rows: np.ndarray, n_rows: int) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(m), (rows, cols)), shape=(n_rows, m))

    a1, a2 = incidence(i * ny + k, n1 * ny), incidence(j * ny + k, n2 * ny)
    pair = incidence(i * n2 + j, n1 * n2)
    b1, b2 = p1y.ravel(), p2y.ravel()
    # Rows with no mass have no cells: 0 == 0 would only add degenerate constraints.
    keep1, keep2 = b1 > 0, b2 > 0
    q = cp.Variable(m, nonneg=True)
    # Q(x1, x2) P(y) at each cell: affine in q, so rel_entr stays jointly convex.
    product = cp.multiply(py[k], pair.T @ (pair @ q))
    marginals = [a1[keep1] @ q == b1[keep1], a2[keep2] @ q == b2[keep2]]
    problem = cp.Problem(cp.Minimize(cp.sum(cp.rel_entr(q, product)) / _LN2), marginals)
    try:
        problem.solve(solver=solver, **dict(solver_options))
    except cp.error.SolverError as err:
        raise PIDSolverError("solver_error", f"{solver} failed: {err}") from err
    if problem.status not in _ACCEPTED or q.value is None:
        raise PIDSolverError(problem.status, f"{solver} found no optimum of min I_Q(X1,X2;Y)")
    full = np.zeros_like(p)
    # Entries a hair below zero are round-off; entropies need them at zero.
    full[i, j, k] = np.clip(q.value, 0.0, None)
    if any(c.dual_value is None for c in marginals):
        return Solution(full, problem.status, -np.inf)
    lams = []
    for constraint, keep, n in ((marginals[0], keep1, n1), (marginals[1], keep2, n2)):
        lam = np.zeros(n * ny)
        # CVXPY's multipliers enter the Lagrangian as +lam^T (A q - b), in the objective's
        # bits; the bound works in nats.
        lam[keep] = np.asarray(constraint.dual_value, dtype=np.float64) * _LN2
        lams.append(lam.reshape(n, ny))
    return Solution(full, problem.status, _dual_bound(p, cells, lams[0], lams[1]))
