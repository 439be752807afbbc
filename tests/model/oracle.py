"""Time-stepping oracle for the mechanics of one particle (MODEL.md).

Written from MODEL.md's statement of the ODE, not from the closed form in
``debond.model.mechanics``: the damper position u_d and the SEI thickness s
are integrated numerically over each half-cycle with
:func:`scipy.integrate.solve_ivp`, and the switches between the attached and
the detached state are located as integration events.

- SEI: ds/dτ = δ0 during lithiation, 0 during delithiation.
- Particle surface: x_p = s + ε·r·λ, λ = τ (lithiation) or 1 − τ (delithiation).
- Attached: x_e = x_p, du_d/dτ = α0·(x_p − u_d).
- Detached: x_e = u_d, du_d/dτ = 0.
- Attached → detached when e = x_p − u_d falls to −κ0 (only while shrinking).
- Detached → attached when x_p reaches u_d (only while expanding).
- Gap at the end of a cycle (λ = 0): x_e, i.e. s when attached, u_d when detached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import solve_ivp

RTOL = 1e-10
ATOL = 1e-12


@dataclass
class OracleRun:
    """Result of :func:`integrate`: gaps and the switches seen on the way."""

    gaps: np.ndarray
    #: attached at the end of each cycle (λ = 0)
    attached: list[bool] = field(default_factory=list)
    #: τ-located switches as (cycle, "detach" or "contact", τ)
    switches: list[tuple[int, str, float]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """Number of switches of one kind ("detach" or "contact")."""
        return sum(1 for _, what, _ in self.switches if what == kind)


def _surface(tau: float, sei: float, stroke: float, lithiation: bool) -> float:
    """x_p = s + ε·r·λ."""
    fraction = tau if lithiation else 1.0 - tau
    return sei + stroke * fraction


def _half_cycle(
    damper: float,
    sei: float,
    attached: bool,
    *,
    lithiation: bool,
    stroke: float,
    alpha0: float,
    kappa0: float,
    delta0: float,
    log: list[tuple[str, float]],
) -> tuple[float, float, bool]:
    """Integrate one half-cycle τ ∈ [0, 1]; return (u_d, s, attached) at τ = 1.

    Every switch is appended to ``log`` as ("detach" or "contact", τ).
    """
    sei_rate = delta0 if lithiation else 0.0
    tau = 0.0
    y = np.array([damper, sei], dtype=np.float64)
    switches = 0
    while tau < 1.0:
        # Contact needs no adhesion: an expanding particle at or past u_d is attached.
        if lithiation and not attached and _surface(tau, y[1], stroke, True) >= y[0]:
            attached = True
            log.append(("contact", tau))
        # Tension at or beyond adhesion at the start of a shrinking phase.
        if not lithiation and attached and _surface(tau, y[1], stroke, False) - y[0] < -kappa0:
            attached = False
            log.append(("detach", tau))

        def rhs(t: float, state: np.ndarray, attached: bool = attached) -> list[float]:
            u_d, s = state
            if attached:
                x_p = _surface(t, s, stroke, lithiation)
                return [alpha0 * (x_p - u_d), sei_rate]
            return [0.0, sei_rate]

        # The one switch possible in this phase, as a terminal event.
        events: list[Callable[[float, np.ndarray], float]] | None = None
        if lithiation and not attached:

            def contact(t: float, state: np.ndarray) -> float:
                return _surface(t, state[1], stroke, True) - state[0]

            contact.terminal = True  # type: ignore[attr-defined]
            contact.direction = 1.0  # type: ignore[attr-defined]
            events = [contact]
        elif not lithiation and attached:

            def detach(t: float, state: np.ndarray) -> float:
                return _surface(t, state[1], stroke, False) - state[0] + kappa0

            detach.terminal = True  # type: ignore[attr-defined]
            detach.direction = -1.0  # type: ignore[attr-defined]
            events = [detach]

        solution = solve_ivp(
            rhs,
            (tau, 1.0),
            y,
            method="DOP853",
            rtol=RTOL,
            atol=ATOL,
            events=events,
        )
        if not solution.success:  # pragma: no cover - a broken oracle must be loud
            raise RuntimeError(solution.message)
        if events is not None and solution.t_events[0].size:
            tau = float(solution.t_events[0][0])
            y = np.asarray(solution.y_events[0][0], dtype=np.float64)
            if lithiation:
                attached = True
                # At contact the environment's boundary is where the surface is.
                y[0] = _surface(tau, y[1], stroke, True)
                log.append(("contact", tau))
            else:
                attached = False
                # At detachment e = −κ0 exactly: u_d = x_p + κ0.
                y[0] = _surface(tau, y[1], stroke, False) + kappa0
                log.append(("detach", tau))
            switches += 1
            if switches > 4:  # pragma: no cover - at most one switch per half-cycle
                raise RuntimeError("oracle: too many state switches in one half-cycle")
        else:
            tau = 1.0
            y = np.asarray(solution.y[:, -1], dtype=np.float64)
    return float(y[0]), float(y[1]), attached


def integrate(
    radius_um: float,
    n_cycles: int,
    *,
    alpha0: float,
    kappa0: float,
    delta0: float,
    strain: float,
) -> OracleRun:
    """Integrate MODEL.md's ODE for one particle over n cycles.

    The particle starts pristine and attached with a relaxed spring: s = 0,
    u_d = 0 (x_p = 0 at λ = 0).
    """
    stroke = strain * radius_um
    damper, sei, attached = 0.0, 0.0, True
    run = OracleRun(gaps=np.empty(n_cycles))
    for k in range(n_cycles):
        log: list[tuple[str, float]] = []
        for lithiation in (True, False):
            damper, sei, attached = _half_cycle(
                damper,
                sei,
                attached,
                lithiation=lithiation,
                stroke=stroke,
                alpha0=alpha0,
                kappa0=kappa0,
                delta0=delta0,
                log=log,
            )
        # λ = 0: x_e = x_p = s when attached, u_d when detached.
        run.gaps[k] = sei if attached else damper
        run.attached.append(attached)
        run.switches.extend((k + 1, what, tau) for what, tau in log)
    return run


def oracle_gaps(
    radius_um: float,
    n_cycles: int,
    *,
    alpha0: float,
    kappa0: float,
    delta0: float,
    strain: float,
) -> np.ndarray:
    """Gaps d_1 … d_n (µm) of one particle, by numerical integration of MODEL.md's ODE."""
    return integrate(
        radius_um, n_cycles, alpha0=alpha0, kappa0=kappa0, delta0=delta0, strain=strain
    ).gaps
