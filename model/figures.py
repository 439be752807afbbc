"""Figures of the model and its fit, in the style of the paper's Fig. 4.

Every function returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (no global state, safe in worker processes);
:func:`save_figure` writes it as PNG and PDF.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from debond.model.disconnection import capacity_retention, gap_distribution
from debond.model.parameters import PARAMETER_NAMES, PARAMETER_UNITS, Material, Parameters

#: Colours and markers of the cycle groups, as in the paper's Fig. 2b and 4a.
CYCLE_STYLE: dict[int, tuple[str, str]] = {
    0: ("black", "s"),
    1: ("tab:purple", "D"),
    3: ("m", "o"),
    10: ("tab:orange", "^"),
}
SYMBOLS = {"alpha0": "α0", "kappa0": "κ0", "delta0": "δ0", "zeta0": "ζ0"}


def _style(cycles: int, index: int) -> tuple[str, str]:
    fallback = ("tab:blue", "v", "tab:green", "<", "tab:red", ">", "tab:brown", "p")
    return CYCLE_STYLE.get(cycles, (fallback[(2 * index) % 8], fallback[(2 * index + 1) % 8]))


def save_figure(figure: Figure, stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; return their paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=150, bbox_inches="tight")
    figure.savefig(paths[1], bbox_inches="tight")
    return paths


def plot_gap_vs_radius(
    particles: pd.DataFrame,
    parameters: Parameters,
    material: Material,
    capacity: pd.DataFrame | None = None,
    *,
    population: tuple[np.ndarray, np.ndarray] | None = None,
    n_points: int = 200,
) -> Figure:
    """Gap versus effective radius per cycle group, data and model (Fig. 4a).

    Parameters
    ----------
    particles : DataFrame
        ``cycles``, ``radius_um``, ``gap_mean_um`` and optionally ``modality``
        (3D filled markers, 2D-converted open ones).
    parameters : Parameters
        Model parameters for the lines (mean) and bands (± sd).
    material : Material
    capacity : DataFrame, optional
        ``cycle`` and ``retention``: adds the inset of silicon capacity
        retention, data against the model over the imaged size population.
    population : (radius_um, count), optional
        The capacity term's population (the fit's); default every row's radius.
    n_points : int
        Radii at which the model lines are drawn.

    Returns
    -------
    Figure
    """
    figure = Figure(figsize=(7.0, 5.0), layout="constrained")
    ax = figure.add_subplot()
    radius = particles["radius_um"].to_numpy()
    grid = np.linspace(max(radius.min() * 0.9, 1e-3), radius.max() * 1.05, n_points)
    modality = (
        particles["modality"] if "modality" in particles else pd.Series("3d", particles.index)
    )
    for index, cycles in enumerate(sorted(particles["cycles"].unique())):
        colour, marker = _style(int(cycles), index)
        group = particles["cycles"] == cycles
        for kind, filled in (("3d", True), ("2d", False)):
            rows = group & (modality == kind)
            if rows.any():
                ax.scatter(
                    particles.loc[rows, "radius_um"],
                    particles.loc[rows, "gap_mean_um"],
                    s=16,
                    marker=marker,
                    facecolors=colour if filled else "none",
                    edgecolors=colour,
                    alpha=0.7,
                    label=f"{cycles} cycles ({kind.upper()})",
                )
        mean, sd = gap_distribution(grid, int(cycles), parameters, material)
        ax.plot(grid, mean, color=colour, linewidth=1.8)
        ax.fill_between(grid, mean - sd, mean + sd, color=colour, alpha=0.18, linewidth=0)
    ax.set_xlabel("effective particle radius r (µm)")
    ax.set_ylabel("mean gap to the carbon black-binder domain (µm)")
    ax.set_xlim(0, grid.max())
    # Headroom above the data for the inset.
    ax.set_ylim(0, 1.5 * max(ax.get_ylim()[1], 1e-3))
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=2)
    ax.set_title("Gap versus radius: data, model mean ± sd", fontsize=10)

    if capacity is not None and len(capacity):
        inset = ax.inset_axes((0.64, 0.68, 0.34, 0.29))
        n = int(capacity["cycle"].max())
        radii, counts = population if population is not None else (radius, None)
        model = capacity_retention(radii, n, parameters, material, counts)
        inset.plot(capacity["cycle"], capacity["retention"], "k-", label="data")
        inset.plot(np.arange(1, n + 1), model, "k--", label="model")
        inset.set_xlabel("cycle", fontsize=7)
        inset.set_ylabel("Si capacity retention", fontsize=7)
        inset.set_ylim(0, 1.05)
        inset.tick_params(labelsize=7)
        inset.legend(fontsize=6, frameon=False)
    return figure


def plot_sensitivity(curves: Mapping[str, np.ndarray]) -> Figure:
    """Silicon capacity retention for parameter scenarios (Fig. 4d).

    Parameters
    ----------
    curves : mapping
        ``label -> (n,) retention`` from :func:`debond.model.sensitivity.sensitivity`.
    """
    figure = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = figure.add_subplot()
    colours = ["black", "tab:gray", "tab:red", "tab:green", "tab:purple", "tab:blue"]
    for (label, curve), colour in zip(curves.items(), colours, strict=False):
        cycles = np.arange(1, len(curve) + 1)
        style = "-" if label == "baseline" else "--"
        ax.plot(
            cycles,
            100.0 * np.asarray(curve),
            style,
            color=colour,
            marker="o",
            markersize=3,
            label=f"{label}: {100.0 * curve[-1]:.0f} % at cycle {len(curve)}",
        )
    ax.set_xlabel("cycle")
    ax.set_ylabel("silicon capacity retention (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Sensitivity of the silicon capacity to α0, κ0, δ0", fontsize=10)
    return figure


def plot_bootstrap(
    samples: pd.DataFrame, truth: Parameters | None = None, *, bins: int = 50
) -> Figure:
    """Histograms of the bootstrap replicates of each parameter.

    Parameters
    ----------
    samples : DataFrame
        One row per replicate with columns α0, κ0, δ0, ζ0 (``FitResult.samples``).
    truth : Parameters, optional
        True values (synthetic data), drawn as red lines.
    bins : int
    """
    figure = Figure(figsize=(8.0, 5.5), layout="constrained")
    axes = figure.subplots(2, 2).ravel()
    for ax, name in zip(axes, PARAMETER_NAMES, strict=True):
        values = samples[name].to_numpy()
        median, low, high = np.percentile(values, [50, 16, 84])
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.75)
        ax.axvline(median, color="k", linewidth=1.5)
        for edge in (low, high):
            ax.axvline(edge, color="k", linestyle="--", linewidth=1)
        if truth is not None:
            ax.axvline(float(getattr(truth, name)), color="tab:red", linewidth=1.5, label="true")
            ax.legend(fontsize=8, frameon=False)
        unit = PARAMETER_UNITS[name]
        ax.set_xlabel(f"{SYMBOLS[name]}" + (f" ({unit})" if unit else ""))
        ax.set_ylabel("replicates")
        ax.set_title(
            f"{SYMBOLS[name]} = {median:.3g} (+{high - median:.2g}/−{median - low:.2g})", fontsize=9
        )
    figure.suptitle(f"Bootstrap distributions ({len(samples)} replicates)", fontsize=10)
    return figure
