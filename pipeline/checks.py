"""Checks of the numbers the stages take, with errors that name the argument and its unit."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["positive"]


def positive(value: Any, name: str, unit: str, *, allow_zero: bool = False) -> float:
    """`value` as a finite float above 0 (or at least 0 with `allow_zero`).

    Raises
    ------
    ValueError
        Naming the argument, the bound, the unit and what was given.

    Examples
    --------
    >>> positive(0.06, "voxel_size_um", "µm")
    0.06
    >>> positive("x", "voxel_size_um", "µm")
    Traceback (most recent call last):
    ...
    ValueError: voxel_size_um must be a finite number > 0 (µm); got 'x'
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (
        math.isfinite(number) and (number >= 0 if allow_zero else number > 0)
    ):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound} ({unit}); got {value!r}")
    return number
