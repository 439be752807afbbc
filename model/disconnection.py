"""Stochastic disconnection: what an image sees, and the capacity it costs.

Implements MODEL.md, "Disconnection (stochastic) and what an image sees". A
connected particle disconnects at the end of cycle k with probability
p_k = min(1, ζ0·d_k) and keeps the gap d_k for ever. The expectations below
are exact sums over the disconnection cycle K, accumulated in one pass over
the gap stream of :func:`debond.model.mechanics.iter_gaps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from debond.model.mechanics import check_cycles, check_radius, iter_gaps
from debond.model.parameters import FloatArray, Material, Parameters


class ImagedStatistics(NamedTuple):
    """Moments of the imaged gap and the survival of connected particles.

    Attributes
    ----------
    mean : (len(cycles), ...) array
        m_n(r) = E[D] after each requested cycle count n, in µm.
    sd : (len(cycles), ...) array
        s_n(r) = sd[D], in µm.
    survival : (n_survival, ...) array
        S(k) = ∏_{j≤k}(1 − p_j) for k = 1 … n_survival.
    """

    mean: FloatArray
    sd: FloatArray
    survival: FloatArray


def disconnection_probability(gap_um: FloatArray, zeta0: ArrayLike) -> FloatArray:
    """Per-cycle disconnection probability p(d) = min(1, ζ0·d)."""
    return np.minimum(1.0, np.asarray(zeta0) * gap_um)


def imaged_statistics(
    radius_um: ArrayLike,
    cycles: Sequence[int],
    parameters: Parameters,
    material: Material,
    n_survival: int = 0,
) -> ImagedStatistics:
    """Mean and sd of the imaged gap after several cycle counts, in one pass.

    A sample imaged after n cycles shows D = d_K, K = min(disconnection cycle, n),
    with P(K = k) = p_k·∏_{j<k}(1 − p_j) for k < n and P(K = n) = ∏_{j<n}(1 − p_j).

    Parameters
    ----------
    radius_um : (...) array
        Effective radii in µm, broadcast with the parameters.
    cycles : sequence of int
        Cycle counts n ≥ 0 at which samples are imaged (0: pristine, gap 0).
    parameters : Parameters
    material : Material
    n_survival : int, optional
        Also return S(1) … S(n_survival). Default 0.

    Returns
    -------
    ImagedStatistics
    """
    radius = check_radius(radius_um)
    wanted = [check_cycles(n, "cycles") for n in cycles]
    n_survival = check_cycles(n_survival, "n_survival")
    last = max([*wanted, n_survival, 0])
    zeta0 = np.asarray(parameters.zeta0)

    first_moment: dict[int, FloatArray] = {}
    second_moment: dict[int, FloatArray] = {}
    survival: list[FloatArray] = []
    alive: FloatArray | float = 1.0  # ∏_{j<k}(1 − p_j)
    settled1: FloatArray | float = 0.0  # Σ_{j<k} P(K = j)·d_j
    settled2: FloatArray | float = 0.0  # Σ_{j<k} P(K = j)·d_j²
    for k, d in zip(range(1, last + 1), iter_gaps(radius, parameters, material), strict=False):
        if k in wanted:
            first_moment[k] = settled1 + alive * d
            second_moment[k] = settled2 + alive * d * d
        p = disconnection_probability(d, zeta0)
        leaving = alive * p
        settled1 = settled1 + leaving * d
        settled2 = settled2 + leaving * d * d
        alive = alive * (1.0 - p)
        survival.append(np.asarray(alive))

    shape = np.broadcast_shapes(
        radius.shape,
        *(np.shape(getattr(parameters, f)) for f in ("alpha0", "kappa0", "delta0", "zeta0")),
    )
    zero = np.zeros(shape)
    mean = np.stack([np.broadcast_to(first_moment.get(n, zero), shape) for n in wanted] or [zero])
    square = np.stack(
        [np.broadcast_to(second_moment.get(n, zero), shape) for n in wanted] or [zero]
    )
    sd = np.sqrt(np.clip(square - mean * mean, 0.0, None))
    kept = [np.broadcast_to(s, shape) for s in survival[:n_survival]]
    return ImagedStatistics(
        mean[: len(wanted)], sd[: len(wanted)], np.stack(kept) if kept else np.empty((0, *shape))
    )


def gap_distribution(
    radius_um: ArrayLike, n_cycles: int, parameters: Parameters, material: Material
) -> tuple[FloatArray, FloatArray]:
    """Mean and standard deviation of the gap an image shows after n cycles.

    Parameters
    ----------
    radius_um : (...) array
        Effective radii r in µm.
    n_cycles : int
        Cycles n ≥ 0 the imaged sample went through.
    parameters : Parameters
        Model parameters; arrays broadcast with the radii.
    material : Material

    Returns
    -------
    mean, sd : (...) arrays
        m_n(r) = E[D] and s_n(r) = sd[D] in µm (the paper's Fig. 4a lines and bands).

    Examples
    --------
    >>> mean, sd = gap_distribution([0.2], 1, Parameters(0.83, 0.02, 0.12, 0.163), Material())
    >>> round(float(mean[0]), 4), round(float(sd[0]), 4)
    (0.12, 0.0)
    """
    stats = imaged_statistics(radius_um, [n_cycles], parameters, material)
    return stats.mean[0], stats.sd[0]


def retention_from_survival(survival: FloatArray, weights: FloatArray) -> FloatArray:
    """C(n) = Σ_i w_i·S_i(n−1) / Σ_i w_i for n = 1 … len(survival) + 1.

    Parameters
    ----------
    survival : (n − 1, ..., N) array
        S(1) … S(n−1) per particle on the last axis.
    weights : (..., N) array
        Capacity weight of each particle (r³ for the silicon volume).

    Returns
    -------
    (n, ...) array
        Capacity relative to cycle 1, C[0] = 1.
    """
    total = np.sum(weights, axis=-1)
    later = np.sum(survival * weights, axis=-1) / total  # (n − 1, ...)
    first = np.ones((1, *later.shape[1:]))
    return np.concatenate([first, later], axis=0)


def capacity_retention(
    radii_um: ArrayLike,
    n_cycles: int,
    parameters: Parameters,
    material: Material,
    counts: ArrayLike | None = None,
) -> FloatArray:
    """Silicon capacity of each cycle relative to cycle 1, over a particle population.

    C(n) = Σ_i r_i³·S_i(n−1) / Σ_i r_i³ (MODEL.md): a disconnected particle's
    silicon no longer cycles.

    Parameters
    ----------
    radii_um : (N,) array
        Effective radii of the particle population (from the images), in µm.
    n_cycles : int
        Number of cycles n ≥ 1.
    parameters : Parameters
        Model parameters; a field of shape ``P`` (e.g. ``(B,)``) evaluates
        several parameter sets against the same population.
    material : Material
    counts : (N,) array, optional
        Number of particles of each radius (a population given as size
        classes), ≥ 0; default one each.

    Returns
    -------
    (n_cycles, *P) array
        C(1) = 1, C(2), … C(n).

    Examples
    --------
    >>> C = capacity_retention([0.2, 0.5, 1.0], 10, Parameters(0.83, 0.02, 0.12, 0.163), Material())
    >>> C.shape, float(C[0])
    ((10,), 1.0)
    """
    radii = check_radius(radii_um, "radii_um").ravel()
    if radii.size == 0 or not np.any(radii > 0):
        raise ValueError("radii_um must hold at least one particle with radius > 0 µm")
    n = check_cycles(n_cycles, minimum=1)
    expanded = Parameters(
        *(
            np.expand_dims(np.asarray(getattr(parameters, f)), -1)
            for f in ("alpha0", "kappa0", "delta0", "zeta0")
        )
    )
    weights = radii**3
    if counts is not None:
        number = np.asarray(counts, dtype=np.float64).ravel()
        if number.shape != radii.shape or not (np.isfinite(number).all() and (number >= 0).all()):
            raise ValueError(
                f"counts must be finite, ≥ 0 and one per radius ({radii.size}); "
                f"got shape {number.shape}"
            )
        weights = weights * number
    if not np.any(weights > 0):
        raise ValueError("counts must give at least one particle with radius > 0 µm")
    stats = imaged_statistics(radii, [], expanded, material, n_survival=n - 1)
    return retention_from_survival(stats.survival, weights)
