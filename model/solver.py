"""A batched, bounded Levenberg–Marquardt solver for many small problems at once.

Every replicate is an independent least-squares problem with the same number
of parameters and residuals; all of them advance together as arrays with a
leading replicate axis. The Jacobian is taken by forward differences
(evaluated for all replicates and parameters in one call), the damping is
Marquardt's scaled diagonal, bounds are kept by an active set (parameters on a
bound whose gradient points outwards are frozen) and by projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from debond.model.parameters import FloatArray

#: residuals(theta (R, P), rows (R,)) -> (R, M): rows index per-replicate data.
Residuals = Callable[[FloatArray, NDArray[np.intp]], FloatArray]


class Solution(NamedTuple):
    """Result of :func:`least_squares_batched`.

    Attributes
    ----------
    theta : (R, P) array
        Best parameters found for each replicate.
    cost : (R,) array
        ½·Σ residual² at ``theta``.
    converged : (R,) bool array
        Whether the replicate met a convergence test before ``max_iterations``.
    iterations : (R,) int array
        Iterations used.
    """

    theta: FloatArray
    cost: FloatArray
    converged: NDArray[np.bool_]
    iterations: NDArray[np.int64]


def _jacobian(
    residuals: Residuals,
    theta: FloatArray,
    rows: NDArray[np.intp],
    base: FloatArray,
    step: FloatArray,
    upper: FloatArray,
) -> FloatArray:
    """Forward-difference Jacobian, shape (R, M, P), in one residual call."""
    n, p = theta.shape
    # Step backwards where a forward step would leave the box.
    h = np.where(theta + step > upper, -step, step)
    shifted = np.repeat(theta[:, None, :], p, axis=1)
    shifted[:, np.arange(p), np.arange(p)] += h
    values = residuals(shifted.reshape(n * p, p), np.repeat(rows, p)).reshape(n, p, -1)
    return np.transpose((values - base[:, None, :]) / h[:, :, None], (0, 2, 1))


def least_squares_batched(
    residuals: Residuals,
    theta0: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    typical: FloatArray,
    *,
    max_iterations: int = 60,
    ftol: float = 1e-10,
    xtol: float = 1e-8,
    relative_step: float = 1e-5,
) -> Solution:
    """Minimise ½‖f_r(θ_r)‖² for every replicate r at once, within bounds.

    Parameters
    ----------
    residuals : callable
        ``residuals(theta, rows)`` with ``theta`` of shape (K, P) and ``rows``
        (K,) indices of the replicates these parameter sets belong to; returns
        (K, M) residuals.
    theta0 : (R, P) array
        Starting points, inside the bounds.
    lower, upper : (P,) arrays
        Box bounds.
    typical : (P,) array
        Typical magnitude of each parameter: sets the difference step near 0
        and the step-size convergence test.
    max_iterations : int
        Iterations at most per replicate.
    ftol, xtol : float
        Converged when an accepted step lowers the cost by less than
        ``ftol``·cost, or changes every parameter by less than
        ``xtol``·(|θ| + typical).
    relative_step : float
        Difference step, relative to max(|θ|, typical).

    Returns
    -------
    Solution
    """
    theta = np.clip(np.array(theta0, dtype=np.float64), lower, upper)
    n, p = theta.shape
    all_rows = np.arange(n)
    r = residuals(theta, all_rows)
    cost = 0.5 * np.einsum("rm,rm->r", r, r)
    damping = np.full(n, 1e-3)
    converged = np.zeros(n, dtype=bool)
    iterations = np.zeros(n, dtype=np.int64)
    jac = np.empty((n, r.shape[1], p))
    stale = np.ones(n, dtype=bool)  # Jacobian to be (re)computed
    active = all_rows

    for _ in range(max_iterations):
        if active.size == 0:
            break
        fresh = active[stale[active]]
        if fresh.size:
            step = relative_step * np.maximum(np.abs(theta[fresh]), typical)
            jac[fresh] = _jacobian(residuals, theta[fresh], fresh, r[fresh], step, upper)
            stale[fresh] = False
        j, ra, th = jac[active], r[active], theta[active]
        jtj = np.einsum("rmi,rmj->rij", j, j)
        grad = np.einsum("rmi,rm->ri", j, ra)
        # Active set: a parameter on a bound whose descent direction leaves the box.
        frozen = ((th <= lower) & (grad > 0)) | ((th >= upper) & (grad < 0))
        diag = np.maximum(np.einsum("rii->ri", jtj), 1e-12)
        system = jtj + (damping[active, None] * diag)[:, :, None] * np.eye(p)
        keep = ~frozen
        system = system * keep[:, :, None] * keep[:, None, :] + frozen[:, :, None] * np.eye(p)
        delta = -np.linalg.solve(system, (grad * keep)[:, :, None])[:, :, 0]
        trial = np.clip(th + delta, lower, upper)
        r_trial = residuals(trial, active)
        cost_trial = 0.5 * np.einsum("rm,rm->r", r_trial, r_trial)
        better = np.isfinite(cost_trial) & (cost_trial < cost[active])
        iterations[active] += 1

        gain = cost[active] - cost_trial
        moved = np.abs(trial - th)
        small_step = np.all(moved <= xtol * (np.abs(th) + typical), axis=1)
        small_gain = better & (gain <= ftol * cost[active])
        done = small_gain | small_step

        accepted = active[better]
        theta[accepted] = trial[better]
        r[accepted] = r_trial[better]
        cost[accepted] = cost_trial[better]
        stale[accepted] = True
        damping[active] = np.where(better, damping[active] / 3.0, damping[active] * 4.0)
        converged[active[done]] = True
        # A replicate whose damping has exploded sits in a (local) minimum.
        stuck = damping[active] > 1e12
        converged[active[stuck]] = True
        active = active[~(done | stuck)]

    return Solution(theta, cost, converged, iterations)
