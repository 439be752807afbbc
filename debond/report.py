"""``debond report``: one self-contained HTML page of a campaign, and its figures.

The page (``report.html`` beside the campaign file) embeds every figure as a
PNG data URI, so it can be mailed or archived as one file. Each figure in
``figures/`` (PNG and PDF) is written by one command: ``slices`` and ``sizes``
here, the fit's three by ``debond fit`` (:func:`debond.outputs.write_fit`),
which the page embeds as they are. Both commands read the fitted data through
:func:`debond.analysis.fit_inputs`.

- ``slices``: a z-slice of every sample, the reconstruction beside its phases
  (the paper's Fig. 2a/3);
- ``gap_vs_radius``: gaps against radius per cycle group, 3D and 2D-converted
  data, the model's mean ± sd, capacity retention data against the model in
  the inset (Fig. 4a);
- ``sensitivity``: silicon capacity when α0, κ0 or δ0 improve (Fig. 4d);
- ``bootstrap``: the bootstrap distributions;
- ``sizes``: the particle sizes by silicon volume, the 3D particles' beside
  the capacity term's population (the SEM sections' unfolded sizes);

with the parameter table in the paper's form (value +upper/−lower, E/η in
1/h, the SEI growth rate in nm/h) and a summary of every sample.

An "Image quality" section follows, one block per sample, its figures in
``figures/quality/<id>/`` (PNG only: diagnostics, three per sample):

- ``histogram``: the reconstruction's grey levels inside the sample mask (a
  Dask reduction, :func:`grey_histogram`), with the thresholds and phase
  levels the segmentation recorded (:func:`plot_grey_histogram`);
- ``slices``: z, y and x planes through the largest particle the fit uses
  (else the largest measured one, else the middle), read plane by plane from
  the store, the phases over the attenuation (:func:`read_orthoslices`,
  :func:`plot_orthoslices`);
- ``sizes``: the 3D particles' equivalent radii and the size prior
  (:func:`plot_particle_radii`);

and a table of the measured and flagged particles (:func:`flag_counts`) with a
warning when most are flagged or none is measured (:func:`flag_warning`).

Before any fit the page is image-only: the samples and the image quality,
with a line that says to run ``debond fit``. Without phases for any sample
(nothing run yet) there is nothing to show and :class:`ReportError` says to
run ``debond run``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from debond.analysis import fit_inputs
from debond.campaign import Campaign, Sample
from debond.model import PARAMETER_NAMES, Parameters
from debond.model.figures import save_figure
from debond.outputs import capacity_classes, earlier_intervals_note, paper_rows, surface_sentence
from debond.pipeline.segment import PHASE_NAMES
from debond.storage import IncompleteArray, find_array, open_store, open_volume
from debond.storage.tables import (
    BOOTSTRAP_SCHEMA,
    NOT_MEASURED,
    PARTICLES_SCHEMA,
    read_table,
    usable_rows,
)

__all__ = [
    "PHASE_COLOURS",
    "QUALITY_FLAGS",
    "Orthoslices",
    "ReportError",
    "fit_banner",
    "flag_counts",
    "flag_warning",
    "grey_histogram",
    "plot_grey_histogram",
    "plot_orthoslices",
    "plot_particle_radii",
    "plot_sizes",
    "plot_slices",
    "read_orthoslices",
    "write_report",
]

#: Overlay colour of each phase code (pore transparent).
PHASE_COLOURS = {
    1: (0.60, 0.25, 0.75, 0.55),  # graphite
    2: (0.95, 0.55, 0.10, 0.65),  # CBD
    3: (0.15, 0.45, 0.95, 0.65),  # silicon
    4: (0.20, 0.80, 0.30, 0.65),  # SEI
}


class ReportError(ValueError):
    """A campaign that cannot be reported yet; the message says which step is missing."""


@dataclass(frozen=True)
class _Fit:
    parameters: dict[str, tuple[float, float, float]]
    bootstrap: int
    samples: pd.DataFrame
    truth: Parameters | None
    document: dict[str, Any]


def _read_fit(campaign: Campaign) -> _Fit:
    path = campaign.tables_dir / "fit.json"
    if not path.is_file():
        raise ReportError(f"{path} does not exist; run `debond fit {campaign.path}` first")
    document = json.loads(path.read_text())
    parameters = {
        name: (
            float(document["parameters"][name]["value"]),
            float(document["parameters"][name]["lower"]),
            float(document["parameters"][name]["upper"]),
        )
        for name in PARAMETER_NAMES
    }
    truth = None
    if "truth" in document:
        truth = Parameters(*(float(document["truth"][n]) for n in PARAMETER_NAMES))
    samples = read_table(campaign.tables_dir / "bootstrap.parquet", BOOTSTRAP_SCHEMA)
    return _Fit(parameters, int(document["bootstrap"]), samples, truth, document)


def _phase_legend(figure: Figure) -> None:
    """The phases' overlay colours, one row below the panels."""
    figure.legend(
        [Patch(color=PHASE_COLOURS[c]) for c in range(1, 5)],
        [PHASE_NAMES[c] for c in range(1, 5)],
        loc="outside lower center",
        ncols=4,
        fontsize=8,
        frameon=False,
    )


def plot_slices(campaign: Campaign) -> Figure:
    """A mid-height z-slice of every sample: attenuation, and the phases over it.

    Samples without a reconstruction (their own segmentation) show the phases
    alone; samples without phases are left out.
    """
    group = open_store(campaign.store_location, mode="r")
    shown = [s for s in campaign.samples if find_array(group, s.id, "phases") is not None]
    if not shown:
        raise ReportError(f"no sample of {campaign.path} has phases; run `debond run` first")
    figure = Figure(figsize=(6.0, 3.0 * len(shown)), layout="constrained")
    axes = figure.subplots(len(shown), 2, squeeze=False)
    colours = ListedColormap([(0, 0, 0, 0), *(PHASE_COLOURS[c] for c in range(1, 5))])
    for row, sample in zip(axes, shown, strict=True):
        phases = open_volume(group, sample.id, "phases")
        z = phases.sizes["z"] // 2
        slice_phases = phases.isel(z=z).values
        extent = (0.0, float(phases.x[-1]), float(phases.y[-1]), 0.0)
        grey = None
        if find_array(group, sample.id, "recon") is not None:
            grey = open_volume(group, sample.id, "recon").isel(z=z).values
        left, right = row
        if grey is not None:
            low, high = np.percentile(grey, [1, 99.5])
            for ax in row:
                ax.imshow(grey, cmap="gray", vmin=low, vmax=high, extent=extent)
            left.set_title(f"{sample.id} ({_cycles(sample)}): attenuation", fontsize=9)
        else:
            left.imshow(slice_phases, cmap="gray", extent=extent)
            left.set_title(f"{sample.id} ({_cycles(sample)}): segmentation", fontsize=9)
        right.imshow(slice_phases, cmap=colours, vmin=0, vmax=4, extent=extent)
        right.set_title(f"phases at z = {float(phases.z[z]):.2f} µm", fontsize=9)
        for ax in row:
            ax.set_xlabel("x (µm)", fontsize=8)
            ax.set_ylabel("y (µm)", fontsize=8)
            ax.tick_params(labelsize=7)
    _phase_legend(figure)
    return figure


def plot_sizes(
    particles: pd.DataFrame, population: tuple[np.ndarray, np.ndarray], source: str
) -> Figure:
    """Particle radii weighted by silicon volume: the 3D particles and the capacity term's.

    Parameters
    ----------
    particles : DataFrame
        The particle table (its usable 3D rows are drawn).
    population : (radius_um, count)
        The capacity term's population (:func:`debond.outputs.capacity_classes`).
    source : str
        What that population is, for the legend.
    """
    radius, count = population
    usable = usable_rows(particles) & (particles["modality"] == "3d").to_numpy()
    three_d = particles.loc[usable, "radius_um"].to_numpy(dtype=np.float64)
    top = max(float(radius.max()), float(three_d.max()) if three_d.size else 0.0)
    edges = np.linspace(0.0, 1.05 * top, 25)
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = figure.add_subplot()
    drawn = [
        (three_d, np.ones(three_d.size), f"3D particles ({three_d.size})", "tab:blue"),
        (radius, count, f"capacity term: {source} ({count.sum():.0f})", "black"),
    ]
    for radii, number, label, colour in drawn:
        if not radii.size:
            continue
        volume = number * radii**3
        mean = float((volume * radii).sum() / volume.sum())
        ax.hist(
            radii,
            edges.tolist(),
            weights=volume,
            density=True,
            histtype="step",
            linewidth=1.6,
            color=colour,
            label=f"{label}; Σr⁴/Σr³ = {mean:.2f} µm",
        )
        ax.axvline(mean, color=colour, linestyle=":", linewidth=1.0)
    ax.set_xlabel("particle radius R (µm)")
    ax.set_ylabel("share of silicon volume (1/µm)")
    ax.set_title("Particle sizes by silicon volume, the capacity term's weighting", fontsize=10)
    figure.legend(loc="outside lower center", fontsize=8, frameon=False)
    return figure


# ----------------------------------------------------------------- image quality

#: The per-sample flags of the image-quality table: column → what it says.
QUALITY_FLAGS = {
    "touches_border": "on the border",
    "oversized": "oversized",
    "spans_box": "spanning the box",
    "few_rays": "few rays",
}

#: What to check when a flag is the commonest among the particles of a sample.
_FLAG_HINTS = {
    "touches_border": "they touch the volume's border; a larger field of view keeps more "
    "of them whole",
    "oversized": "they are larger than the size prior: touching particles left unsplit, "
    "or a prior (material.silicon_radius_um) that does not fit the sample",
    "spans_box": "their boxes span the volume: the segmentation may have joined particles",
    "few_rays": "too few of their rays are valid: check the CBD and pore segmentation",
}

#: Line colour of a phase (or air) in the histogram: the overlay's, opaque.
_LINE_COLOURS: dict[str, Any] = {
    "air": "0.55",
    "pore": "0.25",
    **{PHASE_NAMES[code]: PHASE_COLOURS[code][:3] for code in range(1, 5)},
}


def grey_histogram(
    recon: da.Array, mask: da.Array | None = None, *, bins: int = 256
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The grey-level histogram of a volume, by Dask reductions (never held whole).

    Two passes over the volume, chunk by chunk: its range (inside ``mask``),
    then the counts.

    Parameters
    ----------
    recon : (Z, Y, X) dask array
        Attenuation, 1/µm.
    mask : (Z, Y, X) dask array of bool, optional
        The voxels to count (the ``sample`` array); default all.
    bins : int
        Equal bins from the smallest to the largest value counted.

    Returns
    -------
    counts : (bins,) ndarray of int64
        Voxels per bin (all zero when the mask is empty).
    edges : (bins + 1,) ndarray of float64
        Bin edges, 1/µm.

    Raises
    ------
    ValueError
        A mask whose shape differs from the volume's.

    Examples
    --------
    >>> volume = da.arange(8, chunks=3).reshape(2, 2, 2).astype(float)
    >>> counts, edges = grey_histogram(volume, volume >= 2, bins=3)
    >>> counts.tolist(), edges[[0, -1]].tolist()
    ([2, 2, 2], [2.0, 7.0])
    """
    if mask is not None:
        if mask.shape != recon.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the volume's {recon.shape}")
        mask = mask.astype(bool).rechunk(recon.chunks)
        low, high = dask.compute(
            da.where(mask, recon, np.inf).min(), da.where(mask, recon, -np.inf).max()
        )
    else:
        low, high = dask.compute(recon.min(), recon.max())
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1)
    if high <= low:
        high = low + max(abs(low), 1.0) * 1e-6
    # Float weights: NumPy sums boolean weights as booleans.
    weights = None if mask is None else mask.astype(np.float32)
    counts, edges = da.histogram(recon, bins=bins, range=(low, high), weights=weights)
    return np.rint(counts.compute()).astype(np.int64), np.asarray(edges, np.float64)


def _numbers(value: Any) -> list[float]:
    """A recorded threshold or level as finite floats (none where it is not numeric)."""
    items = value if isinstance(value, list | tuple) else [value]
    return [
        float(item)
        for item in items
        if isinstance(item, int | float) and not isinstance(item, bool) and np.isfinite(item)
    ]


def plot_grey_histogram(
    counts: NDArray[np.integer],
    edges: NDArray[np.floating],
    thresholds: Mapping[str, Any] | None = None,
    levels: Mapping[str, Any] | None = None,
    title: str = "",
) -> Figure:
    """Grey-level histogram (log counts) with the segmentation's thresholds and phase levels.

    Parameters
    ----------
    counts : (bins,) array
        Voxels per bin.
    edges : (bins + 1,) array
        Bin edges, attenuation in 1/µm.
    thresholds : mapping, optional
        The ``phases`` array's ``thresholds_per_um``: name → a threshold or a
        list of them, 1/µm (``classes``: the grey-class boundaries, numbered
        on the plot; ``cbd``, ``graphite``, …), drawn dashed. Values that are
        not numbers are left out.
    levels : mapping, optional
        ``levels_per_um``: phase name → attenuation level (1/µm), drawn solid
        in the phase's colour.
    title : str

    Returns
    -------
    Figure

    Examples
    --------
    >>> figure = plot_grey_histogram(
    ...     np.array([5, 50, 3]), np.array([0.0, 1.0, 2.0, 3.0]), {"cbd": 2.2}, {"silicon": 1.5}
    ... )
    >>> [t.get_text() for t in figure.legends[0].get_texts()]
    ['cbd threshold: 2.2', 'silicon level: 1.5']
    """
    counts = np.asarray(counts, dtype=np.float64)
    figure = Figure(figsize=(4.6, 3.8), layout="constrained")
    ax = figure.add_subplot()
    ax.stairs(counts, edges, color="0.2", linewidth=1.0)
    if (counts > 0).any():
        ax.set_yscale("log")
        ax.set_ylim(0.7, 5.0 * counts.max())
    drawn = [float(edges[0]), float(edges[-1])]
    for name, value in (thresholds or {}).items():
        values = _numbers(value)
        colour = _LINE_COLOURS.get(name, "black")
        label = "class boundaries" if name == "classes" else f"{name} threshold"
        label += ": " + ", ".join(f"{v:.3g}" for v in values)
        drawn += values
        for k, v in enumerate(values):
            ax.axvline(v, color=colour, linestyle="--", linewidth=1.1, label=None if k else label)
            if len(values) > 1:
                ax.annotate(
                    str(k + 1),
                    (v, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -10),
                    textcoords="offset points",
                    fontsize=8,
                    color=colour,
                )
    for name, value in (levels or {}).items():
        values = _numbers(value)[:1]
        drawn += values
        if values:
            ax.axvline(
                values[0],
                color=_LINE_COLOURS.get(name, "0.45"),
                linewidth=1.8,
                label=f"{name} level: {values[0]:.3g}",
            )
    # Every line in view, also one outside the grey levels counted (e.g. below the mask's).
    margin = 0.02 * (max(drawn) - min(drawn))
    ax.set_xlim(min(drawn) - margin, max(drawn) + margin)
    ax.set_xlabel("attenuation µ (1/µm)", fontsize=10)
    ax.set_ylabel("voxels (log scale)", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[1]:
        figure.legend(loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return figure


@dataclass(frozen=True)
class Orthoslices:
    """Three planes through one voxel of a volume: its phases and, if stored, its attenuation.

    Attributes
    ----------
    coords : dict of str to 1-D array
        ``"z"``, ``"y"``, ``"x"``: voxel centres along each axis, µm.
    index : dict of str to int
        The voxel the planes pass through, per axis.
    phases : dict of str to 2-D array
        Phase codes; ``"z"``: the (Y, X) plane at ``index["z"]``, ``"y"``: the
        (Z, X) plane, ``"x"``: the (Z, Y) plane.
    grey : dict of str to 2-D array, or None
        The same planes of the reconstruction, 1/µm; None without one.
    """

    coords: dict[str, NDArray[np.float64]]
    index: dict[str, int]
    phases: dict[str, NDArray[Any]]
    grey: dict[str, NDArray[Any]] | None


def _volume(group: zarr.Group, sample: str, name: str) -> xr.DataArray | None:
    """A complete stored volume, lazily; None where it is absent or incomplete."""
    if find_array(group, sample, name) is None:
        return None
    try:
        return open_volume(group, sample, name)
    except IncompleteArray:
        return None


def read_orthoslices(
    group: zarr.Group, sample: str, centre_um: tuple[float, float, float] | None = None
) -> Orthoslices:
    """Read three orthogonal planes of a sample's phases (and reconstruction) from the store.

    Only the chunks the planes cross are read, one chunk at a time.

    Parameters
    ----------
    group : zarr.Group
        The campaign store.
    sample : str
        A sample with a complete ``phases`` array.
    centre_um : (z, y, x) floats, optional
        The point the planes pass through (the voxel nearest it), µm; default
        the middle of the volume.

    Returns
    -------
    Orthoslices
    """
    phases = open_volume(group, sample, "phases")
    axes = ("z", "y", "x")
    coords = {a: np.asarray(phases[a].values, dtype=np.float64) for a in axes}
    if centre_um is None:
        index = {a: coords[a].size // 2 for a in axes}
    else:
        index = {
            a: int(np.argmin(np.abs(coords[a] - c))) for a, c in zip(axes, centre_um, strict=True)
        }
    volumes = {"phases": phases}
    recon = _volume(group, sample, "recon")
    if recon is not None and recon.shape == phases.shape:
        volumes["grey"] = recon
    planes = {
        (kind, a): volume.isel({a: index[a]}).data for kind, volume in volumes.items() for a in axes
    }
    (read,) = dask.compute(planes)
    grey = {a: np.asarray(read["grey", a]) for a in axes} if "grey" in volumes else None
    return Orthoslices(coords, index, {a: np.asarray(read["phases", a]) for a in axes}, grey)


def _span(coords: NDArray[np.float64]) -> tuple[float, float]:
    """The extent of voxel centres ``coords`` to their outer faces, µm."""
    half = 0.5 * float(coords[1] - coords[0]) if coords.size > 1 else 0.5
    return float(coords[0]) - half, float(coords[-1]) + half


def plot_orthoslices(slices: Orthoslices, title: str = "") -> Figure:
    """The z, y and x planes of a sample: attenuation (top row) and the phases over it.

    Thin white lines mark where the other two planes cut each one. Without a
    reconstruction the phases are drawn over black, in one row.

    Parameters
    ----------
    slices : Orthoslices
    title : str

    Returns
    -------
    Figure
        Axes in µm; the phase colours are :data:`PHASE_COLOURS`.
    """
    # Each plane: (horizontal axis, vertical axis).
    planes = {"z": ("x", "y"), "y": ("x", "z"), "x": ("y", "z")}
    spans = {a: _span(c) for a, c in slices.coords.items()}
    size = {a: hi - lo for a, (lo, hi) in spans.items()}
    widths = [size[planes[a][0]] for a in planes]
    tallest = max(size[planes[a][1]] / size[planes[a][0]] for a in planes)
    rows = 1 if slices.grey is None else 2
    panel = 9.0 / (1.15 * len(planes))
    height = min(9.5, max(2.6, rows * panel * min(tallest, 3.0) + 1.2))
    figure = Figure(figsize=(9.0, height), layout="constrained")
    grid = figure.subplots(rows, 3, squeeze=False, gridspec_kw={"width_ratios": widths})
    colours = ListedColormap([(0, 0, 0, 0), *(PHASE_COLOURS[c] for c in range(1, 5))])
    low = high = 0.0
    if slices.grey is not None:
        low, high = np.percentile(
            np.concatenate([g.ravel() for g in slices.grey.values()]), [1, 99.5]
        )
    for column, (cut, (across, down)) in enumerate(planes.items()):
        extent = (*spans[across], spans[down][1], spans[down][0])
        at = {a: float(slices.coords[a][slices.index[a]]) for a in planes}
        for row in range(rows):
            ax = grid[row, column]
            if slices.grey is not None:
                ax.imshow(
                    slices.grey[cut],
                    cmap="gray",
                    vmin=low,
                    vmax=high,
                    extent=extent,
                    interpolation="nearest",
                )
            else:
                ax.set_facecolor("black")
            if row == rows - 1:
                ax.imshow(
                    slices.phases[cut],
                    cmap=colours,
                    vmin=0,
                    vmax=4,
                    extent=extent,
                    interpolation="nearest",
                )
            ax.axvline(at[across], color="white", linewidth=0.6, alpha=0.7)
            ax.axhline(at[down], color="white", linewidth=0.6, alpha=0.7)
            what = "phases" if row == rows - 1 else "attenuation"
            ax.set_title(f"{what}, {cut} = {at[cut]:.2f} µm", fontsize=8)
            ax.set_xlabel(f"{across} (µm)", fontsize=8)
            ax.set_ylabel(f"{down} (µm)", fontsize=8)
            ax.tick_params(labelsize=7)
    _phase_legend(figure)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def _flag_column(rows: pd.DataFrame, name: str) -> NDArray[np.bool_]:
    """Column ``name`` as bool, missing values (and a missing column) False."""
    if name not in rows:
        return np.zeros(len(rows), bool)
    column = rows[name]
    return np.asarray(column.astype(object).where(column.notna(), False).astype(bool))


def _measured(rows: pd.DataFrame) -> NDArray[np.bool_]:
    """Rows with a gap: finite, at least one valid ray and no NOT_MEASURED flag."""
    measured = np.isfinite(pd.to_numeric(rows["gap_mean_um"], errors="coerce").to_numpy(float))
    if "n_rays" in rows:
        measured &= rows["n_rays"].to_numpy() > 0
    for name in NOT_MEASURED:
        measured &= ~_flag_column(rows, name)
    return measured


def flag_counts(rows: pd.DataFrame) -> dict[str, int]:
    """How many of a sample's 3D particles were measured, used and flagged.

    Parameters
    ----------
    rows : DataFrame
        The sample's particle rows (``tables/samples/<id>.parquet``):
        ``gap_mean_um`` and optionally ``n_rays`` and the :data:`QUALITY_FLAGS`.

    Returns
    -------
    dict of str to int
        ``particles`` (rows), ``measured`` (a gap: a valid ray and no
        :data:`~debond.storage.tables.NOT_MEASURED` flag), ``usable`` (measured
        and off the border: what a fit uses), ``flagged`` (any flag) and one
        count per :data:`QUALITY_FLAGS` column.

    Examples
    --------
    >>> rows = pd.DataFrame(
    ...     {
    ...         "gap_mean_um": [0.1, np.nan, 0.2],
    ...         "n_rays": [40, 0, 30],
    ...         "touches_border": [False, False, True],
    ...         "few_rays": [False, True, False],
    ...     }
    ... )
    >>> counts = flag_counts(rows)
    >>> counts["measured"], counts["usable"], counts["flagged"]
    (2, 1, 2)
    """
    flags = {name: _flag_column(rows, name) for name in QUALITY_FLAGS}
    measured = _measured(rows)
    flagged = np.logical_or.reduce([*flags.values(), np.zeros(len(rows), bool)])
    return {
        "particles": len(rows),
        "measured": int(measured.sum()),
        "usable": int(usable_rows(rows).sum()),
        "flagged": int(flagged.sum()),
        **{name: int(flag.sum()) for name, flag in flags.items()},
    }


def fit_banner(document: Mapping[str, Any]) -> str:
    """The banner at the top of the report for a fit that should not be read as a result.

    Lists the warnings ``fit.json`` carries (:func:`debond.model.diagnostics.
    diagnose`); a ``fit.json`` written before they existed says so instead.
    '' for a healthy fit.

    Examples
    --------
    >>> fit_banner({"fit_json_version": 3, "bootstrap_method": "parametric", "warnings": []})
    ''
    >>> "particle-resampling" in fit_banner({"fit_json_version": 2, "warnings": []})
    True
    >>> "earlier version" in fit_banner({"parameters": {}})
    True
    """
    if "warnings" not in document:
        return (
            '<p class="warning banner">⚠ This fit.json was written by an earlier version of '
            "debond: it carries no diagnostics (parameters on bounds, residual scales on "
            "their floors, unconverged replicates). Run <code>debond fit</code> again.</p>"
        )
    warnings = [w["message"] for w in document["warnings"]]
    note = earlier_intervals_note(document)
    if note:
        warnings.append(note)
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
    return (
        '<div class="warning banner"><p>⚠ This fit should not be read as a result as it '
        f"stands ({len(warnings)} warning(s)):</p><ul>{items}</ul></div>"
    )


def flag_warning(counts: Mapping[str, int]) -> str:
    """A warning line when none of a sample's particles is measured or most are flagged ('' if not).

    Parameters
    ----------
    counts : mapping
        :func:`flag_counts` of the sample.

    Examples
    --------
    >>> flag_warning({"particles": 10, "measured": 8, "flagged": 2, "touches_border": 2})
    ''
    >>> flag_warning({"particles": 4, "measured": 0, "flagged": 4, "oversized": 4}).split(";")[0]
    'No particle is measured (4 found), commonest flag: oversized (4)'
    """
    total = counts["particles"]
    if total == 0:
        return "No silicon particle was found in this sample: check its segmentation."
    # Not measured: one of the NOT_MEASURED flags says why (the border does not).
    reasons = NOT_MEASURED if counts["measured"] == 0 else tuple(QUALITY_FLAGS)
    commonest = max(reasons, key=lambda name: counts.get(name, 0))
    hint = f"commonest flag: {QUALITY_FLAGS[commonest]} ({counts.get(commonest, 0)}); "
    hint += _FLAG_HINTS[commonest] + "."
    if counts["measured"] == 0:
        return f"No particle is measured ({total} found), {hint}"
    if counts["flagged"] > total / 2:
        return f"Most particles are flagged ({counts['flagged']} of {total}), {hint}"
    return ""


def plot_particle_radii(
    rows: pd.DataFrame, prior_um: tuple[float, float] | None = None, title: str = ""
) -> Figure:
    """Equivalent radii of a sample's 3D particles: all of them, those used, and the size prior.

    Parameters
    ----------
    rows : DataFrame
        The sample's particle rows: ``radius_um`` (µm) and the flags.
    prior_um : (lo, hi), optional
        The campaign's size prior (``material.silicon_radius_um``), µm; shaded.
    title : str

    Returns
    -------
    Figure
    """
    radius = pd.to_numeric(rows["radius_um"], errors="coerce").to_numpy(np.float64)
    used = radius[usable_rows(rows)]
    finite = radius[np.isfinite(radius)]
    used = used[np.isfinite(used)]
    top = max(float(finite.max()) if finite.size else 0.0, prior_um[1] if prior_um else 0.0)
    edges = np.linspace(0.0, 1.08 * top if top > 0 else 1.0, 31)
    figure = Figure(figsize=(4.6, 3.8), layout="constrained")
    ax = figure.add_subplot()
    if prior_um is not None:
        lo, hi = prior_um
        ax.axvspan(lo, hi, color="tab:green", alpha=0.15, label=f"size prior {lo:g}–{hi:g} µm")
    ax.hist(finite, edges.tolist(), color="0.75", label=f"all 3D particles ({finite.size})")
    ax.hist(
        used,
        edges.tolist(),
        histtype="step",
        linewidth=1.6,
        color="tab:blue",
        label=f"used by the fit ({used.size})",
    )
    if not finite.size:
        ax.text(0.5, 0.5, "no 3D particle", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(edges[0], edges[-1])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("equivalent radius R (µm)", fontsize=10)
    ax.set_ylabel("particles", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.set_title(title, fontsize=10)
    figure.legend(loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return figure


def _population_sentence(document: dict[str, Any]) -> str:
    """What the capacity term summed over, as ``fit.json`` records it ('' if it does not)."""
    recorded = document.get("capacity_population", {})
    if "source" not in recorded:
        return ""
    return (
        f"The capacity term sums over {recorded['source']}: {recorded['particles']:.0f} "
        f"particles, volume-weighted radius {recorded['volume_weighted_radius_um']:.3f} µm."
    )


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _cycles(sample: Sample) -> str:
    """A sample's cycles in words (``"3 cycles"``; the file may not give them)."""
    return "cycles not given" if sample.cycles is None else f"{sample.cycles} cycles"


def _sample_rows(campaign: Campaign, group: zarr.Group, particles: pd.DataFrame) -> list[list[str]]:
    rows = []
    for sample in campaign.samples:
        measured = particles[particles["sample"] == sample.id]
        modality = (
            measured["modality"] if "modality" in measured else pd.Series("3d", measured.index)
        )
        valid = measured[usable_rows(measured)]
        centre = "—"
        recon = find_array(group, sample.id, "recon")
        if recon is not None and "rotation_centre_px" in recon.attrs:
            centre = f"{float(recon.attrs['rotation_centre_px']):.2f}"  # type: ignore[arg-type]
        rows.append(
            [
                sample.id,
                "—" if sample.cycles is None else str(sample.cycles),
                "—" if sample.voxel_size_um is None else f"{sample.voxel_size_um:g}",
                centre,
                str(int((modality == "3d").sum())),
                str(int((modality == "2d").sum())),
                f"{valid['gap_mean_um'].mean():.3f}" if len(valid) else "—",
            ]
        )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.8em; border-top: 1px solid #ddd; padding-top: 0.8em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
.pair { display: flex; gap: 1.5em; } .pair > * { flex: 1; min-width: 0; }
.notice { background: #fff6d6; border-left: 4px solid #e0a800; padding: 0.6em 1em; }
.warning { color: #a40000; font-weight: 600; }
.banner { border: 2px solid #a40000; padding: 0.4em 1em; background: #fff4f4; }
.note { color: #555; font-style: italic; }
"""

# Counts the figures that decoded, for a headless browser to read back.
_SCRIPT = """
window.addEventListener("load", () => {
  const images = [...document.querySelectorAll("figure img")];
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.figuresLoaded = `${loaded}/${images.length}`;
});
"""


def _open_run(campaign: Campaign) -> zarr.Group:
    """The campaign's store, once some sample has phases or the particle table exists
    (a campaign of SEM images alone has no phases); else: run ``debond run`` first."""
    run = f"run `debond run {campaign.path}` first"
    try:
        group = open_store(campaign.store_location, mode="r")
    except FileNotFoundError:
        raise ReportError(f"the store {campaign.store_location} does not exist; {run}") from None
    measured = (campaign.tables_dir / "particles.parquet").is_file()
    if not measured and not _with_phases(campaign, group):
        raise ReportError(f"no sample of {campaign.path} has phases; {run}")
    return group


def _with_phases(campaign: Campaign, group: zarr.Group) -> list[Sample]:
    """The samples whose phases are stored (complete)."""
    return [s for s in campaign.samples if _volume(group, s.id, "phases") is not None]


def _sample_particles(
    campaign: Campaign, sample: Sample, particles: pd.DataFrame
) -> pd.DataFrame | None:
    """A sample's 3D rows: ``tables/samples/<id>.parquet``, else its rows of the particle
    table; None where it has not been measured."""
    stage = campaign.registry.get("measure")
    assert stage.table is not None
    path = stage.table.path(campaign.tables_dir, sample)
    if path.is_file():
        return read_table(path, stage.table.schema)
    rows = particles[particles["sample"] == sample.id]
    if "modality" in rows:
        rows = rows[rows["modality"] == "3d"]
    return rows if len(rows) else None


def _image_only_particles(campaign: Campaign) -> pd.DataFrame:
    """The particle table before a fit: the gathered table if written, else the samples'
    3D tables (none: no row)."""
    table = campaign.tables_dir / "particles.parquet"
    if table.is_file():
        return read_table(table, PARTICLES_SCHEMA)
    empty = pd.DataFrame({name: pd.Series(dtype=object) for name in PARTICLES_SCHEMA.names})
    parts = [
        rows
        for sample in campaign.samples
        if (rows := _sample_particles(campaign, sample, empty)) is not None
    ]
    return pd.concat(parts, ignore_index=True) if parts else empty


def _figure(name: str, encoded: str, caption: str) -> str:
    return (
        f'<figure id="{html.escape(name)}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _largest_particle(rows: pd.DataFrame | None) -> tuple[tuple[float, float, float], str] | None:
    """The centroid (µm) of the largest particle the fit uses (else the largest measured, else
    the largest), and a phrase that says which."""
    columns = ["centroid_z_um", "centroid_y_um", "centroid_x_um"]
    if rows is None or not {*columns, "radius_um", "gap_mean_um"} <= set(rows):
        return None
    placed = rows[np.isfinite(rows[columns].to_numpy(np.float64)).all(axis=1)]
    for chosen, which in (
        (usable_rows(placed), "particle used by the fit"),
        (_measured(placed), "measured particle"),
        (np.ones(len(placed), bool), "particle"),
    ):
        pick = placed[chosen]
        if len(pick):
            row = pick.loc[pick["radius_um"].astype(float).idxmax()]
            centre = (float(row[columns[0]]), float(row[columns[1]]), float(row[columns[2]]))
            return centre, f"through the largest {which} (R = {float(row['radius_um']):.2f} µm)"
    return None


def _flags_html(campaign: Campaign, sample: Sample, rows: pd.DataFrame | None) -> str:
    """The flag table of a sample and its warning line (HTML)."""
    if rows is None:
        return (
            '<p class="warning">Not measured yet (no tables/samples/'
            f"{html.escape(sample.id)}.parquet): run <code>debond run "
            f"{html.escape(str(campaign.path))}</code>.</p>"
        )
    counts = flag_counts(rows)
    warning = flag_warning(counts)
    header = ["3D particles", "measured", "used by the fit", *QUALITY_FLAGS.values()]
    cells = [counts["particles"], counts["measured"], counts["usable"]]
    cells += [counts[name] for name in QUALITY_FLAGS]
    line = f'<p class="warning">⚠ {html.escape(warning)}</p>' if warning else ""
    return line + _table(header, [[str(c) for c in cells]])


def _histogram_html(
    group: zarr.Group, sample: Sample, phases: xr.DataArray, save: Callable[[str, Figure], str]
) -> str:
    """The grey-level histogram of a sample, or why there is none (HTML)."""
    sid = sample.id
    recon = _volume(group, sid, "recon")
    if recon is None:
        source = phases.attrs.get("source") or sample.phases
        brought = f" (it brought its own segmentation, {source})" if source else ""
        return (
            '<div><p class="note">No grey-level histogram and no threshold: no reconstruction '
            f"is stored for this sample{html.escape(brought)}.</p></div>"
        )
    mask = _volume(group, sid, "sample")
    counts, edges = grey_histogram(recon.data, None if mask is None else mask.data)
    thresholds = phases.attrs.get("thresholds_per_um")
    levels = phases.attrs.get("levels_per_um")
    thresholds = thresholds if isinstance(thresholds, Mapping) else {}
    levels = levels if isinstance(levels, Mapping) else {}
    figure = plot_grey_histogram(counts, edges, thresholds, levels, f"{sid}: grey levels")
    where = "inside the sample mask" if mask is not None else "of the whole volume"
    recorded = "dashed: the thresholds the segmentation used (chosen on the denoised volume)"
    if not thresholds:
        recorded = "no threshold recorded"
    if levels:
        recorded += "; solid: the phase levels"
    caption = f"Attenuation of the reconstruction {where}, log counts; {recorded}."
    return _figure(f"quality-{sid}-histogram", save(f"quality/{sid}/histogram", figure), caption)


def _sizes_html(
    campaign: Campaign,
    sample: Sample,
    rows: pd.DataFrame | None,
    save: Callable[[str, Figure], str],
) -> str:
    """The particle radii of a sample against the size prior (HTML)."""
    sid = sample.id
    radii = rows if rows is not None else pd.DataFrame({"radius_um": pd.Series(dtype=float)})
    prior = campaign.size_prior_um
    figure = plot_particle_radii(radii, prior, f"{sid}: particle sizes")
    caption = (
        "Equivalent radii of the sample's 3D particles: all of them (grey) and those the fit "
        "uses, measured and off the border (blue); "
        + (
            f"shaded: the size prior {prior[0]:g}–{prior[1]:g} µm."
            if prior
            else "no size prior (material.silicon_radius_um)."
        )
    )
    return _figure(f"quality-{sid}-sizes", save(f"quality/{sid}/sizes", figure), caption)


def _slices_html(
    group: zarr.Group,
    sample: Sample,
    rows: pd.DataFrame | None,
    save: Callable[[str, Figure], str],
) -> str:
    """Three planes of a sample through its largest particle (HTML)."""
    sid = sample.id
    through = _largest_particle(rows)
    slices = read_orthoslices(group, sid, through[0] if through else None)
    where = through[1] if through else "through the middle of the volume"
    figure = plot_orthoslices(slices, f"{sid}: planes {where}")
    shown = "the phases"
    if slices.grey is not None:
        shown = "attenuation (top) and the phases over it (bottom)"
    caption = (
        f"Planes {where}: z (x–y), y (x–z) and x (y–z); {shown}; "
        "white lines: where the other planes cut."
    )
    return _figure(f"quality-{sid}-slices", save(f"quality/{sid}/slices", figure), caption)


def _quality_block(
    campaign: Campaign,
    group: zarr.Group,
    sample: Sample,
    rows: pd.DataFrame | None,
    save: Callable[[str, Figure], str],
) -> str:
    """One sample's image-quality block: flags, warning and its three figures (HTML)."""
    sid = html.escape(sample.id)
    if not sample.has_volume:
        return (
            f'<h3 id="quality-{sid}">{sid}: {_cycles(sample)}, SEM cross-sections alone</h3>'
            '<p class="note">No volume (no txm or phases), so no 3D image quality; its SEM '
            "sections are the 2D rows of the particle table.</p>"
        )
    parts = [
        f'<h3 id="quality-{sid}">{sid}: {_cycles(sample)}, voxel {sample.voxel_size_um:g} µm</h3>',
        _flags_html(campaign, sample, rows),
    ]
    phases = _volume(group, sample.id, "phases")
    if phases is None:
        parts.append(
            f'<p class="note">No phases yet: run <code>debond run '
            f"{html.escape(str(campaign.path))}</code>.</p>"
        )
        return "".join(parts)
    pair = _histogram_html(group, sample, phases, save) + _sizes_html(campaign, sample, rows, save)
    parts.append(f'<div class="pair">{pair}</div>')
    parts.append(_slices_html(group, sample, rows, save))
    return "".join(parts)


def _fit_sections(
    campaign: Campaign,
    group: zarr.Group,
    fitted: _Fit,
    particles: pd.DataFrame,
    save: Callable[[str, Figure], str],
) -> tuple[str, str]:
    """The fitted parameters' section and the figures' section of the page (HTML)."""
    population = capacity_classes(fitted.document, particles)
    source = fitted.document.get("capacity_population", {}).get("source", "every row")
    figures_dir = campaign.folder / "figures"
    # Drawn here: the images and the sizes. Written by `debond fit` (write_fit)
    # and embedded as they are: the gap, sensitivity and bootstrap figures.
    drawn: dict[str, tuple[Figure, str]] = {}
    if _with_phases(campaign, group):  # a campaign of SEM images alone has no slice
        drawn["slices"] = (
            plot_slices(campaign),
            "A mid-height slice of each sample: attenuation (left) and the segmented "
            "phases over it (right).",
        )
    drawn |= {
        "sizes": (
            plot_sizes(particles, population, source),
            "Particle radii weighted by their silicon volume: the usable 3D particles, "
            "and the population the capacity term sums over (with SEM sections, their "
            "3D sizes unfolded); dotted: the volume-weighted mean radii.",
        ),
    }
    fit_figures = {
        "gap_vs_radius": "Gap against particle radius for every cycle group: 3D (filled) and "
        "2D-converted (open) particles the fit used, the fitted model's mean ± sd; inset: "
        "silicon capacity retention, data against the model.",
        "sensitivity": "Silicon capacity retention when α0, κ0 or δ0 improve by a factor of 2 "
        "(the paper's Fig. 4d).",
        "bootstrap": f"Bootstrap distributions of the parameters ({fitted.bootstrap} replicates).",
    }
    images: dict[str, tuple[str, str]] = {}
    for name, (figure, caption) in drawn.items():
        images[name] = (save(name, figure), caption)
    for name, caption in fit_figures.items():
        png = figures_dir / f"{name}.png"
        if not png.is_file():
            raise ReportError(f"{png} does not exist; run `debond fit {campaign.path}` first")
        images[name] = (base64.b64encode(png.read_bytes()).decode("ascii"), caption)
    order = ("slices", "gap_vs_radius", "sensitivity", "bootstrap", "sizes")
    figures = "".join(_figure(name, *images[name]) for name in order if name in images)
    parameter_rows = []
    sides = [
        fitted.document["parameters"][name].get("side", "two-sided") for name in PARAMETER_NAMES
    ]
    for i, (symbol, value, plus, minus, unit) in enumerate(
        paper_rows(fitted.parameters, campaign.material)
    ):
        side = sides[i] if i < len(sides) else "two-sided"
        if side == "upper":  # on its lower bound: only an upper limit means anything
            limit = fitted.document["parameters"][PARAMETER_NAMES[i]]["upper"]
            parameter_rows.append([symbol, f"< {limit:.4g}", "one-sided, 84 %", unit])
        elif side == "lower":
            limit = fitted.document["parameters"][PARAMETER_NAMES[i]]["lower"]
            parameter_rows.append([symbol, f"> {limit:.4g}", "one-sided, 84 %", unit])
        else:
            parameter_rows.append([symbol, f"{value:.4g}", f"+{plus:.2g} / −{minus:.2g}", unit])
    if fitted.truth is not None:
        for row, name in zip(parameter_rows, PARAMETER_NAMES, strict=False):
            row.append(f"{float(getattr(fitted.truth, name)):.4g}")
        for row in parameter_rows[len(PARAMETER_NAMES) :]:
            row.append("")
    header = ["parameter", "value", "84th / 16th percentile", "unit"]
    if fitted.truth is not None:
        header.append("true (synthetic)")
    caveats = "".join(
        f'<p class="note">Note: {html.escape(str(c))}</p>'
        for c in fitted.document.get("caveats", [])
    )
    parameters = f"""<h2>Fitted parameters</h2>
<p>Bootstrap median with the 16th and 84th percentiles, {fitted.bootstrap} replicates.
{html.escape(_population_sentence(fitted.document))}
{html.escape(surface_sentence(fitted.document.get("surface", {})))}</p>
{_table(header, parameter_rows)}
{caveats}"""
    return parameters, f"<h2>Figures</h2>\n{figures}"


def write_report(campaign: Campaign, *, echo: Callable[[str], None] = print) -> Path:
    """Write ``report.html`` and the figures of a run campaign, fitted or not yet.

    Parameters
    ----------
    campaign : Campaign
    echo : callable
        Receives one line per figure (and one when there is no fit yet).

    Returns
    -------
    Path
        The HTML page.

    Raises
    ------
    ReportError
        No sample has phases (run ``debond run``); or a fit whose particle
        table or figures are missing.

    Notes
    -----
    Without ``tables/<campaign>/fit.json`` the page holds the samples and the image
    quality only, and says to run ``debond fit``.
    """
    group = _open_run(campaign)
    fitted = _read_fit(campaign) if (campaign.tables_dir / "fit.json").is_file() else None
    if fitted is not None:
        try:
            particles = fit_inputs(campaign).particles
        except FileNotFoundError as error:
            raise ReportError(str(error)) from None
    else:
        particles = _image_only_particles(campaign)
        echo(f"no fit yet: an image-only report (run `debond fit {campaign.path}`)")
    material = campaign.material
    figures_dir = campaign.folder / "figures"

    def save(name: str, figure: Figure) -> str:
        save_figure(figure, figures_dir / name)
        echo(f"figure {figures_dir / name}.png")
        return _png(figure)

    def save_png(name: str, figure: Figure) -> str:
        # Diagnostics, three per sample: PNG only, drawn once and embedded as written.
        png = figures_dir / f"{name}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(png, dpi=110, bbox_inches="tight")
        echo(f"figure {png}")
        return base64.b64encode(png.read_bytes()).decode("ascii")

    parameters, figures = ("", "")
    if fitted is not None:
        parameters, figures = _fit_sections(campaign, group, fitted, particles, save)
    quality = "".join(
        _quality_block(campaign, group, s, _sample_particles(campaign, s, particles), save_png)
        for s in campaign.samples
    )
    samples_table = _table(
        [
            "sample",
            "cycles",
            "voxel (µm)",
            "rotation centre (px)",
            "3D particles",
            "2D sections",
            "mean gap of the usable rows (µm)",
        ],
        _sample_rows(campaign, group, particles),
    )
    notice = "" if fitted is None else fit_banner(fitted.document)
    if fitted is None:
        notice = (
            '<p class="notice"><strong>No fit exists yet</strong>: this report shows the images '
            f"only. Run <code>debond fit {html.escape(str(campaign.path))}</code> for the "
            "parameters and the fit's figures.</p>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(campaign.name)}: debond report</title>
<style>{_STYLE}</style><script>{_SCRIPT}</script></head>
<body>
<h1>{html.escape(campaign.name)}</h1>
{notice}
<p>Campaign file {html.escape(str(campaign.path))}; {len(campaign.samples)} samples,
{len(particles)} particles and sections; silicon ΔV/V = {material.volumetric_expansion:g},
half-cycle T = {material.half_cycle_hours:g} h.</p>
{parameters}
<h2>Samples</h2>
{samples_table}
{figures}
<h2 id="quality">Image quality</h2>
<p>Per sample: the measured and flagged particles (flagged ones are not fitted), the
reconstruction's grey levels with the segmentation's thresholds, the particle sizes and
three planes through the volume.</p>
{quality}
</body></html>
"""
    path = campaign.folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
