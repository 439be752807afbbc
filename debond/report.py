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
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from debond.analysis import fit_inputs
from debond.campaign import Campaign
from debond.model import PARAMETER_NAMES, Parameters
from debond.model.figures import save_figure
from debond.outputs import capacity_classes, paper_rows
from debond.pipeline.segment import PHASE_NAMES
from debond.storage import find_array, open_store, open_volume
from debond.storage.tables import BOOTSTRAP_SCHEMA, read_table, usable_rows

__all__ = ["PHASE_COLOURS", "ReportError", "plot_sizes", "plot_slices", "write_report"]

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
            left.set_title(f"{sample.id} ({sample.cycles} cycles): attenuation", fontsize=9)
        else:
            left.imshow(slice_phases, cmap="gray", extent=extent)
            left.set_title(f"{sample.id} ({sample.cycles} cycles): segmentation", fontsize=9)
        right.imshow(slice_phases, cmap=colours, vmin=0, vmax=4, extent=extent)
        right.set_title(f"phases at z = {float(phases.z[z]):.2f} µm", fontsize=9)
        for ax in row:
            ax.set_xlabel("x (µm)", fontsize=8)
            ax.set_ylabel("y (µm)", fontsize=8)
            ax.tick_params(labelsize=7)
    figure.legend(
        [Patch(color=PHASE_COLOURS[c]) for c in range(1, 5)],
        [PHASE_NAMES[c] for c in range(1, 5)],
        loc="outside lower center",
        ncols=4,
        fontsize=8,
        frameon=False,
    )
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


def _sample_rows(campaign: Campaign, particles: pd.DataFrame) -> list[list[str]]:
    group = open_store(campaign.store_location, mode="r")
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
                str(sample.cycles),
                f"{sample.voxel_size_um:g}",
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
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
"""

# Counts the figures that decoded, for a headless browser to read back.
_SCRIPT = """
window.addEventListener("load", () => {
  const images = [...document.querySelectorAll("figure img")];
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.figuresLoaded = `${loaded}/${images.length}`;
});
"""


def write_report(campaign: Campaign, *, echo: Callable[[str], None] = print) -> Path:
    """Write ``report.html`` and the figures of a run and fitted campaign.

    Parameters
    ----------
    campaign : Campaign
    echo : callable
        Receives one line per figure.

    Returns
    -------
    Path
        The HTML page.

    Raises
    ------
    ReportError
        No particle table (run ``debond run``) or no fit (run ``debond fit``).
    """
    try:
        inputs = fit_inputs(campaign)
    except FileNotFoundError as error:
        raise ReportError(str(error)) from None
    particles = inputs.particles
    fitted = _read_fit(campaign)
    material = campaign.material
    population = capacity_classes(fitted.document, particles)
    source = fitted.document.get("capacity_population", {}).get("source", "every row")
    figures_dir = campaign.folder / "figures"
    # Drawn here: the images and the sizes. Written by `debond fit` (write_fit)
    # and embedded as they are: the gap, sensitivity and bootstrap figures.
    drawn = {
        "slices": (
            plot_slices(campaign),
            "A mid-height slice of each sample: attenuation (left) and the segmented "
            "phases over it (right).",
        ),
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
        save_figure(figure, figures_dir / name)
        echo(f"figure {figures_dir / name}.png")
        images[name] = (_png(figure), caption)
    for name, caption in fit_figures.items():
        png = figures_dir / f"{name}.png"
        if not png.is_file():
            raise ReportError(f"{png} does not exist; run `debond fit {campaign.path}` first")
        images[name] = (base64.b64encode(png.read_bytes()).decode("ascii"), caption)
    order = ("slices", "gap_vs_radius", "sensitivity", "bootstrap", "sizes")
    sections = []
    for name in order:
        encoded, caption = images[name]
        sections.append(
            f'<figure id="{name}"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parameter_rows = []
    for symbol, value, plus, minus, unit in paper_rows(fitted.parameters, material):
        parameter_rows.append([symbol, f"{value:.4g}", f"+{plus:.2g} / −{minus:.2g}", unit])
    if fitted.truth is not None:
        for row, name in zip(parameter_rows, PARAMETER_NAMES, strict=False):
            row.append(f"{float(getattr(fitted.truth, name)):.4g}")
        for row in parameter_rows[len(PARAMETER_NAMES) :]:
            row.append("")
    header = ["parameter", "value", "84th / 16th percentile", "unit"]
    if fitted.truth is not None:
        header.append("true (synthetic)")
    samples_table = _table(
        [
            "sample",
            "cycles",
            "voxel (µm)",
            "rotation centre (px)",
            "3D particles",
            "2D sections",
            "mean gap of the fitted rows (µm)",
        ],
        _sample_rows(campaign, particles),
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(campaign.name)}: debond report</title>
<style>{_STYLE}</style><script>{_SCRIPT}</script></head>
<body>
<h1>{html.escape(campaign.name)}</h1>
<p>Campaign file {html.escape(str(campaign.path))}; {len(campaign.samples)} samples,
{len(particles)} particles and sections; silicon ΔV/V = {material.volumetric_expansion:g},
half-cycle T = {material.half_cycle_hours:g} h.</p>
<h2>Fitted parameters</h2>
<p>Bootstrap median with the 16th and 84th percentiles, {fitted.bootstrap} replicates.
{html.escape(_population_sentence(fitted.document))}</p>
{_table(header, parameter_rows)}
<h2>Samples</h2>
{samples_table}
<h2>Figures</h2>
{"".join(sections)}
</body></html>
"""
    path = campaign.folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
