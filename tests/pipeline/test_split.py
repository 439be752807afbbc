"""Splitting touching particles against a peer: PoreSpy's SNOW partition on real data.

electrode.tiff (DEBOND_REAL_DATA) is a segmented NMC cathode: its active phase
(value 85) is one percolating network of touching particles (121 connected
components, one of them 6.5 million voxels). PoreSpy's ``networks.snow2``
partitions it into particles with a distance-transform watershed of its own
(Gostick 2017, Phys. Rev. E 96, 023307); ``label(split_touching=True)`` must
find about as many particles of about the same size.

Units: the file records no voxel size, so both run at a voxel of 1 (µm here,
voxels for snow2). Size prior: ``radius_range_um = (2, 20)`` voxels. The lower
bound is the smallest inscribed radius of a distinct particle: the local maxima
of the active phase's distance transform (its inscribed-sphere radii) have
their 10th percentile at 2.2 voxels, below which they are surface roughness;
the upper bound lies above the largest inscribed radius (16.9 voxels). Only the
lower bound acts on labelling.

Figures on the whole 256³ volume (2 shared cores): debond 1239 particles,
median equivalent radius 9.30 voxels, in 135 s; snow2 1380 particles, median
8.93 voxels, in 94 s (see the printed line of the slow case). The default run
uses the first 128³ voxels (crop at the origin for both): debond 199, snow2 216.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest

from debond.pipeline.label import label

#: Size prior for electrode.tiff, voxels (see the module docstring).
PRIOR = (2.0, 20.0)


@pytest.fixture(scope="module")
def active() -> np.ndarray:
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "electrode.tiff").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no electrode.tiff")
    tifffile = pytest.importorskip("tifffile")
    volume = np.asarray(tifffile.imread(Path(folder) / "electrode.tiff"))
    assert volume.shape == (256, 256, 256) and volume.dtype == np.uint8
    return volume == 85


def figures(labels: np.ndarray) -> tuple[int, float]:
    """Particle count and median equivalent radius (voxels) of a label volume."""
    volumes = np.bincount(labels.ravel())[1:]
    volumes = volumes[volumes > 0]
    return len(volumes), float(np.median(np.cbrt(3 * volumes / (4 * np.pi))))


@pytest.mark.parametrize("side", [128, pytest.param(256, marks=pytest.mark.slow)])
def test_split_agrees_with_snow2_on_the_electrode(
    active: np.ndarray, side: int, record_property: Any
) -> None:
    porespy = pytest.importorskip("porespy")
    mask = np.ascontiguousarray(active[:side, :side, :side])

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PoreSpy's own deprecations and progress notes
        snow = porespy.networks.snow2(mask.astype(np.uint8), boundary_width=0, voxel_size=1)
    snow_seconds = time.perf_counter() - start
    snow_count, snow_radius = figures(np.asarray(snow.regions) * mask)

    start = time.perf_counter()
    result = label(da.from_array(mask, chunks=64), radius_range_um=PRIOR, voxel_size_um=1.0)
    ours = result.labels.compute()
    our_seconds = time.perf_counter() - start
    our_count, our_radius = figures(ours)
    assert our_count == result.count

    line = (
        f"electrode.tiff active phase {side}³: debond {our_count} particles, median radius "
        f"{our_radius:.2f} vox, {our_seconds:.0f} s ({result.components} components, "
        f"{result.split} split); snow2 {snow_count} particles, median radius "
        f"{snow_radius:.2f} vox, {snow_seconds:.0f} s"
    )
    print(line)
    record_property("split_vs_snow2", line)
    assert our_count == pytest.approx(snow_count, rel=0.15), line
    assert our_radius == pytest.approx(snow_radius, rel=0.10), line
