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

Flags on the whole volume (measure_gaps, prior above, 64 rays of at most 10
voxels, particles of at least 27 voxels): unsplit, 70 objects of which the
network spans the box and is oversized (not measured); split, 1188 particles,
none spanning, 7 oversized, 7 with few rays, 1174 measured.
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


def test_the_network_is_flagged_whole_and_measured_split(active: np.ndarray) -> None:
    """Unsplit, the active network is one object from face to face: flagged, not
    measured. Split with the prior, no particle spans the box and the gaps are measured
    (the CBD, value 170, stands in for the binder; the active phase for silicon)."""
    from debond.pipeline.measure import measure_gaps
    from debond.pipeline.segment import CBD, PORE, SILICON

    folder = Path(os.environ["DEBOND_REAL_DATA"])
    tifffile = pytest.importorskip("tifffile")
    raw = np.asarray(tifffile.imread(folder / "electrode.tiff"))[:128, :128, :128]
    phases = np.select([raw == 85, raw == 170], [SILICON, CBD], PORE).astype(np.uint8)
    mask = raw == 85
    kw: dict[str, Any] = {"voxel_size_um": 1.0, "max_ray_length_um": 10.0, "n_rays": 64}
    for prior, spanning in ((None, True), (PRIOR, False)):
        found = label(
            da.from_array(mask, chunks=64),
            min_volume_voxels=27,
            radius_range_um=prior,
            voxel_size_um=1.0,
        )
        table = measure_gaps(phases, found.labels, radius_range_um=PRIOR, **kw)
        flagged = table[table["spans_box"]]
        assert flagged.empty != spanning
        assert flagged["gap_mean_um"].isna().all() and (flagged["n_rays"] == 0).all()
        assert (flagged["radius_um"] > 0).all()
        print(
            f"electrode.tiff 128³, prior {prior}: {len(table)} particles, "
            f"{int(table['spans_box'].sum())} spanning, {int(table['oversized'].sum())} "
            f"oversized, {int(table['few_rays'].sum())} with few rays"
        )
    assert table["gap_mean_um"].notna().mean() > 0.9
