"""The detachment model: mechanics, disconnection, capacity fade and fitting.

Implements ``MODEL.md``: a 1D Maxwell model of the carbon black-binder domain
around a silicon particle, a per-cycle disconnection probability p = ζ0·d,
the silicon capacity retention it implies, and a bootstrap fit of α0, κ0, δ0
and ζ0 that runs all replicates as one batched computation.

Examples
--------
>>> from debond.model import Parameters, Material, gaps, capacity_retention
>>> p = Parameters(alpha0=0.83, kappa0=0.02, delta0=0.12, zeta0=0.163)
>>> gaps([0.2, 1.0], 3, p, Material())[-1].round(4).tolist()
[0.36, 0.6572]
"""

from debond.model.cycling import Recipe, read_cycling, silicon_retention
from debond.model.disconnection import capacity_retention, gap_distribution, imaged_statistics
from debond.model.fitting import FitResult, SizePopulation, check_capacity, fit
from debond.model.mechanics import gaps, iter_gaps
from debond.model.parameters import (
    PAPER_PARAMETERS,
    PARAMETER_NAMES,
    PARAMETER_UNITS,
    Material,
    Parameters,
)
from debond.model.sensitivity import scenarios, sensitivity

__all__ = [
    "PAPER_PARAMETERS",
    "PARAMETER_NAMES",
    "PARAMETER_UNITS",
    "FitResult",
    "Material",
    "Parameters",
    "Recipe",
    "SizePopulation",
    "capacity_retention",
    "check_capacity",
    "fit",
    "gap_distribution",
    "gaps",
    "imaged_statistics",
    "iter_gaps",
    "read_cycling",
    "scenarios",
    "sensitivity",
    "silicon_retention",
]
