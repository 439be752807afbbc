"""``recon``: rotation centre and ASTRA reconstruction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr

from debond.pipeline.recon import reconstruct_sinograms
from debond.sections import Section, param
from debond.stages.base import Output, Plan, Stage, Work
from debond.storage import default_chunks, open_volume

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample


class Parameters(Section):
    """``[recon]``: rotation centre and ASTRA reconstruction (:func:`reconstruct_sinograms`)."""

    centre_search_radius_px: float | None = param(
        None,
        "How far from the detector centre the rotation-centre search looks "
        "(default: a quarter of the detector width).",
        "px",
        ge=0.5,
    )
    algorithm: Literal["auto", "fbp", "sirt", "cgls"] = param(
        "auto",
        "ASTRA algorithm (CUDA variant where a GPU is present); auto: SIRT where "
        "every worker has a CUDA GPU, FBP on CPU-only workers (CPU SIRT takes hours).",
    )
    iterations: int = param(1000, "Iterations of SIRT or CGLS (the paper: 1000).", ge=1)
    nonnegative: bool = param(True, "Clip negative attenuation during SIRT.")
    fbp_filter: Literal["ram-lak", "shepp-logan", "cosine", "hamming", "hann"] = param(
        "ram-lak", "Filter of FBP."
    )
    slab_rows: int = param(
        8,
        "Sinogram rows reconstructed together in one task (one GPU call); also the depth "
        "of the stored recon's chunks (at most 128), so each is written from one task.",
        "rows",
        ge=1,
    )


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    parameters = stage.arguments(campaign, sample)
    inputs = campaign.registry.upstream(group, stage, sample)

    def build() -> Work:
        sinograms = open_volume(group, sample.id, "sinograms")
        angles = np.asarray(sinograms.attrs["angles_rad"], dtype=np.float64)
        result = reconstruct_sinograms(sinograms.data, angles, **parameters)
        attrs = {
            "rotation_centre_px": result.centre_px,
            "rotation_centre_source": result.centre_source,
            # what every block runs ("auto" resolved), not what was asked for
            "algorithm": result.algorithm,
            "algorithm_requested": parameters["algorithm"],
            "device": result.device,
            "units": "1/µm",
        }
        if result.estimate is not None:
            attrs["estimated_seconds"] = round(result.estimate.seconds, 1)
        return Work(
            outputs=[
                Output(
                    "recon",
                    result.volume,
                    "volume",
                    attrs,
                    chunks=slab_chunks(result.volume.shape, parameters["slab_rows"]),
                )
            ],
            detail=result.detail,
        )

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)


def slab_chunks(shape: tuple[int, ...], slab_rows: int) -> tuple[int, int, int]:
    """Stored chunks of ``recon``: the volume's cubes in y and x, one slab deep.

    A task reconstructs whole slices, ``slab_rows`` of them. Stored in cubes,
    every chunk would wait for the slabs of all its slices, and a worker would
    hold whole slices as deep as a cube (512 MiB at 1024² float32); a chunk
    as deep as a slab (at most a cube) is written from one task's slices.

    Examples
    --------
    >>> slab_chunks((1024, 1024, 1024), 8)
    (8, 128, 128)
    >>> slab_chunks((40, 64, 64), 300)
    (40, 64, 64)
    """
    cube = default_chunks(shape, "volume", np.float32)
    return min(slab_rows, cube[0]), cube[1], cube[2]


#: Peak bytes of a task per sinogram value (its float32 copy, less what is
#: freed slice by slice; measured with tracemalloc, tests/test_memory.py) ...
BYTES_PER_SINOGRAM_VALUE = 3.2
#: ... and per voxel of the slices it reconstructs (the float32 slices and
#: their stacked result) ...
BYTES_PER_VOXEL = 9.4
#: ... and, once a task, per value of the one sinogram moved to the detector
#: centre at a time (FBP's Fourier shift: the values padded to three times
#: the width, and their spectra). The shift alone peaks at 37–46 bytes a
#: value; part of it reuses what the slices' term counts.
BYTES_PER_SHIFTED_VALUE = 30.0


def peak_bytes(block_shape: tuple[int, ...], parameters: Mapping[str, Any]) -> float:
    """Peak memory of reconstructing one slab of sinograms, bytes.

    Parameters
    ----------
    block_shape : (rows, angles, columns)
        The sinograms of one task (``slab_rows`` rows); the slices it makes
        are (rows, columns, columns).
    parameters : mapping
        The stage's keywords.
    """
    rows, angles, columns = block_shape
    return (
        BYTES_PER_SINOGRAM_VALUE * rows * angles * columns
        + BYTES_PER_VOXEL * rows * columns * columns
        + BYTES_PER_SHIFTED_VALUE * angles * columns
    )
