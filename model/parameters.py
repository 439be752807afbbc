"""Model parameters and material constants of the detachment model.

Both hold plain floats or NumPy arrays: a leading axis of parameter sets
(bootstrap replicates, a sensitivity scan) broadcasts through every model
function.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: The four fitted parameters, in the order used by arrays of parameter sets.
PARAMETER_NAMES: tuple[str, ...] = ("alpha0", "kappa0", "delta0", "zeta0")

#: Units of the fitted parameters, for tables and figures.
PARAMETER_UNITS: dict[str, str] = {
    "alpha0": "",
    "kappa0": "µm",
    "delta0": "µm",
    "zeta0": "1/µm",
}


def _as_float_array(name: str, value: ArrayLike) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} must be finite; got {array[bad].ravel()[0]!r}")
    return array


def _first(array: FloatArray, mask: NDArray[np.bool_]) -> float:
    return float(np.asarray(array)[mask].ravel()[0])


@dataclass(frozen=True)
class Parameters:
    """The four parameters of the detachment model (MODEL.md, "Quantities").

    Each field is a float or an array; arrays broadcast against each other and
    against the radii given to the model functions, so a shape ``(B, 1)`` with
    radii of shape ``(N,)`` evaluates ``B`` parameter sets at ``N`` radii.

    Parameters
    ----------
    alpha0 : float or array
        Maxwell relaxation per half-cycle, (E/η)·T, dimensionless; > 0.
    kappa0 : float or array
        Adhesion: the largest tensile spring displacement the binder bond
        holds, in µm; ≥ 0.
    delta0 : float or array
        SEI thickness grown per lithiation half-cycle, in µm; ≥ 0.
    zeta0 : float or array
        Slope of the per-cycle disconnection probability p(d) = ζ0·d, in 1/µm;
        ≥ 0.

    Raises
    ------
    ValueError
        If a value is not finite, α0 is not positive or another parameter is
        negative; the message names the parameter and the offending value.

    Examples
    --------
    >>> p = Parameters(alpha0=0.83, kappa0=0.02, delta0=0.12, zeta0=0.163)
    >>> round(p.sei_rate_nm_per_h(20.0), 3)
    6.0
    """

    alpha0: Any
    kappa0: Any
    delta0: Any
    zeta0: Any

    def __post_init__(self) -> None:
        for field in fields(self):
            array = _as_float_array(field.name, getattr(self, field.name))
            lowest = 0.0
            if field.name == "alpha0":
                bad = array <= lowest
                need = "> 0"
            else:
                bad = array < lowest
                need = ">= 0"
            if bad.any():
                raise ValueError(
                    f"parameter {field.name} must be {need}; got {_first(array, bad)!r}"
                )
            object.__setattr__(self, field.name, array if array.ndim else float(array))

    def as_array(self) -> FloatArray:
        """Stack the parameters on a trailing axis, shape ``(..., 4)``."""
        arrays = np.broadcast_arrays(*(np.asarray(getattr(self, n)) for n in PARAMETER_NAMES))
        return np.stack(arrays, axis=-1).astype(np.float64)

    @classmethod
    def from_array(cls, theta: ArrayLike) -> Parameters:
        """Build parameters from an array whose trailing axis holds α0, κ0, δ0, ζ0."""
        values = np.asarray(theta, dtype=np.float64)
        if values.shape[-1:] != (len(PARAMETER_NAMES),):
            raise ValueError(
                f"parameter array must end in an axis of length {len(PARAMETER_NAMES)} "
                f"({', '.join(PARAMETER_NAMES)}); got shape {values.shape}"
            )
        return cls(*(values[..., i] for i in range(len(PARAMETER_NAMES))))

    def replace(self, **changes: Any) -> Parameters:
        """A copy with some parameters changed."""
        current = {n: getattr(self, n) for n in PARAMETER_NAMES}
        current.update(changes)
        return Parameters(**current)

    def elastic_over_viscous_per_h(self, half_cycle_hours: float) -> Any:
        """E/η in 1/h: α0 divided by the half-cycle duration."""
        return self.alpha0 / half_cycle_hours

    def sei_rate_nm_per_h(self, half_cycle_hours: float) -> Any:
        """SEI growth rate v_SEI in nm/h: δ0 (µm) divided by the half-cycle duration."""
        return 1000.0 * self.delta0 / half_cycle_hours


#: The paper's fitted values (MODEL.md, "Quantities").
PAPER_PARAMETERS = Parameters(alpha0=0.83, kappa0=0.02, delta0=0.12, zeta0=0.163)


@dataclass(frozen=True)
class Material:
    """Material constants of the silicon and the cycling protocol.

    Parameters
    ----------
    volumetric_expansion : float
        Silicon ΔV/V at full lithiation (2.8 for 280 %); > 0.
    half_cycle_hours : float
        Duration T of one half-cycle in hours (C/20 → 20 h); > 0.

    Examples
    --------
    >>> round(Material(volumetric_expansion=2.8, half_cycle_hours=20).strain, 5)
    0.56049
    """

    volumetric_expansion: float = 2.8
    half_cycle_hours: float = 20.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = float(getattr(self, field.name))
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"material {field.name} must be finite and > 0; got {value!r}")
            object.__setattr__(self, field.name, value)

    @property
    def strain(self) -> float:
        """Linear strain ε = (1 + ΔV/V)^(1/3) − 1 of silicon at full lithiation."""
        return float((1.0 + self.volumetric_expansion) ** (1.0 / 3.0) - 1.0)
