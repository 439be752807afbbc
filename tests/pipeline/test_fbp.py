"""The array-module FBP (NumPy here, CuPy on GPU workers) against ASTRA called directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from debond.pipeline import arrays
from debond.pipeline.centre import find_centre
from debond.pipeline.fbp import FILTERS, fbp, filter_sinograms
from debond.pipeline.recon import reconstruct_block, truncated
from tests.pipeline.references import normalised
from tests.pipeline.test_recon import VOXEL_UM, astra_loop

needs_cupy = pytest.mark.skipif(not arrays.cuda_available(), reason="no CuPy with a CUDA device")


def _inside(n: int, margin: float = 2.0) -> np.ndarray:
    """The reconstruction circle, less a margin (voxels): where FBP is defined."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    return np.hypot(y, x) < n / 2 - margin


#: Correlation with ASTRA's CPU FBP. The two back-project differently (voxel-driven
#: linear interpolation here, ASTRA's line projector there), which differs at the
#: highest frequencies by about 4.6 % in norm on tooth.h5: as much as ASTRA's own
#: CPU and CUDA FBP are allowed to differ in test_recon.py (5e-2).
AGAINST_ASTRA = 0.998


def _agreement(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Correlation and least-squares scale of ``ours`` on ``reference``, inside the circle."""
    inside = _inside(ours.shape[-1])
    a, b = ours[..., inside].ravel(), reference[..., inside].ravel()
    return float(np.corrcoef(a, b)[0, 1]), float(a @ b / (b @ b))


@pytest.fixture(scope="module")
def synthetic(small_campaign: Path) -> tuple[np.ndarray, np.ndarray, float]:
    sinograms, angles = normalised(small_campaign / "raw" / "c00.h5")
    truth = json.loads((small_campaign / "truth" / "parameters.json").read_text())
    return sinograms[20:23], angles, float(truth["rotation_centre_px"]["c00"])


@pytest.mark.parametrize("fbp_filter", FILTERS)
def test_equals_astra_fbp_on_the_synthetic_scan(
    synthetic: tuple[np.ndarray, np.ndarray, float], fbp_filter: str
) -> None:
    sinograms, angles, centre = synthetic
    expected = astra_loop(sinograms, angles, centre, "fbp", 1, fbp_filter=fbp_filter) * VOXEL_UM
    correlation, scale = _agreement(fbp(sinograms, angles, centre, fbp_filter=fbp_filter), expected)
    assert correlation >= AGAINST_ASTRA
    assert scale == pytest.approx(1.0, abs=0.01)


def test_equals_astra_fbp_on_the_tooth_off_centre(tooth: tuple[np.ndarray, np.ndarray]) -> None:
    """Real data (tooth.h5), its axis 23.6 columns off the detector's middle."""
    sinograms, angles = tooth
    centre = find_centre(sinograms, angles)
    expected = astra_loop(sinograms, angles, centre, "fbp", 1) * VOXEL_UM
    correlation, scale = _agreement(fbp(sinograms, angles, centre), expected)
    assert correlation >= AGAINST_ASTRA
    assert scale == pytest.approx(1.0, abs=0.01)


def test_a_disc_comes_back_at_its_attenuation() -> None:
    """Analytic: a disc of radius r has chord 2√(r² − t²) at detector offset t."""
    n, radius, mu = 65, 12.0, 0.05
    angles = np.linspace(0, np.pi, 180, endpoint=False)
    t = np.arange(n) - (n - 1) / 2
    chord = 2 * np.sqrt(np.clip(radius**2 - t**2, 0, None))
    sinograms = np.broadcast_to(mu * chord, (1, angles.size, n)).astype(np.float32)
    volume = fbp(sinograms, angles, (n - 1) / 2)[0]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    assert np.median(volume[np.hypot(y, x) < radius - 3]) == pytest.approx(mu, rel=0.02)
    assert np.abs(volume[np.hypot(y, x) > radius + 3]).max() < 0.1 * mu


def test_the_centre_shift_moves_the_filtered_rows_exactly() -> None:
    """The phase ramp equals filtering the row moved by whole columns."""
    row = np.random.default_rng(0).normal(size=(1, 4, 40)).astype(np.float32)
    row[..., :6] = row[..., -6:] = 0  # room to move without leaving the detector
    moved = filter_sinograms(row, shift=3.0)[..., 6:-6]
    expected = filter_sinograms(np.roll(row, -3, axis=-1))[..., 6:-6]
    np.testing.assert_allclose(moved, expected, atol=1e-5)


def test_numpy_in_numpy_out() -> None:
    sinograms = np.zeros((2, 10, 16), np.float32)
    result = fbp(sinograms, np.linspace(0, np.pi, 10, endpoint=False), 7.5, shape_yx=(12, 14))
    assert type(result) is np.ndarray and result.shape == (2, 12, 14)
    assert result.dtype == np.float32
    with pytest.raises(ValueError, match="fbp_filter must be one of ram-lak"):
        fbp(sinograms, np.zeros(10), 7.5, fbp_filter="ramp")


def _truncated_scan() -> tuple[np.ndarray, np.ndarray, float]:
    """Local tomography: a 96-px disc seen by a 48-px detector (analytic chords)."""
    n_full, n_seen = 96, 48
    angles = np.linspace(0, np.pi, 120, endpoint=False)
    t = np.arange(n_full) - (n_full - 1) / 2
    full = 0.02 * 2 * np.sqrt(np.clip(44.0**2 - t**2, 0, None))
    crop = slice((n_full - n_seen) // 2, (n_full + n_seen) // 2)
    seen = np.broadcast_to(full[crop], (angles.size, n_seen))
    return np.ascontiguousarray(seen[None], dtype=np.float32), angles, (n_seen - 1) / 2


def test_a_widened_detector_does_what_the_cpu_path_does_on_a_truncated_scan() -> None:
    """widen_px as recon's CPU FBP (ASTRA on a widened detector) for local tomography:
    the disc's uniform 0.02 comes back as flat, and without widening it does not.
    (The image is flat, so its error, not a correlation, is compared.)"""
    sinograms, angles, centre = _truncated_scan()
    assert truncated(sinograms[0])
    inside = _inside(sinograms.shape[-1])

    def spread(image: np.ndarray) -> float:
        """Mean error about its median (local tomography cannot recover the offset)."""
        error = image[0][inside] - 0.02
        return float(np.abs(error - np.median(error)).mean())

    cpu = reconstruct_block(sinograms, angles, centre, algorithm="fbp", voxel_size_um=1.0)
    widened = fbp(sinograms, angles, centre, widen_px=sinograms.shape[-1] // 2)
    assert spread(widened) <= 1.1 * spread(cpu)
    assert float(np.median(widened[0][inside])) == pytest.approx(
        float(np.median(cpu[0][inside])), rel=0.02
    )
    assert spread(fbp(sinograms, angles, centre)) > 3 * spread(cpu)


@pytest.mark.gpu
@needs_cupy
def test_recon_runs_fbp_on_cupy_blocks_and_stays_on_the_device(
    synthetic: tuple[np.ndarray, np.ndarray, float],
) -> None:
    """reconstruct_block on a CuPy block: this module's FBP on the device, truncated
    rows widened, equal to the same FBP on NumPy."""
    import cupy

    for (sinograms, angles, centre), widen in ((synthetic, 0), (_truncated_scan(), 24)):
        options = {"algorithm": "fbp", "voxel_size_um": VOXEL_UM, "gpu": False}
        on_gpu = reconstruct_block(cupy.asarray(sinograms), angles, centre, **options)
        assert isinstance(on_gpu, cupy.ndarray)
        expected = fbp(sinograms, angles, centre, widen_px=widen) / np.float32(VOXEL_UM)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(arrays.to_numpy(on_gpu), expected, atol=1e-4 * scale)


@pytest.mark.gpu
@needs_cupy
def test_cupy_equals_numpy(synthetic: tuple[np.ndarray, np.ndarray, float]) -> None:
    import cupy

    sinograms, angles, centre = synthetic
    on_gpu = fbp(cupy.asarray(sinograms), angles, centre)
    assert isinstance(on_gpu, cupy.ndarray)
    correlation, scale = _agreement(arrays.to_numpy(on_gpu), fbp(sinograms, angles, centre))
    assert correlation >= 0.999999 and scale == pytest.approx(1.0, abs=1e-4)
