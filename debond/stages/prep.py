"""``prep``: flat/dark normalisation, bad-pixel repair, median filter, sinograms."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import zarr
from pydantic import field_validator

from debond.pipeline.ingest import DATA
from debond.pipeline.prep import MAX_BAD_FRACTION, BadPixels, check_bad_pixels, prepare
from debond.sections import Section, param
from debond.stages.base import Output, Plan, Stage, Work
from debond.storage import open_volume

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample

#: How a bad pixel is repaired, as recorded with the sinograms.
REPAIR = "median of the nearest good pixels of the same projection (smallest square window)"


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


def _source(attrs: Mapping[str, Any], campaign: Campaign, sample: Sample) -> str:
    """The raw projections the stored ones came from: file and dataset (or file pattern)."""
    source = attrs.get("source") or str(sample.txm)
    if attrs.get("layout") == "tiff":
        pattern = campaign.stage_parameters("ingest")["tiff_projections"]
        return f"{source} ({pattern}, in natural order)"
    return f"{source} ({DATA})"


def _per_frame(counts: np.ndarray) -> dict[str, int]:
    """The frames with a non-zero count, by index (JSON keys are strings)."""
    return {str(int(i)): int(counts[i]) for i in np.flatnonzero(counts)}


def bad_pixel_record(bad: BadPixels) -> dict[str, Any]:
    """What the sinograms record of the bad pixels, per kind and frame.

    Parameters
    ----------
    bad : BadPixels
        Computed counts (:func:`debond.pipeline.prep.normalise`).

    Returns
    -------
    dict
        ``nan`` and ``inf``: {projection index: count} of the projections that
        have any; ``dark_ge_flat``: detector pixels masked in every projection;
        ``flat_frames``, ``dark_frames``: {frame index: non-finite values};
        ``pixels_per_projection``; ``repair``: how they were repaired.
    """
    return {
        "nan": _per_frame(np.asarray(bad.nan)),
        "inf": _per_frame(np.asarray(bad.inf)),
        "dark_ge_flat": int(bad.dark_ge_flat),
        "flat_frames": _per_frame(np.asarray(bad.flats)),
        "dark_frames": _per_frame(np.asarray(bad.darks)),
        "pixels_per_projection": int(bad.pixels),
        "repair": REPAIR,
    }


def bad_pixel_totals(bad: BadPixels) -> dict[str, int]:
    """The sample's counts of each kind, summed over its frames (the run's summary line)."""
    return {
        "nan_values": int(np.sum(bad.nan)),
        "inf_values": int(np.sum(bad.inf)),
        "dark_ge_flat_pixels": int(bad.dark_ge_flat),
        "nonfinite_flat_dark_values": int(np.sum(bad.flats) + np.sum(bad.darks)),
        "repaired_values": int(np.sum(bad.repaired)),
    }


def _which(counts: np.ndarray, what: str) -> str:
    """``16 NaN in 1 projection (17)``; at most three indices named."""
    hit = np.flatnonzero(counts)
    named = ", ".join(str(int(i)) for i in hit[:3]) + (", …" if hit.size > 3 else "")
    plural = "s" if hit.size > 1 else ""
    return f"{int(counts.sum())} {what} in {hit.size} projection{plural} ({named})"


def describe_bad_pixels(bad: BadPixels) -> str:
    """One line on the bad pixels found and repaired; '' when there are none."""
    parts = [
        _which(np.asarray(counts), what)
        for counts, what in ((bad.nan, "NaN"), (bad.inf, "±Inf"))
        if np.any(counts)
    ]
    if bad.dark_ge_flat:
        parts.append(f"{int(bad.dark_ge_flat)} detector pixels with mean dark ≥ mean flat")
    n_frames = int(np.sum(bad.flats) + np.sum(bad.darks))
    if n_frames:
        parts.append(f"{n_frames} non-finite flat or dark values left out of the means")
    if not parts:
        return ""
    return "bad pixels repaired from their neighbours: " + ", ".join(parts)


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    parameters = stage.arguments(campaign, sample)
    inputs = campaign.registry.upstream(group, stage, sample)

    def build() -> Work:
        projections = open_volume(group, sample.id, "projections")
        flats = open_volume(group, sample.id, "flats").data
        darks = open_volume(group, sample.id, "darks").data
        prepared = prepare(projections.data, flats, darks, **parameters)
        # One pass over the projections, before any output is created: a scan
        # with too many bad pixels is refused by name and nothing is overwritten.
        (bad,) = dask.compute(prepared.bad)
        source = _source(projections.attrs, campaign, sample)
        check_bad_pixels(bad, parameters["max_bad_fraction"], source)
        attrs = {
            "angles_rad": projections.attrs["angles_rad"],
            "bad_pixels": bad_pixel_record(bad),
        }
        totals = {key: da.from_array(np.int64(n)) for key, n in bad_pixel_totals(bad).items()}
        return Work(
            outputs=[Output("sinograms", prepared.data, "sinograms", attrs)],
            extras={"clipped_values": prepared.clipped, **totals},
            detail=describe_bad_pixels(bad),
        )

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)


#: Peak bytes of a task per detector value of its block of projections: the
#: counts, the float32 transmission and attenuation, the bad-pixel masks and
#: the repair's copy.
BYTES_PER_VALUE = 14.5


def peak_bytes(block_shape: tuple[int, ...], parameters: Mapping[str, Any]) -> float:
    """Peak memory of preparing one block of projections, bytes.

    Parameters
    ----------
    block_shape : (angles, rows, columns)
        The projections one task normalises, repairs and filters.
    parameters : mapping
        The stage's keywords (the median's window adds its halo to the block
        before this is called).
    """
    return BYTES_PER_VALUE * math.prod(block_shape)
