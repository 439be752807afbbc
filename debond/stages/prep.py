"""``prep``: flat/dark normalisation, median filter, sinograms."""

from __future__ import annotations

from typing import TYPE_CHECKING

import zarr
from pydantic import field_validator

from debond.pipeline.prep import MAX_BAD_FRACTION, prepare
from debond.sections import Section, param
from debond.stages.base import Output, Plan, Stage, Work
from debond.storage import open_volume

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample


class Parameters(Section):
    """``[prep]``: flat/dark normalisation, median filter, sinograms (:func:`prepare`)."""

    clip_to: float = param(
        1e-6, "Smallest transmission kept before −log (guards against log(0)).", "", gt=0, lt=1
    )
    # 2 %: a dead column of a 64-px detector (1.6 %) is repaired; a broken frame or a
    # wrong flat or dark series is refused (see debond.pipeline.prep.MAX_BAD_FRACTION).
    max_bad_fraction: float = param(
        MAX_BAD_FRACTION,
        "Largest share of a projection's pixels that may be bad (NaN, ±Inf, or a detector "
        "pixel whose mean dark ≥ mean flat) and still be repaired from their neighbours; "
        "above it the run stops, naming the file and the projection.",
        "",
        ge=0,
        le=0.5,
    )
    median_size: int = param(
        1,
        "Median filter of each projection, size × size (1: none, the most accurate gaps on "
        "the test scans; the paper: 7, which blurs features of 1–2 px).",
        "px",
        ge=1,
    )
    ring_removal: bool = param(False, "Remove ring artefacts in sinogram space.")

    @field_validator("median_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd; found {value}")
        return value


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    parameters = stage.arguments(campaign, sample)
    inputs = campaign.registry.upstream(group, stage, sample)

    def build() -> Work:
        projections = open_volume(group, sample.id, "projections")
        flats = open_volume(group, sample.id, "flats").data
        darks = open_volume(group, sample.id, "darks").data
        prepared = prepare(projections.data, flats, darks, **parameters)
        attrs = {"angles_rad": projections.attrs["angles_rad"]}
        return Work(
            outputs=[Output("sinograms", prepared.data, "sinograms", attrs)],
            extras={"clipped_values": prepared.clipped},
        )

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)
