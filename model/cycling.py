"""Silicon capacity retention from the charge capacity of a cycled electrode.

Graphite-only electrodes do not fade (the paper, Supplementary Note 1), so the
silicon part of the charge capacity of cycle n is the total minus the graphite
part, m·w_graphite·q_graphite, and its retention is that divided by its value
in cycle 1 (MODEL.md, "Silicon capacity from cycling data").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

#: Columns of a cycling CSV.
CYCLING_COLUMNS = ("cycle", "charge_capacity_mAh")


@dataclass(frozen=True)
class Recipe:
    """Electrode recipe: mass fractions and specific capacities.

    Defaults are the paper's electrode: 15 wt.% SiOx (2275 mAh/g), 70 wt.%
    graphite (372 mAh/g), the rest PVDF binder and carbon black.

    Parameters
    ----------
    silicon_fraction : float
        Mass fraction of the silicon (SiOx) active material, in (0, 1].
    silicon_capacity_mAh_per_g : float
        Specific capacity of the silicon material, mAh/g.
    graphite_fraction : float
        Mass fraction of graphite, in [0, 1).
    graphite_capacity_mAh_per_g : float
        Specific capacity of graphite, mAh/g.
    """

    silicon_fraction: float = 0.15
    silicon_capacity_mAh_per_g: float = 2275.0
    graphite_fraction: float = 0.70
    graphite_capacity_mAh_per_g: float = 372.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = float(getattr(self, field.name))
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"recipe {field.name} must be finite and >= 0; got {value!r}")
        if not 0 < self.silicon_fraction <= 1:
            raise ValueError(
                f"recipe silicon_fraction must be in (0, 1]; got {self.silicon_fraction!r}"
            )
        if self.silicon_fraction + self.graphite_fraction > 1:
            raise ValueError(
                "recipe silicon_fraction + graphite_fraction must not exceed 1; got "
                f"{self.silicon_fraction} + {self.graphite_fraction}"
            )

    def graphite_capacity_mAh(self, electrode_mass_mg: float) -> float:
        """Charge capacity of the graphite in an electrode of this mass, mAh."""
        return electrode_mass_mg * 1e-3 * self.graphite_fraction * self.graphite_capacity_mAh_per_g

    def silicon_capacity_mAh(self, electrode_mass_mg: float) -> float:
        """Theoretical charge capacity of the silicon in an electrode of this mass, mAh."""
        return electrode_mass_mg * 1e-3 * self.silicon_fraction * self.silicon_capacity_mAh_per_g


def read_cycling(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a cycling CSV with columns ``cycle`` and ``charge_capacity_mAh``.

    Parameters
    ----------
    path : path
        CSV file; other columns are ignored.

    Returns
    -------
    DataFrame
        ``cycle`` (int, from 1, increasing) and ``charge_capacity_mAh`` (float).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file, the column and the offending value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cycling data {path} does not exist")
    table = pd.read_csv(path)
    return check_cycling(table, source=str(path))


def check_cycle_series(
    table: pd.DataFrame, column: str, source: str, unit: str = ""
) -> pd.DataFrame:
    """Validate a per-cycle series: ``cycle`` (integers from 1, increasing) and ``column``.

    Parameters
    ----------
    table : DataFrame
    column : str
        The value column; its values must be finite and ≥ 0.
    source : str
        Where the table came from (a file name), used in error messages.
    unit : str
        Unit of the values, for messages.

    Returns
    -------
    DataFrame
        ``cycle`` (int64) and ``column`` (float64), other columns dropped.

    Raises
    ------
    ValueError
        Naming the source, the column and the offending value: missing
        columns, no rows, cycles that are not integers, do not start at 1 or do
        not increase, negative or non-finite values.
    """
    for name in ("cycle", column):
        if name not in table.columns:
            raise ValueError(
                f"{source}: missing column {name!r}; expected columns cycle, {column} "
                f"(have {', '.join(map(str, table.columns))})"
            )
    if len(table) == 0:
        raise ValueError(f"{source}: the series is empty; no rows")
    cycle = pd.to_numeric(table["cycle"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(cycle) | (cycle != np.round(cycle))
    if bad.any():
        raise ValueError(
            f"{source}: column 'cycle' must hold integers; got {table['cycle'][bad].iloc[0]!r}"
        )
    if cycle[0] != 1:
        raise ValueError(
            f"{source}: column 'cycle' must start at cycle 1 (values are relative to cycle 1); "
            f"got {int(cycle[0])}"
        )
    if (np.diff(cycle) <= 0).any():
        row = int(np.flatnonzero(np.diff(cycle) <= 0)[0]) + 1
        raise ValueError(f"{source}: column 'cycle' must increase; row {row} has {int(cycle[row])}")
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise ValueError(
            f"{source}: column {column!r} must be finite and >= 0{' ' + unit if unit else ''}; "
            f"got {table[column][bad].iloc[0]!r}"
        )
    return pd.DataFrame({"cycle": cycle.astype(np.int64), column: values})


def check_cycling(table: pd.DataFrame, source: str = "cycling data") -> pd.DataFrame:
    """Validate a cycling table; see :func:`read_cycling`."""
    return check_cycle_series(table, "charge_capacity_mAh", source, "mAh")


def silicon_retention(
    cycling: pd.DataFrame, electrode_mass_mg: float, recipe: Recipe | None = None
) -> pd.DataFrame:
    """Silicon capacity retention per cycle, relative to cycle 1.

    Parameters
    ----------
    cycling : DataFrame
        ``cycle`` and ``charge_capacity_mAh`` (see :func:`read_cycling`).
    electrode_mass_mg : float
        Mass of the electrode coating (active materials, binder, carbon), mg.
    recipe : Recipe, optional
        Default: the paper's recipe.

    Returns
    -------
    DataFrame
        ``cycle``, ``silicon_capacity_mAh`` and ``retention`` (the ``capacity``
        frame of :func:`debond.model.fit`).

    Raises
    ------
    ValueError
        If the mass is not positive, or the silicon part of cycle 1 is not
        positive (the graphite alone accounts for the measured capacity: wrong
        mass or recipe).

    Examples
    --------
    >>> import pandas as pd
    >>> cycling = pd.DataFrame({"cycle": [1, 2], "charge_capacity_mAh": [1.2, 1.0]})
    >>> silicon_retention(cycling, electrode_mass_mg=2.0)["retention"].round(3).tolist()
    [1.0, 0.706]
    """
    recipe = recipe or Recipe()
    if not (np.isfinite(electrode_mass_mg) and electrode_mass_mg > 0):
        raise ValueError(f"electrode_mass_mg must be finite and > 0 mg; got {electrode_mass_mg!r}")
    table = check_cycling(cycling)
    silicon = table["charge_capacity_mAh"].to_numpy() - recipe.graphite_capacity_mAh(
        electrode_mass_mg
    )
    if silicon[0] <= 0:
        raise ValueError(
            f"the silicon part of cycle 1 is {silicon[0]:.4g} mAh (charge "
            f"{table['charge_capacity_mAh'].iloc[0]:.4g} mAh minus graphite "
            f"{recipe.graphite_capacity_mAh(electrode_mass_mg):.4g} mAh): "
            "check electrode_mass_mg and the recipe"
        )
    return pd.DataFrame(
        {
            "cycle": table["cycle"],
            "silicon_capacity_mAh": silicon,
            "retention": np.clip(silicon, 0.0, None) / silicon[0],
        }
    )
