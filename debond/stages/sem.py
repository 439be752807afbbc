"""``sem``: 2D phases and in-plane gaps of SEM cross-sections."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dask
import pandas as pd
import zarr

from debond.pipeline.sem import analyse_sem
from debond.sections import Section, Thresholds, param
from debond.stages.base import Plan, Stage, Work

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample


class Parameters(Section):
    """``[sem]``: 2D segmentation and gaps of SEM cross-sections (:func:`analyse_sem`)."""

    thresholds: Thresholds | None = param(
        None,
        "Four backscatter-intensity boundaries SEI | graphite | epoxy | silicon | CBD; "
        "default: from the grey levels of each image's flat regions.",
        "grey value",
        min_length=4,
        max_length=4,
    )
    sigma_px: float = param(1.0, "Gaussian denoising (0: none).", "px", ge=0)
    silicon_min_radius_px: float = param(
        2.0, "Silicon cores contain a disc of this radius (thinner rims are edges).", "px", ge=0
    )
    sei_max_px: float = param(
        4.0, "Dark pixels within this distance of silicon are SEI, elsewhere graphite.", "px", ge=0
    )
    graphite_min_radius_px: float = param(
        4.0, "Graphite regions contain a disc of this radius.", "px", ge=0
    )
    bins: int = param(256, "Bins of each image's grey-level histogram.", ge=16)
    n_rays: int = param(64, "In-plane rays per silicon section.", "rays", ge=4)
    max_ray_length_um: float = param(
        3.0, "Rays that meet no CBD within this length are not counted.", "µm", gt=0
    )
    min_area_px: int = param(20, "Smaller silicon sections are dropped.", "px", ge=1)


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    parameters = stage.arguments(campaign, sample)
    images = list(sample.sem)

    def rows() -> pd.DataFrame:
        analyse = dask.delayed(analyse_sem, pure=True)
        tables = dask.compute(*(analyse(path, **parameters) for path in images))
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "cycles", sample.cycles)
        table.insert(0, "sample", sample.id)
        return table

    def build() -> Work:
        return Work([], table=rows, detail=f"{len(images)} SEM images")

    return Plan(stage, campaign, sample, parameters, {"sem": images}, build)


#: Peak bytes of a task per pixel of its image: the grey image, its float64
#: smoothing and the phase masks and labels (measured with tracemalloc,
#: tests/test_memory.py) ...
BYTES_PER_PIXEL = 72.0
#: ... and the rays' buffers, whatever the image.
RAY_BYTES = 2**19


def peak_bytes(block_shape: tuple[int, ...], parameters: Mapping[str, Any]) -> float:
    """Peak memory of analysing one SEM image, bytes.

    Parameters
    ----------
    block_shape : (rows, columns)
        The image.
    parameters : mapping
        The stage's keywords.
    """
    return BYTES_PER_PIXEL * math.prod(block_shape) + RAY_BYTES
