"""What a fit's bootstrap says about itself: intervals at bounds and degenerate fits.

A parameter whose replicates pile up on a box bound has no two-sided
interval: "κ0 = 0 (+0/−0)" reads as an exact zero, where the data only say
"κ0 is below q". :func:`intervals` reports such a parameter one-sided,
with the bootstrap quantile that bounds it. :func:`diagnose` names the
other signs of a fit that should not be read as a result: residual scales
on their floors, replicates that did not converge, cycle groups with too
few usable particles, and parameters the data cannot tell apart.

Both read only the fit's outputs (:class:`debond.model.fitting.FitResult`)
and the particle table, so ``fit.json``, the console and the report say the
same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from debond.model.fitting import (
    LOWER,
    SIGMA_GAP_FLOOR_UM,
    SIGMA_RETENTION_FLOOR,
    UPPER,
    FitResult,
    statistical_samples,
)
from debond.model.parameters import PARAMETER_NAMES
from debond.storage.tables import usable_rows

__all__ = [
    "AT_BOUND_SHARE",
    "CORRELATION_LIMIT",
    "MIN_GROUP_PARTICLES",
    "UNCONVERGED_LIMIT",
    "Interval",
    "diagnose",
    "intervals",
]

#: A bound holds the parameter when at least this share of the replicates sit
#: on it (the 16th or 84th percentile is the bound itself).
AT_BOUND_SHARE = 0.16
#: Replicates that did not converge: a warning above this share.
UNCONVERGED_LIMIT = 0.05
#: A cycle group with fewer usable particles than this cannot pin its gaps.
MIN_GROUP_PARTICLES = 5
#: Two parameters whose replicates correlate beyond this (|Spearman ρ|) are
#: not separated by the data.
CORRELATION_LIMIT = 0.95


@dataclass(frozen=True)
class Interval:
    """A fitted parameter as the bootstrap gives it.

    Attributes
    ----------
    value : float
        Median of the replicates.
    lower, upper : float
        16th and 84th percentiles (the paper's ±).
    lower_95, upper_95 : float
        2.5th and 97.5th percentiles.
    side : {"two-sided", "upper", "lower"}
        ``"upper"``: the replicates sit on the lower bound, and only an upper
        limit (``upper``, 84 %) is meaningful; ``"lower"``: the converse.
    bound : float or None
        The bound the parameter sits on (None when two-sided).
    """

    value: float
    lower: float
    upper: float
    lower_95: float
    upper_95: float
    side: str = "two-sided"
    bound: float | None = None

    def text(self, digits: int = 4) -> str:
        """``0.125 (+0.0031/−0.0035)``, or ``< 0.026 (84 %)`` at a lower bound.

        Examples
        --------
        >>> Interval(0.0, 0.0, 0.026, 0.0, 0.04, "upper", 0.0).text()
        '< 0.026 (84 %; 97.5 %: < 0.04)'
        >>> Interval(0.12, 0.11, 0.13, 0.1, 0.14).text()
        '0.12 (+0.01/−0.01)'
        """
        if self.side != "two-sided" and self.lower_95 == self.upper_95 == self.bound:
            return f"on its bound {self.bound:g} in 97.5 % of the replicates (not determined)"
        if self.side == "upper":
            if self.upper == self.bound:  # 84 % of the replicates on the bound itself
                at = f"84 % of the replicates at {self.bound:g}"
                return f"< {self.upper_95:.{digits}g} (97.5 %; {at})"
            return f"< {self.upper:.{digits}g} (84 %; 97.5 %: < {self.upper_95:.{digits}g})"
        if self.side == "lower":
            if self.lower == self.bound:
                at = f"84 % of the replicates at {self.bound:g}"
                return f"> {self.lower_95:.{digits}g} (97.5 %; {at})"
            return f"> {self.lower:.{digits}g} (84 %; 97.5 %: > {self.lower_95:.{digits}g})"
        plus, minus = self.upper - self.value, self.value - self.lower
        return f"{self.value:.{digits}g} (+{plus:.2g}/−{minus:.2g})"

    def as_dict(self) -> dict[str, Any]:
        """The ``fit.json`` entry: value, lower, upper (as before), and the rest."""
        return {
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "lower_95": self.lower_95,
            "upper_95": self.upper_95,
            "side": self.side,
            "bound": self.bound,
        }


def _tolerance(i: int) -> float:
    """How close to a bound counts as on it: 1e-6 of the box, in the parameter's unit."""
    return 1e-6 * float(UPPER[i] - LOWER[i])


def intervals(result: FitResult) -> dict[str, Interval]:
    """Each parameter's interval, one-sided where its replicates sit on a bound.

    Parameters
    ----------
    result : FitResult

    Returns
    -------
    dict
        Parameter name → :class:`Interval`. Without replicates, the full-data
        estimate with a zero-width interval (and a side when it is on a bound).
    """
    out = {}
    for i, name in enumerate(PARAMETER_NAMES):
        if len(result.samples):
            values = result.samples[name].to_numpy(dtype=np.float64)
        else:
            values = np.array([float(getattr(result.estimate, name))])
        q = np.percentile(values, [50, 16, 84, 2.5, 97.5])
        tol = _tolerance(i)
        on_lower = np.mean(values <= LOWER[i] + tol) >= AT_BOUND_SHARE
        on_upper = np.mean(values >= UPPER[i] - tol) >= AT_BOUND_SHARE
        side, bound = "two-sided", None
        if on_lower and not on_upper:
            side, bound = "upper", float(LOWER[i])
        elif on_upper and not on_lower:
            side, bound = "lower", float(UPPER[i])
        value, lower, upper, lower_95, upper_95 = (float(v) for v in q)
        out[name] = Interval(value, lower, upper, lower_95, upper_95, side, bound)
    return out


def _group_counts(particles: pd.DataFrame) -> dict[int, int]:
    """Usable cycled particles per cycle group (the rows the fit reads)."""
    usable = particles[usable_rows(particles)]
    usable = usable[np.isfinite(usable["gap_mean_um"]) & (usable["cycles"] > 0)]
    return {int(c): int(n) for c, n in usable.groupby("cycles").size().items()}


def diagnose(result: FitResult, particles: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Why a fit should not be read as a result, one entry per cause (empty: none found).

    Parameters
    ----------
    result : FitResult
    particles : DataFrame, optional
        The particle table the fit read: its cycle groups are counted.

    Returns
    -------
    list of dict
        ``cause`` (``"at_bound"``, ``"scale_on_floor"``, ``"not_converged"``,
        ``"few_particles"``, ``"inseparable"``, ``"blunders"``), ``message``
        (one line, with the number behind it) and ``value``.
    """
    found: list[dict[str, Any]] = []

    def warn(cause: str, message: str, value: Any) -> None:
        found.append({"cause": cause, "message": message, "value": value})

    for name, interval in intervals(result).items():
        if interval.side != "two-sided":
            share = _share_on_bound(result, name, interval.bound)
            warn(
                "at_bound",
                f"{name} sits on its bound {interval.bound:g} in {100 * share:.0f} % of the "
                f"replicates: only a one-sided limit is reported ({name} {interval.text(3)})",
                share,
            )
    floors = [
        s for s, sigma in result.sigma_gap_um.items() if sigma <= SIGMA_GAP_FLOOR_UM * (1 + 1e-9)
    ]
    if floors and len(floors) == len(result.sigma_gap_um):
        # One group on its floor only says the model's own spread explains its
        # gaps; every group there is the mark of a fit that claims to explain
        # every gap exactly.
        warn(
            "scale_on_floor",
            f"every cycle group's gap residual scale is on its floor ({SIGMA_GAP_FLOOR_UM:g} "
            "µm): the fit claims to explain each gap exactly, and its intervals are too narrow",
            len(floors),
        )
    if result.sigma_retention is not None and result.sigma_retention <= SIGMA_RETENTION_FLOOR * (
        1 + 1e-9
    ):
        warn(
            "scale_on_floor",
            f"the capacity residual scale is on its floor ({SIGMA_RETENTION_FLOOR:g})",
            result.sigma_retention,
        )
    if len(result.samples):
        unconverged = 1.0 - float(result.samples["converged"].mean())
        if unconverged > UNCONVERGED_LIMIT:
            warn(
                "not_converged",
                f"{100 * unconverged:.1f} % of the {len(result.samples)} replicates did not "
                f"converge (more than {100 * UNCONVERGED_LIMIT:g} %)",
                unconverged,
            )
        # Judged on the replicates as solved: the surfaces' placement moves every
        # parameter at once along two lines, a correlation of the systematic error
        # that the data, however many, would not remove.
        for (a, b), rho in _strong_correlations(statistical_samples(result)).items():
            warn(
                "inseparable",
                f"{a} and {b} move together across the replicates (Spearman ρ = {rho:+.2f}): "
                "the data do not separate them",
                rho,
            )
    if result.blunders:
        named = ", ".join(
            f"{b['sample']}/{b['particle']} ({b['gap_um']:.2f} µm)" for b in result.blunders[:5]
        )
        more = f" and {len(result.blunders) - 5} more" if len(result.blunders) > 5 else ""
        warn(
            "blunders",
            f"{len(result.blunders)} particle(s) hold gaps the model cannot give at the "
            f"fitted noise and were left out of the fit as blunders: {named}{more} "
            "(fit.json 'blunders'; look at them in the quality figures)",
            len(result.blunders),
        )
    if particles is not None:
        for cycles, n in sorted(_group_counts(particles).items()):
            if n < MIN_GROUP_PARTICLES:
                warn(
                    "few_particles",
                    f"the {cycles}-cycle group has {n} usable particle(s) (fewer than "
                    f"{MIN_GROUP_PARTICLES})",
                    n,
                )
    return found


def _share_on_bound(result: FitResult, name: str, bound: float | None) -> float:
    if bound is None or not len(result.samples):
        return 0.0
    i = PARAMETER_NAMES.index(name)
    values = result.samples[name].to_numpy(dtype=np.float64)
    return float(np.mean(np.abs(values - bound) <= _tolerance(i)))


def _strong_correlations(samples: pd.DataFrame) -> Mapping[tuple[str, str], float]:
    """Parameter pairs whose replicates correlate beyond :data:`CORRELATION_LIMIT`."""
    values = samples[list(PARAMETER_NAMES)]
    varying = [n for n in PARAMETER_NAMES if values[n].nunique() > 2]
    if len(varying) < 2:
        return {}
    rho = values[varying].corr(method="spearman").to_numpy(dtype=np.float64)
    return {
        (a, b): float(rho[i, j])
        for i, a in enumerate(varying)
        for j, b in enumerate(varying)
        if j > i and abs(rho[i, j]) > CORRELATION_LIMIT
    }
