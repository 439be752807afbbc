"""What a fit leaves on disk and on screen: fit.json, bootstrap.parquet, figures.

File names and the ``fit.json`` layout follow DESIGN.md ("Tables").
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from debond.model import PARAMETER_NAMES, FitResult, Material, Parameters, sensitivity
from debond.model.diagnostics import diagnose, intervals
from debond.model.figures import plot_bootstrap, plot_gap_vs_radius, plot_sensitivity, save_figure
from debond.storage.tables import BOOTSTRAP_SCHEMA, usable_rows, write_table

LABELS = {
    "alpha0": ("α0", ""),
    "kappa0": ("κ0", "µm"),
    "delta0": ("δ0", "µm"),
    "zeta0": ("ζ0", "1/µm"),
}


def write_json(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(document, stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    os.replace(temporary, path)
    return path


#: Version of the fit.json layout: 2 added each parameter's 2.5–97.5 %
#: interval, its side (one-sided at a bound) and the fit's warnings; 3 added
#: ``bootstrap_method`` (the intervals of versions 1 and 2 are the
#: uncalibrated particle resample's: :func:`earlier_intervals_note`); 4 added
#: ``section_rows`` (how the 2D rows were fitted), ``blunders`` (the rows
#: left out of the fit) and ``caveats`` (what the intervals do not hold); 5
#: added ``surface`` (the surface-placement uncertainties the intervals hold,
#: :attr:`FitResult.surface`) and the bootstrap's ``surface_z_*`` columns.
FIT_JSON_VERSION = 5


def earlier_intervals_note(document: Mapping[str, Any]) -> str:
    """What a ``fit.json``'s intervals are worth when not the calibrated ones ('' if they are).

    A document of layout version 1 or 2 (no ``bootstrap_method``), or one
    fitted with ``method="particles"``, carries the particle resample's
    percentiles, which held the truth in 47–65 % of the data sets drawn from
    the model at 16–84 % (README, "Accuracy").

    Examples
    --------
    >>> earlier_intervals_note({"fit_json_version": 3, "bootstrap_method": "parametric"})
    ''
    >>> "layout version 2" in earlier_intervals_note({"fit_json_version": 2})
    True
    """
    if document.get("bootstrap_method") == "parametric":
        return ""
    version = document.get("fit_json_version", 1)
    return (
        f"This fit.json (layout version {version}; current: {FIT_JSON_VERSION}) carries the "
        "particle-resampling bootstrap's intervals, which held the truth in only 47–65 % of "
        "simulated data sets at 16–84 % (nominal 68 %): too narrow. Run debond fit again "
        "for calibrated intervals."
    )


def fit_document(result: FitResult, particles: pd.DataFrame | None = None) -> dict[str, Any]:
    """The ``fit.json`` document: :meth:`FitResult.summary` with intervals and warnings.

    Each parameter keeps ``value``, ``lower`` and ``upper`` (median, 16th and
    84th percentiles) and gains ``lower_95``, ``upper_95``, ``side``
    (``"two-sided"``, or ``"upper"``/``"lower"`` when its replicates sit on a
    bound and only that limit is meaningful) and ``bound``;
    ``warnings`` lists :func:`debond.model.diagnostics.diagnose`'s findings.
    """
    document = result.summary()
    document["fit_json_version"] = FIT_JSON_VERSION
    document["parameters"] = {n: iv.as_dict() for n, iv in intervals(result).items()}
    document["warnings"] = diagnose(result, particles)
    return document


def write_fit(
    result: FitResult,
    particles: pd.DataFrame,
    capacity: pd.DataFrame | None,
    tables: str | os.PathLike[str],
    figures: str | os.PathLike[str],
    *,
    truth: Parameters | None = None,
    sensitivity_cycles: int = 10,
    warnings: Sequence[Mapping[str, Any]] = (),
    caveats: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``fit.json``, ``bootstrap.parquet`` and the figures of a fit.

    Parameters
    ----------
    result : FitResult
    particles, capacity : DataFrame
        The fitted data (for the figures: the gap figure draws the rows the
        fit used, :func:`debond.storage.tables.usable_rows`).
    tables, figures : path
        Folders for the tables and for the figures (PNG and PDF).
    truth : Parameters, optional
        Known parameters (synthetic data): recorded in fit.json and drawn.
    sensitivity_cycles : int
        Cycles of the Fig. 4d curves.
    warnings : sequence of dict
        What the fit should say about its data (e.g. samples without rows,
        :func:`debond.analysis.table_warnings`), in the form of
        :func:`debond.model.diagnostics.diagnose`'s entries: added after them
        to ``fit.json``'s ``warnings``.
    caveats : sequence of str
        What the intervals do not hold, whatever the fit's health (e.g. a
        systematic error of image-derived gaps): ``fit.json``'s ``caveats``,
        shown beside the parameters in the report, not in its warning banner.

    Returns
    -------
    dict
        ``name -> path`` of every file written: ``fit``, ``bootstrap`` (the
        table) and ``<figure>_figure`` (PNG; the PDF lies beside it).
    """
    tables, figures = Path(tables), Path(figures)
    document = fit_document(result, particles)
    if truth is not None:
        document["truth"] = {n: float(getattr(truth, n)) for n in PARAMETER_NAMES}
    document["warnings"] = [*document["warnings"], *(dict(w) for w in warnings)]
    document["caveats"] = list(caveats)
    written = {
        "fit": write_json(document, tables / "fit.json"),
        "bootstrap": write_table(result.samples, tables / "bootstrap.parquet", BOOTSTRAP_SCHEMA),
    }
    best = median_parameters(result)
    population = capacity_classes(document, particles)
    curves = sensitivity(
        population[0], max(sensitivity_cycles, 2), best, result.material, counts=population[1]
    )
    gap_figure = plot_gap_vs_radius(
        particles[usable_rows(particles)], best, result.material, capacity, population=population
    )
    for name, figure in (
        ("gap_vs_radius", gap_figure),
        ("sensitivity", plot_sensitivity(curves)),
        ("bootstrap", plot_bootstrap(result.samples, truth)),
    ):
        png, _ = save_figure(figure, figures / name)
        written[f"{name}_figure"] = png
    return written


def capacity_classes(
    document: Mapping[str, Any], particles: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """The capacity term's population of a ``fit.json`` document: radii (µm) and counts.

    A document written before the population was recorded falls back to
    every row of the particle table, one particle each.
    """
    recorded = document.get("capacity_population", {})
    if "radius_um" in recorded and "count" in recorded:
        return np.asarray(recorded["radius_um"], float), np.asarray(recorded["count"], float)
    radius = particles["radius_um"].to_numpy(dtype=np.float64)
    return radius, np.ones(radius.size)


def median_parameters(result: FitResult) -> Parameters:
    """The bootstrap medians as :class:`Parameters` (the values the paper reports)."""
    return Parameters(*(result.parameters[n][0] for n in PARAMETER_NAMES))


def paper_rows(
    parameters: Mapping[str, tuple[float, float, float]], material: Material
) -> list[tuple[str, float, float, float, str]]:
    """The fitted parameters in the paper's form, with E/η in 1/h and the SEI rate in nm/h.

    Parameters
    ----------
    parameters : mapping
        Name (``alpha0`` …) → (median, 16th, 84th percentile).
    material : Material
        Its half-cycle duration T converts α0 = (E/η)·T and δ0 to rates.

    Returns
    -------
    list of (symbol, value, plus, minus, unit)
        ``plus`` = 84th − median, ``minus`` = median − 16th.
    """
    rows = []
    for name in PARAMETER_NAMES:
        value, low, high = parameters[name]
        symbol, unit = LABELS[name]
        rows.append((symbol, value, high - value, value - low, unit))
    for symbol, name, scale, unit in (
        ("E/η", "alpha0", 1.0, "1/h"),
        ("v_SEI", "delta0", 1000.0, "nm/h"),
    ):
        value, low, high = (scale * v / material.half_cycle_hours for v in parameters[name])
        rows.append((symbol, value, high - value, value - low, unit))
    return rows


def parameter_table(
    result: FitResult, truth: Parameters | None = None, particles: pd.DataFrame | None = None
) -> str:
    """The fitted parameters in the paper's form, value (+upper/−lower), as text.

    A parameter on a bound is given as a one-sided limit ("< 0.026 (84 %…)");
    the fit's warnings (:func:`debond.model.diagnostics.diagnose`, with the
    cycle groups of `particles` when given) follow the table.
    """
    lines = [
        f"{'parameter':<10} {'value (+84th/−16th percentile)':<34} {'unit':<6}"
        + (" true" if truth is not None else "")
    ]
    bounded = intervals(result)
    names = [*PARAMETER_NAMES, None, None]
    for name, (symbol, value, plus, minus, unit) in zip(
        names, paper_rows(result.parameters, result.material), strict=True
    ):
        cell = f"{value:.4g} (+{plus:.2g}/−{minus:.2g})"
        if name is not None and bounded[name].side != "two-sided":
            cell = bounded[name].text()
        row = f"{symbol:<10} {cell:<34} {unit:<6}"
        if truth is not None and name is not None:
            row += f" {float(getattr(truth, name)):.4g}"
        lines.append(row.rstrip())
    converged = float(result.samples["converged"].mean()) if len(result.samples) else float("nan")
    lines.append(f"{result.n_bootstrap} bootstrap replicates, {100 * converged:.1f} % converged")
    population = result.capacity_population
    if population:
        lines.append(
            f"capacity term: {population['source']}, {population['particles']:.0f} particles, "
            f"volume-weighted radius {population['volume_weighted_radius_um']:.3f} µm"
        )
    if sentence := surface_sentence(result.surface):
        lines.append(sentence)
    for warning in diagnose(result, particles):
        lines.append(f"WARNING: {warning['message']}")
    return "\n".join(lines)


def surface_sentence(surface: Mapping[str, Any]) -> str:
    """The surface-placement uncertainties a fit's intervals hold, in words ('' if none).

    Parameters
    ----------
    surface : mapping
        :attr:`FitResult.surface`, or ``fit.json``'s ``surface``.

    Examples
    --------
    >>> surface_sentence({"silicon": {"sd_um": {"a": 0.015, "b": 0.012}}})
    'Intervals hold the surface placement: silicon ±0.012–0.015 µm (1 SD, shared by a table)'
    >>> surface_sentence({})
    ''
    """
    parts = []
    for kind, name in (("silicon", "silicon"), ("cbd", "CBD")):
        values = list(surface.get(kind, {}).get("sd_um", {}).values())
        if values:
            low, high = min(values), max(values)
            span = f"{low:.2g}" if np.isclose(low, high) else f"{low:.2g}–{high:.2g}"
            parts.append(f"{name} ±{span} µm")
    if not parts:
        return ""
    return (
        "Intervals hold the surface placement: " + ", ".join(parts) + " (1 SD, shared by a table)"
    )
