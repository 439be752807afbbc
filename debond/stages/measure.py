"""``measure``: ray-traced gaps between every silicon particle and the CBD."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import zarr

from debond.pipeline.measure import measure_gaps, task_peak_bytes
from debond.sections import Section, param
from debond.stages.base import Plan, Stage, Work
from debond.storage import complete_array
from debond.storage.tables import NOT_MEASURED

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample


class Parameters(Section):
    """``[measure]``: ray-traced gaps between silicon and CBD (:func:`measure_gaps`)."""

    n_rays: int = param(256, "Rays per particle (Fibonacci sphere).", "rays", ge=6)
    max_ray_length_um: float = param(
        3.0, "Rays that meet no CBD within this length are not counted.", "µm", gt=0
    )
    particles_per_task: int = param(
        16,
        "Most particles measured together in one task (fewer where their crops "
        "would not fit a task's memory).",
        "particles",
        ge=1,
    )
    min_valid_ray_fraction: float = param(
        0.2,
        "Particles with fewer valid rays than this fraction of n_rays are flagged "
        "few_rays, not measured.",
        "",
        ge=0,
        le=1,
    )


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    parameters = stage.arguments(campaign, sample)
    inputs = campaign.registry.upstream(group, stage, sample)

    def rows() -> pd.DataFrame:
        # the stored arrays themselves: each task reads its particles' box
        phases, labels, inside = (
            complete_array(group, sample.id, name) for name in ("phases", "particles", "sample")
        )
        table = measure_gaps(phases, labels, sample=inside, **parameters)
        table.insert(0, "modality", "3d")
        table.insert(0, "cycles", sample.cycles)
        table.insert(0, "sample", sample.id)
        table["section_radius_um"] = np.nan  # 2D sections only
        table["section_gap_um"] = np.nan
        return table

    def build() -> Work:
        return Work([], table=rows, describe=describe)

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)


def describe(rows: pd.DataFrame) -> str:
    """How many particles were measured, and how many not and why (the flags)."""
    flagged = ", ".join(f"{int(rows[flag].sum())} {flag}" for flag in NOT_MEASURED if flag in rows)
    measured = int(rows["gap_mean_um"].notna().sum()) if len(rows) else 0
    on_border = int(rows["touches_border"].sum()) if len(rows) else 0
    return (
        f"{len(rows)} particles: {measured} measured, {on_border} on the border; "
        f"not measured: {flagged or 'none'}"
    )


def peak_bytes(block_shape: tuple[int, ...], parameters: Mapping[str, Any]) -> float:
    """Peak memory of measuring the particles of one block, bytes.

    The block is both the task's input and the crop its rays are traced in
    (:func:`debond.pipeline.measure.task_peak_bytes`). A task of the stage
    holds the box around its particles' crops; :func:`measure_gaps` batches
    the particles so that this box and the largest crop fit a task's memory.

    Parameters
    ----------
    block_shape : (z, y, x)
        One chunk of the phases and labels.
    parameters : mapping
        The stage's keywords: ``n_rays``, ``max_ray_length_um`` and
        ``voxel_size_um`` size the rays (the kernel's defaults where absent).
    """
    defaults = inspect.signature(measure_gaps).parameters
    n_rays = parameters.get("n_rays", defaults["n_rays"].default)
    length_um = parameters.get("max_ray_length_um", defaults["max_ray_length_um"].default)
    return task_peak_bytes(math.prod(block_shape), n_rays, length_um / parameters["voxel_size_um"])
