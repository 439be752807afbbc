"""Deterministic mechanics of one particle: the exact piecewise solution.

Implements MODEL.md, "Mechanics of one particle". Inside every phase
(attached or detached, lithiation or delithiation) the Maxwell element obeys a
linear ODE with linear forcing, so each half-cycle is advanced in closed form;
the only Python loop is over cycles. Everything broadcasts over radii and over
parameter sets.

State at the end of a cycle (fully delithiated, λ = 0), positions in µm from
the pristine silicon surface:

- ``sei``: SEI thickness s;
- ``attached``: whether the environment is bonded to the particle;
- ``spring``: spring extension e = x_e − u_d (0 when detached);
- ``damper``: damper position u_d.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from debond.model.parameters import FloatArray, Material, Parameters


class CycleState(NamedTuple):
    """Mechanical state of particles at the end of a cycle (λ = 0), in µm."""

    sei: FloatArray
    attached: NDArray[np.bool_]
    spring: FloatArray
    damper: FloatArray


def relaxed(decay_rate: FloatArray, duration: FloatArray) -> FloatArray:
    """(1 − exp(−A·t)) / A, exact also for A·t → 0, in units of t."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = -np.expm1(-decay_rate * duration) / decay_rate
    return np.asarray(out, dtype=np.float64)


def advance_cycle(
    state: CycleState,
    stroke: FloatArray,
    alpha0: FloatArray,
    kappa0: FloatArray,
    delta0: FloatArray,
) -> CycleState:
    """Advance particles by one full cycle (lithiation, then delithiation).

    Parameters
    ----------
    state : CycleState
        State at the end of the previous cycle (λ = 0).
    stroke : array
        Radial expansion ε·r of each particle at full lithiation, in µm.
    alpha0, kappa0, delta0 : array
        Model parameters (``kappa0``, ``delta0`` in µm), broadcast with ``stroke``.

    Returns
    -------
    CycleState
        State at the end of this cycle.
    """
    sei, attached, spring, damper = state
    rate = stroke + delta0  # b: surface speed during lithiation, µm per half-cycle

    # Lithiation. A detached particle re-attaches when its surface reaches the
    # damper: τc = (u_d − x_p0)/b; an attached one is in contact from τ = 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        contact = np.where(attached, 0.0, (damper - sei) / rate)
    contact = np.clip(np.nan_to_num(contact, nan=np.inf), 0.0, None)
    touches = contact < 1.0
    in_contact = np.clip(1.0 - contact, 0.0, 1.0)
    spring_start = np.where(attached, spring, 0.0)
    # e(τ) = e0·exp(−Aτ) + b·(1 − exp(−Aτ))/A over the attached part.
    spring_lith = spring_start * np.exp(-alpha0 * in_contact) + rate * relaxed(alpha0, in_contact)
    sei = sei + delta0

    # Delithiation of attached particles: e(τ) = e0·exp(−Aτ) − εr·(1 − exp(−Aτ))/A.
    # Detachment when e = −κ0, i.e. τ* = ln(1 + A(e0 + κ0)/(εr − Aκ0))/A,
    # possible only when the asymptote −εr/A lies below −κ0.
    slack = stroke - alpha0 * kappa0
    can_detach = touches & (slack > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        detach_time = np.log1p(alpha0 * (spring_lith + kappa0) / np.where(can_detach, slack, 1.0))
        detach_time = detach_time / alpha0
    detaches = can_detach & (detach_time <= 1.0)
    one = np.ones_like(in_contact)
    spring_end = spring_lith * np.exp(-alpha0 * one) - stroke * relaxed(alpha0, one)
    # At detachment the environment freezes at x_p(τ*) + κ0; if still attached
    # at λ = 0, u_d = x_p − e = s − e.
    damper_detached = sei + stroke * (1.0 - detach_time) + kappa0
    stays = touches & ~detaches
    damper = np.where(detaches, damper_detached, np.where(stays, sei - spring_end, damper))
    spring = np.where(stays, spring_end, 0.0)
    return CycleState(sei, stays, spring, damper)


def gap_of(state: CycleState) -> FloatArray:
    """Gap at λ = 0 in µm: x_e, the SEI when attached, u_d when detached."""
    return np.where(state.attached, state.sei, state.damper)


def iter_gaps(
    radius_um: ArrayLike, parameters: Parameters, material: Material
) -> Iterator[FloatArray]:
    """Yield the gap d_k (µm) at the end of cycles k = 1, 2, … without end.

    Parameters
    ----------
    radius_um : array
        Effective particle radii in µm, broadcast with the parameters.
    parameters : Parameters
    material : Material

    Yields
    ------
    array
        d_k, of the broadcast shape of radii and parameters.
    """
    radius = np.asarray(radius_um, dtype=np.float64)
    alpha0, kappa0, delta0 = (
        np.asarray(parameters.alpha0),
        np.asarray(parameters.kappa0),
        np.asarray(parameters.delta0),
    )
    stroke = material.strain * radius
    shape = np.broadcast_shapes(stroke.shape, alpha0.shape, kappa0.shape, delta0.shape)
    zeros = np.zeros(shape)
    state = CycleState(zeros, np.ones(shape, dtype=bool), zeros, zeros)
    while True:
        state = advance_cycle(state, stroke, alpha0, kappa0, delta0)
        yield gap_of(state)


def check_radius(radius_um: ArrayLike, name: str = "radius_um") -> FloatArray:
    """Validate radii: finite and ≥ 0, in µm; the error names the offending value."""
    radius = np.asarray(radius_um, dtype=np.float64)
    bad = ~np.isfinite(radius) | (radius < 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and >= 0 µm; got {radius[bad].ravel()[0]!r}")
    return radius


def check_cycles(n_cycles: int, name: str = "n_cycles", minimum: int = 0) -> int:
    """Validate a cycle count: an integer ≥ ``minimum``."""
    number = np.asarray(n_cycles)
    whole = (
        not isinstance(n_cycles, bool)
        and number.ndim == 0
        and np.issubdtype(number.dtype, np.number)
        and bool(np.isfinite(number))
        and float(number) == round(float(number))
    )
    if not whole or float(number) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {n_cycles!r}")
    return int(number)


def gaps(
    radius_um: ArrayLike, n_cycles: int, parameters: Parameters, material: Material
) -> FloatArray:
    """Gap between a silicon particle and its environment after each cycle.

    The deterministic part of the model (MODEL.md): the distance, in µm, from
    the pristine silicon surface to the environment's inner boundary at the end
    of cycles 1 … n (fully delithiated), SEI included.

    Parameters
    ----------
    radius_um : (...) array
        Effective radii r in µm.
    n_cycles : int
        Number of cycles n ≥ 0.
    parameters : Parameters
        α0, κ0, δ0 (ζ0 is not used); fields may be arrays broadcast with the radii.
    material : Material
        Silicon expansion and half-cycle duration.

    Returns
    -------
    (n_cycles, ...) array
        d_1 … d_n, in µm; the trailing shape is that of radii and parameters
        broadcast together.

    Examples
    --------
    >>> d = gaps([0.2, 1.0], 3, Parameters(0.83, 0.02, 0.12, 0.163), Material())
    >>> d.round(4).tolist()
    [[0.12, 0.328], [0.24, 0.5122], [0.36, 0.6572]]
    """
    radius = check_radius(radius_um)
    n = check_cycles(n_cycles)
    shape = np.broadcast_shapes(
        radius.shape, *(np.shape(getattr(parameters, f)) for f in ("alpha0", "kappa0", "delta0"))
    )
    out = np.empty((n, *shape))
    for k, d in zip(range(n), iter_gaps(radius, parameters, material), strict=False):
        out[k] = d
    return out
