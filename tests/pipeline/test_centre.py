"""Rotation centre: Vo's method against the synthetic truth, exact projections, and
(on tooth.h5) an independent estimate from a scan of reconstructions."""

from __future__ import annotations

import json
from pathlib import Path

import astra
import dask.array as da
import numpy as np
import pytest

from debond.pipeline.centre import find_centre, resolve_centre
from debond.pipeline.recon import reconstruct_block
from debond.storage import open_volume
from debond.synth import attenuation, project, projection_geometry
from tests.pipeline.references import normalised

SAMPLES = ("c00", "c01", "c03", "c10")


@pytest.fixture(scope="module")
def slices(small_campaign: Path) -> np.ndarray:
    """Line-integral densities (voxel units) of eight true slices of sample c03."""
    phases = open_volume(small_campaign / "truth" / "phases.zarr", "c03", "phases")
    n = phases.shape[-1]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    pillar = np.hypot(y, x) <= 0.45 * (n - 1)
    voxel = float(phases.attrs["voxel_size_um"])
    return attenuation(phases[20:28].values, pillar) * np.float32(voxel)


@pytest.mark.parametrize("sample", SAMPLES)
def test_synthetic_centre_within_a_quarter_pixel(small_campaign: Path, sample: str) -> None:
    sinograms, angles = normalised(small_campaign / "raw" / f"{sample}.h5")
    truth = json.loads((small_campaign / "truth" / "parameters.json").read_text())
    found = find_centre(da.from_array(sinograms, chunks=(8, -1, -1)), angles)
    assert abs(found - truth["rotation_centre_px"][sample]) <= 0.25


@pytest.mark.parametrize("shift", [-2.6, -0.5, 0.0, 0.25, 1.37, 4.13])
def test_exact_projections_give_the_centre_to_a_tenth_of_a_pixel(
    slices: np.ndarray, shift: float
) -> None:
    """No grid bias: noiseless ASTRA projections at sub-pixel axis offsets."""
    n_columns = slices.shape[-1]
    sinograms = project(slices, projection_geometry(90, n_columns, shift)).transpose(1, 0, 2)
    angles = np.linspace(0.0, np.pi, 90, endpoint=False)
    assert find_centre(sinograms, angles) == pytest.approx((n_columns - 1) / 2 + shift, abs=0.1)


def test_angle_order_and_range(slices: np.ndarray) -> None:
    """Shuffled angles, [0, π] with both ends and a full turn all give the same centre."""
    n_columns, shift = slices.shape[-1], 1.37
    centre = (n_columns - 1) / 2 + shift

    def sinograms_at(angles: np.ndarray) -> np.ndarray:
        # synth.projection_geometry's vectors at arbitrary angles.
        u = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        ray = np.stack([np.sin(angles), -np.cos(angles)], axis=1)
        vectors = np.concatenate([ray, -shift * u, u], axis=1)
        geometry = astra.create_proj_geom("parallel_vec", n_columns, vectors)
        return project(slices[:3], geometry).transpose(1, 0, 2)

    half = np.linspace(0.0, np.pi, 90, endpoint=False)
    order = np.random.default_rng(0).permutation(90)
    assert find_centre(sinograms_at(half)[:, order], half[order]) == pytest.approx(centre, abs=0.1)
    both_ends = np.linspace(0.0, np.pi, 91)
    assert find_centre(sinograms_at(both_ends), both_ends) == pytest.approx(centre, abs=0.1)
    full = np.linspace(0.0, 2 * np.pi, 180, endpoint=False) + 0.3
    assert find_centre(sinograms_at(full), full) == pytest.approx(centre, abs=0.1)


def negativity_scan(
    sinograms: np.ndarray, angles: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Summed negative values of FBP slices at each candidate centre (lower is better)."""
    n = sinograms.shape[-1]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    disc = np.hypot(y, x) <= 0.45 * n
    scores = []
    for centre in candidates:
        slices = reconstruct_block(
            sinograms, angles, float(centre), algorithm="fbp", voxel_size_um=1.0
        )
        inside = slices[:, disc]
        scores.append(-inside[inside < 0].sum())
    return np.asarray(scores)


def test_tooth_centre_agrees_with_a_reconstruction_scan(
    tooth: tuple[np.ndarray, np.ndarray],
) -> None:
    """tooth.h5: Vo's centre within 1 px of an independent estimate.

    The independent estimate is the centre whose FBP slice (first row) has the
    least negative mass (the "negativity" criterion: a wrong centre smears
    edges into arcs with undershoots), scanned in 0.25 px steps over ±2 px. It
    shares no code with Vo's Fourier metric.
    """
    sinograms, angles = tooth
    assert sinograms.shape == (2, 181, 640)
    found = find_centre(sinograms, angles)
    candidates = found + np.arange(-2.0, 2.001, 0.25)
    scores = negativity_scan(sinograms[:1], angles, candidates)
    best = int(np.argmin(scores))
    assert 0 < best < candidates.size - 1, "the scan's minimum is on its border"
    assert abs(candidates[best] - found) <= 1.0
    # The axis is well off the detector centre (319.5): the estimate is not a default.
    assert abs(found - 319.5) > 10


def test_synthetic_scan_agrees_with_the_truth(small_campaign: Path) -> None:
    """The independent estimate used on tooth.h5 also finds the synthetic truth."""
    sinograms, angles = normalised(small_campaign / "raw" / "c03.h5")
    truth = json.loads((small_campaign / "truth" / "parameters.json").read_text())
    centre = truth["rotation_centre_px"]["c03"]
    candidates = centre + np.arange(-1.0, 1.001, 0.125)
    scores = negativity_scan(sinograms[8:40], angles, candidates)
    assert abs(candidates[int(np.argmin(scores))] - centre) <= 0.25


def test_only_the_chosen_rows_are_read() -> None:
    """A Dask stack is computed for the rows used only (nothing scales with the volume)."""
    n_columns, shift = 48, -0.75
    angles = np.linspace(0.0, np.pi, 60, endpoint=False)
    rng = np.random.default_rng(1)
    points = rng.uniform(-15, 15, (6, 2))
    columns = np.arange(n_columns)
    trace = (n_columns - 1) / 2 + shift
    row = sum(
        np.exp(
            -0.5
            * (
                (
                    columns[None, :]
                    - trace
                    - px * np.cos(angles)[:, None]
                    - py * np.sin(angles)[:, None]
                )
                / 1.2
            )
            ** 2
        )
        for py, px in points
    )

    def block(block_info: dict[object, dict[str, list[tuple[int, int]]]]) -> np.ndarray:
        (start, stop), *_ = block_info[None]["array-location"]
        if start >= 2:
            raise AssertionError("a row that was not asked for was read")
        return np.broadcast_to(row, (stop - start, *row.shape)).astype(np.float32)

    stack = da.map_blocks(
        block, chunks=((1,) * 100, (60,), (n_columns,)), dtype=np.float32, meta=np.empty((0, 0, 0))
    )
    assert find_centre(stack, angles, rows=[0, 1]) == pytest.approx(trace, abs=0.05)


def test_resolve_centre_prefers_the_manual_value() -> None:
    angles = np.linspace(0.0, np.pi, 30, endpoint=False)

    def unreadable(block: np.ndarray) -> np.ndarray:
        raise AssertionError("sinograms were read although a manual centre was given")

    stack = da.zeros((4, 30, 64), chunks=(1, 30, 64)).map_blocks(unreadable, dtype=np.float64)
    assert resolve_centre(31.25, stack, angles) == 31.25
    assert isinstance(resolve_centre(np.float32(12), stack, angles), float)
    with pytest.raises(ValueError, match="manual centre 80.0 px is off the detector"):
        resolve_centre(80.0, stack, angles)
    with pytest.raises(ValueError, match="manual centre"):
        resolve_centre(float("nan"), stack, angles)
    with pytest.raises(ValueError, match="manual centre must be a number"):
        resolve_centre("31", stack, angles)  # type: ignore[arg-type]


def test_resolve_centre_estimates_without_a_manual_value(slices: np.ndarray) -> None:
    sinograms = project(slices[:2], projection_geometry(90, 64, 0.8)).transpose(1, 0, 2)
    angles = np.linspace(0.0, np.pi, 90, endpoint=False)
    assert resolve_centre(None, sinograms, angles) == pytest.approx(32.3, abs=0.1)


@pytest.mark.parametrize(
    ("sinograms", "angles", "match"),
    [
        (np.zeros((30, 64)), np.linspace(0, np.pi, 30, endpoint=False), "must be 3D"),
        (np.zeros((1, 30, 64)), np.linspace(0, np.pi, 29, endpoint=False), "one angle per"),
        (np.zeros((1, 30, 64)), np.linspace(0, 180, 30, endpoint=False), "in radians"),
        (np.zeros((1, 30, 64)), np.linspace(0, np.pi / 2, 30, endpoint=False), "half turn"),
        (np.zeros((1, 30, 64)), np.full(30, np.nan), "angles must be finite"),
    ],
)
def test_bad_input_is_named(sinograms: np.ndarray, angles: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        find_centre(sinograms, angles)


def test_bad_options_are_named() -> None:
    sinograms = np.zeros((3, 30, 64))
    angles = np.linspace(0, np.pi, 30, endpoint=False)
    with pytest.raises(ValueError, match="rows must be row indices"):
        find_centre(sinograms, angles, rows=[5])
    with pytest.raises(ValueError, match="search_radius_px"):
        find_centre(sinograms, angles, search_radius_px=0.0)
    with pytest.raises(ValueError, match="object_radius_px"):
        find_centre(sinograms, angles, object_radius_px=-1.0)
