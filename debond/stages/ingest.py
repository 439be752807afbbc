"""``ingest``: raw projections, flats, darks and angles into the store."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import zarr

from debond.pipeline.ingest import read_projections
from debond.sections import Section, param
from debond.stages.base import Output, Plan, Stage, Work

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample


class Parameters(Section):
    """``[ingest]``: raw projections, flats, darks and angles (:mod:`debond.pipeline.ingest`)."""

    angles_per_chunk: int | None = param(
        None,
        "Projections per chunk (default: as many whole frames as fit in 16 MiB).",
        "projections",
        ge=1,
    )
    tiff_projections: str = param(
        "proj_*.tif", "In a TIFF-stack folder: glob of the projections (natural order)."
    )
    tiff_flats: str = param("flat_*.tif", "In a TIFF-stack folder: glob of the flat fields.")
    tiff_darks: str = param("dark_*.tif", "In a TIFF-stack folder: glob of the dark fields.")
    tiff_theta_file: str = param(
        "theta.txt", "In a TIFF-stack folder: file of the angles, one per projection, in degrees."
    )


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    txm = sample.txm
    if txm is None:  # raw stages run only for samples with txm
        raise ValueError(f"{sample.where} has no txm to ingest")
    parameters = stage.arguments(campaign, sample)

    def build() -> Work:
        raw = read_projections(txm, **parameters)
        attrs = {
            "angles_rad": raw.theta_rad.tolist(),
            "source": str(raw.source),
            "layout": raw.layout,
            "detector_rows": list(raw.rows),
        }
        n_angles, n_rows, n_columns = raw.data.shape
        return Work(
            outputs=[
                Output("flats", raw.flats, "projections"),
                Output("darks", raw.darks, "projections"),
                Output("projections", raw.data, "projections", attrs),
            ],
            detail=f"{n_angles} projections of {n_rows} × {n_columns} px ({raw.layout})",
        )

    return Plan(stage, campaign, sample, parameters, {"raw": txm}, build)


#: Peak bytes of a task per value of its block: the stored values read from
#: the file (2 bytes for uint16 frames) and their float32 copy, with h5py's buffer.
BYTES_PER_VALUE = 10.0


def peak_bytes(block_shape: tuple[int, ...], parameters: Mapping[str, Any]) -> float:
    """Peak memory of reading one chunk of projections, bytes.

    Parameters
    ----------
    block_shape : (angles, rows, columns)
        One chunk of the projections (``angles_per_chunk`` whole frames).
    parameters : mapping
        The stage's keywords (unused: the cost is the chunk's).
    """
    return BYTES_PER_VALUE * math.prod(block_shape)
