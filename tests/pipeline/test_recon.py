"""Reconstruction: the lazy stage against ASTRA called directly, sub-pixel centres,
the synthetic truth, tooth.h5, and errors that name the argument."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import astra
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage
from scipy.fft import next_fast_len

from debond.pipeline.centre import find_centre
from debond.pipeline.recon import ALGORITHMS, reconstruct, reconstruct_block
from debond.storage import open_volume
from debond.synth import (
    ATTENUATION_PER_UM,
    attenuation,
    project,
    projection_geometry,
)
from tests.helpers import raise_if_dask_computes
from tests.pipeline.references import normalised

VOXEL_UM = 0.06
ITERATIONS = {"fbp": 1, "sirt": 25, "cgls": 10}
CHUNKINGS = [(1,) * 6, (2, 2, 2), (3, 3), (4, 2), (6,), (1, 5)]

needs_cuda = pytest.mark.skipif(not astra.use_cuda(), reason="ASTRA finds no CUDA device")


# ----------------------------------------------------------------- references


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def vec_geometry(angles: np.ndarray, n_columns: int, centre: float) -> dict[str, Any]:
    """ASTRA parallel_vec with the axis at column ``centre`` (ASTRA's documented layout:
    ray, detector centre, detector u per angle)."""
    shift = centre - (n_columns - 1) / 2
    u = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ray = np.stack([np.sin(angles), -np.cos(angles)], axis=1)
    geometry: dict[str, Any] = astra.create_proj_geom(
        "parallel_vec", n_columns, np.concatenate([ray, -shift * u, u], axis=1)
    )
    return geometry


def fourier_shifted(sinograms: np.ndarray, shift: float) -> np.ndarray:
    """out[..., c] = in[..., c + shift] by scipy.ndimage.fourier_shift of the sinograms
    edge-padded by (columns + ⌈|shift|⌉) each side, the right side up to the next fast
    FFT length (the padding recon documents)."""
    n = sinograms.shape[-1]
    pad = n + math.ceil(abs(shift))
    right = next_fast_len(n + 2 * pad, real=True) - n - pad
    padded = np.pad(sinograms.astype(np.float64), [(0, 0), (0, 0), (pad, right)], mode="edge")
    moved = ndimage.fourier_shift(np.fft.fft(padded, axis=-1), (0, 0, -shift))
    return np.fft.ifft(moved, axis=-1).real[..., pad : pad + n].astype(np.float32)


def astra_loop(
    sinograms: np.ndarray,
    angles: np.ndarray,
    centre: float,
    algorithm: str,
    iterations: int,
    *,
    cuda: bool = False,
    fbp_filter: str | None = None,
) -> np.ndarray:
    """ASTRA called directly, one row at a time, result in 1/µm (÷ VOXEL_UM).

    ASTRA's CPU FBP takes only the plain ``parallel`` geometry, so its rows are
    first moved by the sub-pixel offset with scipy.ndimage.fourier_shift.
    """
    n_columns = sinograms.shape[-1]
    n = n_columns
    shift = centre - (n_columns - 1) / 2
    volume = astra.create_vol_geom(n, n)
    if algorithm == "fbp" and not cuda:
        rows = fourier_shifted(sinograms, shift) if shift else sinograms
        geometry = astra.create_proj_geom("parallel", 1.0, n_columns, angles)
    else:
        rows, geometry = sinograms, vec_geometry(angles, n_columns, centre)
    name = {"fbp": "FBP", "sirt": "SIRT", "cgls": "CGLS"}[algorithm] + ("_CUDA" if cuda else "")
    out = []
    for row in rows:
        sino_id = astra.data2d.create("-sino", geometry, row)
        rec_id = astra.data2d.create("-vol", volume, 0.0)
        config = astra.astra_dict(name)
        config["ProjectionDataId"], config["ReconstructionDataId"] = sino_id, rec_id
        projector = None
        if not cuda:
            projector = astra.create_projector("linear", geometry, volume)
            config["ProjectorId"] = projector
        if algorithm == "sirt":
            config["option"] = {"MinConstraint": 0.0}
        if fbp_filter is not None:
            config["option"] = {"FilterType": fbp_filter}
        algorithm_id = astra.algorithm.create(config)
        astra.algorithm.run(algorithm_id, iterations)
        out.append(astra.data2d.get(rec_id))
        astra.algorithm.delete(algorithm_id)
        astra.data2d.delete([sino_id, rec_id])
        if projector is not None:
            astra.projector.delete(projector)
    return np.stack(out).astype(np.float32) / np.float32(VOXEL_UM)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synthetic(small_campaign: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Six rows of sample c00: sinograms, angles (radians), the true centre."""
    sinograms, angles = normalised(small_campaign / "raw" / "c00.h5")
    truth = json.loads((small_campaign / "truth" / "parameters.json").read_text())
    return sinograms[20:26], angles, float(truth["rotation_centre_px"]["c00"])


@pytest.fixture(scope="module")
def references(synthetic: tuple[np.ndarray, np.ndarray, float]) -> dict[str, np.ndarray]:
    sinograms, angles, centre = synthetic
    return {a: astra_loop(sinograms, angles, centre, a, ITERATIONS[a]) for a in ALGORITHMS}


@pytest.fixture(scope="module")
def phantom(small_campaign: Path) -> np.ndarray:
    """Two true slices of c03 in 1/µm (0 outside the pillar)."""
    phases = open_volume(small_campaign / "truth" / "phases.zarr", "c03", "phases")
    n = phases.shape[-1]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    return attenuation(phases[22:24].values, np.hypot(y, x) <= 0.45 * (n - 1))


# ----------------------------------------------------------------- against ASTRA


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_equals_astra_called_directly(
    synthetic: tuple[np.ndarray, np.ndarray, float],
    references: dict[str, np.ndarray],
    algorithm: str,
    chunks: tuple[int, ...],
) -> None:
    """At the true sub-pixel centre (32.87 px), over several row chunkings."""
    sinograms, angles, centre = synthetic
    stack = da.from_array(sinograms, chunks=(chunks, 30, 32))  # angles/columns split too
    volume = reconstruct(
        stack,
        angles,
        centre,
        algorithm=algorithm,
        iterations=ITERATIONS[algorithm],
        voxel_size_um=VOXEL_UM,
        gpu=False,
    )
    assert volume.chunks == (chunks, (64,), (64,))
    result = volume.compute()
    assert result.dtype == np.float32
    assert relative_difference(result, references[algorithm]) <= 1e-5


@pytest.mark.parametrize("fbp_filter", ["shepp-logan", "hann"])
def test_fbp_filters_equal_astra_called_directly(
    synthetic: tuple[np.ndarray, np.ndarray, float],
    references: dict[str, np.ndarray],
    fbp_filter: str,
) -> None:
    sinograms, angles, centre = synthetic
    expected = astra_loop(sinograms, angles, centre, "fbp", 1, fbp_filter=fbp_filter)
    result = reconstruct_block(
        sinograms, angles, centre, algorithm="fbp", fbp_filter=fbp_filter, voxel_size_um=VOXEL_UM
    )
    assert relative_difference(result, expected) <= 1e-5
    # The filter is applied: a smoothing window changes the Ram-Lak result.
    assert relative_difference(result, references["fbp"]) > 1e-2


@pytest.mark.parametrize("centre", [31.5, 33.5, 29.5])
def test_fbp_at_whole_pixel_offsets_equals_plain_astra(
    synthetic: tuple[np.ndarray, np.ndarray, float], centre: float
) -> None:
    """No Fourier shift in the reference: ASTRA FBP on columns moved by whole pixels."""
    sinograms, angles, _ = synthetic
    shift = round(centre - 31.5)
    columns = np.clip(np.arange(64) + shift, 0, 63)
    geometry = astra.create_proj_geom("parallel", 1.0, 64, angles)
    volume = astra.create_vol_geom(64, 64)
    projector = astra.create_projector("linear", geometry, volume)
    expected = []
    for row in sinograms[:, :, columns]:
        sino_id = astra.data2d.create("-sino", geometry, row)
        rec_id = astra.data2d.create("-vol", volume, 0.0)
        config = astra.astra_dict("FBP")
        config.update(ProjectionDataId=sino_id, ReconstructionDataId=rec_id, ProjectorId=projector)
        algorithm_id = astra.algorithm.create(config)
        astra.algorithm.run(algorithm_id)
        expected.append(astra.data2d.get(rec_id) / VOXEL_UM)
        astra.algorithm.delete(algorithm_id)
        astra.data2d.delete([sino_id, rec_id])
    astra.projector.delete(projector)
    result = reconstruct_block(
        sinograms, angles, centre, algorithm="fbp", voxel_size_um=VOXEL_UM, gpu=False
    )
    # Columns that the edge fill of the whole-pixel move reaches differ slightly.
    assert relative_difference(result, np.stack(expected)) <= (1e-5 if shift == 0 else 1e-3)


@pytest.mark.parametrize(("algorithm", "iterations"), [("fbp", 1), ("sirt", 100)])
def test_the_sub_pixel_centre_is_applied(
    phantom: np.ndarray, algorithm: str, iterations: int
) -> None:
    """Exact projections with the axis at 32.87 px: the error is smallest at 32.87,
    not at the nearest half or whole pixel (nothing is rounded), for both the
    shifted-sinogram FBP and the shifted-geometry SIRT."""
    sinograms = project(phantom * np.float32(VOXEL_UM), projection_geometry(90, 64, 1.37))
    sinograms = sinograms.transpose(1, 0, 2)
    angles = np.linspace(0.0, np.pi, 90, endpoint=False)
    y, x = np.mgrid[:64, :64] - 31.5
    inside = np.hypot(y, x) <= 0.4 * 64

    def error(centre: float) -> float:
        slices = reconstruct_block(
            sinograms,
            angles,
            centre,
            algorithm=algorithm,
            iterations=iterations,
            voxel_size_um=VOXEL_UM,
            gpu=False,
        )
        return relative_difference(slices[:, inside], phantom[:, inside])

    at_truth = error(32.87)
    for other in (32.5, 33.0, 32.62, 33.12):
        assert at_truth < error(other)
    assert at_truth < (0.22 if algorithm == "fbp" else 0.18)


# ----------------------------------------------------------------- physics


def test_sirt_recovers_the_synthetic_attenuation(small_campaign: Path) -> None:
    """Eight rows of c00 at the centre found from the data, 200 SIRT iterations:
    Pearson ≥ 0.9 with the true attenuation (1/µm) inside a central disc of
    radius 0.4·columns, and the same mean."""
    sinograms, angles = normalised(small_campaign / "raw" / "c00.h5")
    centre = find_centre(sinograms, angles)
    rows = slice(16, 24)
    stack = da.from_array(sinograms[rows], chunks=(4, -1, -1))
    result = reconstruct(
        stack, angles, centre, algorithm="sirt", iterations=200, voxel_size_um=VOXEL_UM
    ).compute()
    phases = open_volume(small_campaign / "truth" / "phases.zarr", "c00", "phases")[rows].values
    table = np.zeros(max(ATTENUATION_PER_UM) + 1, dtype=np.float32)
    for code, value in ATTENUATION_PER_UM.items():
        table[code] = value
    truth = table[phases]
    n = sinograms.shape[-1]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    disc = np.hypot(y, x) <= 0.4 * n
    pearson = np.corrcoef(result[:, disc].ravel(), truth[:, disc].ravel())[0, 1]
    assert pearson >= 0.9
    assert result[:, disc].mean() == pytest.approx(truth[:, disc].mean(), rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["c00", "c10"])
def test_sirt_recovers_whole_synthetic_samples(small_campaign: Path, sample: str) -> None:
    """All 48 rows in chunks of 6, 300 SIRT iterations (about half a minute on 2 cores)."""
    sinograms, angles = normalised(small_campaign / "raw" / f"{sample}.h5")
    centre = find_centre(sinograms, angles)
    result = reconstruct(
        da.from_array(sinograms, chunks=(6, -1, -1)),
        angles,
        centre,
        iterations=300,
        voxel_size_um=VOXEL_UM,
    ).compute()
    phases = open_volume(small_campaign / "truth" / "phases.zarr", sample, "phases").values
    truth = np.zeros(phases.shape, dtype=np.float32)
    for code, value in ATTENUATION_PER_UM.items():
        truth[phases == code] = value
    n = sinograms.shape[-1]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    disc = np.hypot(y, x) <= 0.4 * n
    pearson = np.corrcoef(result[:, disc].ravel(), truth[:, disc].ravel())[0, 1]
    assert pearson >= 0.93


@pytest.mark.parametrize("algorithm", ["fbp", "sirt"])
def test_tooth_at_the_found_centre_equals_astra(
    tooth: tuple[np.ndarray, np.ndarray], algorithm: str
) -> None:
    """tooth.h5 (2 rows × 181 angles × 640 columns), reconstructed at Vo's centre
    (≈ 295.9 px, 23.6 px off the detector centre)."""
    sinograms, angles = tooth
    centre = find_centre(sinograms, angles)
    iterations = 2  # a CPU SIRT iteration on 640² takes about 0.3 s per row
    expected = astra_loop(sinograms, angles, centre, algorithm, iterations)
    for chunks in ((1, 1), (2,)) if algorithm == "fbp" else ((1, 1),):
        result = reconstruct(
            da.from_array(sinograms, chunks=(chunks, -1, -1)),
            angles,
            centre,
            algorithm=algorithm,
            iterations=iterations,
            voxel_size_um=VOXEL_UM,
            gpu=False,
        ).compute()
        assert relative_difference(result, expected) <= 1e-5


# ----------------------------------------------------------------- the wrapper


def test_reconstruct_is_lazy_and_typed(synthetic: tuple[np.ndarray, np.ndarray, float]) -> None:
    sinograms, angles, centre = synthetic
    with raise_if_dask_computes():
        volume = reconstruct(
            da.from_array(sinograms, chunks=(2, -1, -1)),
            angles,
            centre,
            iterations=5,
            voxel_size_um=VOXEL_UM,
            shape_yx=(40, 48),
        )
    assert volume.dtype == np.float32
    assert isinstance(volume._meta, np.ndarray) and volume._meta.dtype == np.float32
    assert volume.shape == (6, 40, 48)
    assert volume.chunks == ((2, 2, 2), (40,), (48,))
    block = volume.blocks[1].compute(scheduler="sync")
    assert block.shape == (2, 40, 48)


def test_keys_follow_the_parameters(synthetic: tuple[np.ndarray, np.ndarray, float]) -> None:
    """Same inputs and parameters, same keys; any change, new keys (two stages can share
    one graph)."""
    sinograms, angles, centre = synthetic
    stack = da.from_array(sinograms, chunks=(3, -1, -1))
    options: dict[str, Any] = {"iterations": 5, "voxel_size_um": VOXEL_UM}
    first = reconstruct(stack, angles, centre, **options)
    assert first.name == reconstruct(stack, angles, centre, **options).name
    assert first.name.startswith("reconstruct-")
    others = [
        reconstruct(stack, angles, centre + 0.01, **options),
        reconstruct(stack, angles, centre, algorithm="cgls", **options),
        reconstruct(stack, angles, centre, **{**options, "iterations": 6}),
        reconstruct(stack, angles + 0.01, centre, **options),
    ]
    assert len({first.name, *(o.name for o in others)}) == 5


def test_numpy_input_and_the_kernel_agree(synthetic: tuple[np.ndarray, np.ndarray, float]) -> None:
    sinograms, angles, centre = synthetic
    options = {"algorithm": "cgls", "iterations": 5, "voxel_size_um": VOXEL_UM, "gpu": False}
    lazy = reconstruct(sinograms.astype(np.float64), angles, centre, **options)  # type: ignore[arg-type]
    direct = reconstruct_block(sinograms, angles, centre, **options)  # type: ignore[arg-type]
    np.testing.assert_array_equal(lazy.compute(), direct)


def test_every_astra_object_is_freed(
    synthetic: tuple[np.ndarray, np.ndarray, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data, projectors and algorithms are deleted, also when ASTRA fails mid-block."""
    sinograms, angles, centre = synthetic
    live: dict[str, set[int]] = {"data2d": set(), "projector": set(), "algorithm": set()}

    def track(module: Any, kind: str) -> None:
        create, delete = module.create, module.delete

        def tracked_create(*args: Any, **kwargs: Any) -> int:
            object_id: int = create(*args, **kwargs)
            live[kind].add(object_id)
            return object_id

        def tracked_delete(ids: int | list[int]) -> None:
            for object_id in ids if isinstance(ids, list) else [ids]:
                live[kind].discard(object_id)
            delete(ids)

        monkeypatch.setattr(module, "create", tracked_create)
        monkeypatch.setattr(module, "delete", tracked_delete)

    track(astra.data2d, "data2d")
    track(astra.projector, "projector")
    track(astra.algorithm, "algorithm")
    for algorithm in ALGORITHMS:
        reconstruct_block(
            sinograms, angles, centre, algorithm=algorithm, iterations=2, voxel_size_um=1.0
        )
        assert live == {"data2d": set(), "projector": set(), "algorithm": set()}

    run = astra.algorithm.run
    calls = []

    def failing_run(algorithm_id: int, iterations: int = 1) -> None:
        calls.append(algorithm_id)
        if len(calls) == 3:
            raise RuntimeError("ASTRA failed")
        run(algorithm_id, iterations)

    monkeypatch.setattr(astra.algorithm, "run", failing_run)
    for algorithm in ALGORITHMS:
        calls.clear()
        with pytest.raises(RuntimeError, match="ASTRA failed"):
            reconstruct_block(
                sinograms, angles, centre, algorithm=algorithm, iterations=2, voxel_size_um=1.0
            )
        assert live == {"data2d": set(), "projector": set(), "algorithm": set()}


# ----------------------------------------------------------------- bad input


GOOD: dict[str, Any] = {"algorithm": "sirt", "iterations": 10, "voxel_size_um": 0.06}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"sinograms": np.zeros((30, 64))}, "sinograms must be 3D"),
        ({"sinograms": np.zeros((1, 2, 30, 64))}, "sinograms must be 3D"),
        ({"angles": np.zeros(29)}, "angles must be 1D with one angle per sinogram angle"),
        ({"angles": np.zeros((30, 1))}, "angles must be 1D"),
        ({"angles": np.full(30, np.inf)}, "angles must be finite"),
        ({"algorithm": "art"}, "algorithm must be one of 'auto', 'fbp', 'sirt', 'cgls'; got 'art'"),
        ({"iterations": 0}, "iterations must be ≥ 1; got 0"),
        ({"iterations": 2.5}, "iterations must be an integer"),
        ({"centre_px": 500.0}, r"centre_px = 500.0 is off the detector"),
        ({"centre_px": -3.0}, r"centre_px = -3.0 is off the detector"),
        ({"centre_px": float("nan")}, "centre_px"),
        ({"centre_px": "31"}, "centre_px must be a number"),
        ({"voxel_size_um": 0.0}, "voxel_size_um must be a positive number"),
        ({"voxel_size_um": None}, "voxel_size_um must be a positive number"),
        ({"gpu": "yes"}, "gpu must be True, False or None"),
        ({"fbp_filter": "lanczos"}, "fbp_filter must be one of 'ram-lak'"),
        ({"shape_yx": (64, 0)}, "shape_yx must be two positive integers"),
    ],
)
@pytest.mark.parametrize("function", [reconstruct, reconstruct_block])
def test_bad_input_names_the_argument(
    function: Callable[..., Any], change: dict[str, Any], match: str
) -> None:
    arguments: dict[str, Any] = {
        "sinograms": np.zeros((2, 30, 64), dtype=np.float32),
        "angles": np.linspace(0, np.pi, 30, endpoint=False),
        "centre_px": 31.5,
        **GOOD,
        **change,
    }
    with pytest.raises(ValueError, match=match):
        function(**arguments)


def test_the_wrapper_validates_before_any_work() -> None:
    def unreadable(block: np.ndarray) -> np.ndarray:
        raise AssertionError("sinograms were read")

    stack = da.zeros((4, 30, 64), chunks=(1, 30, 64)).map_blocks(unreadable, dtype=np.float64)
    with pytest.raises(ValueError, match="iterations"):
        reconstruct(stack, np.zeros(30), 31.5, iterations=-1, voxel_size_um=1.0)


@pytest.mark.skipif(astra.use_cuda(), reason="ASTRA finds a CUDA device here")
def test_gpu_true_without_cuda_says_so() -> None:
    with pytest.raises(RuntimeError, match="no CUDA device"):
        reconstruct_block(
            np.zeros((1, 30, 64), np.float32),
            np.linspace(0, np.pi, 30, endpoint=False),
            31.5,
            voxel_size_um=1.0,
            gpu=True,
        )


# ----------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cuda_rows_equal_astra_cuda_called_directly(
    synthetic: tuple[np.ndarray, np.ndarray, float], algorithm: str
) -> None:
    """One-row chunks: FBP_CUDA / SIRT_CUDA / CGLS_CUDA on the shifted parallel_vec."""
    sinograms, angles, centre = synthetic
    expected = astra_loop(sinograms, angles, centre, algorithm, ITERATIONS[algorithm], cuda=True)
    result = reconstruct(
        da.from_array(sinograms, chunks=(1, -1, -1)),
        angles,
        centre,
        algorithm=algorithm,
        iterations=ITERATIONS[algorithm],
        voxel_size_um=VOXEL_UM,
        gpu=True,
    ).compute()
    assert relative_difference(result, expected) <= 1e-5


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("algorithm", ["sirt", "cgls"])
def test_cuda_slab_matches_the_row_loop(
    synthetic: tuple[np.ndarray, np.ndarray, float], algorithm: str
) -> None:
    """SIRT3D_CUDA / CGLS3D_CUDA over a 6-row slab solve the same per-row problems as
    the 2D CUDA loop (ASTRA's 2D and 3D kernels differ slightly)."""
    sinograms, angles, centre = synthetic
    expected = astra_loop(sinograms, angles, centre, algorithm, 50, cuda=True)
    slab = reconstruct_block(
        sinograms,
        angles,
        centre,
        algorithm=algorithm,
        iterations=50,
        voxel_size_um=VOXEL_UM,
        gpu=True,
    )
    assert relative_difference(slab, expected) <= 2e-2


@pytest.mark.gpu
@needs_cuda
def test_cuda_and_cpu_fbp_agree(synthetic: tuple[np.ndarray, np.ndarray, float]) -> None:
    """FBP_CUDA on the shifted geometry against CPU FBP on the Fourier-shifted sinogram."""
    sinograms, angles, centre = synthetic
    options: dict[str, Any] = {"algorithm": "fbp", "voxel_size_um": VOXEL_UM}
    gpu = reconstruct_block(sinograms, angles, centre, gpu=True, **options)
    cpu = reconstruct_block(sinograms, angles, centre, gpu=False, **options)
    assert relative_difference(gpu, cpu) <= 5e-2


def test_a_sample_wider_than_the_detector_is_reconstructed_without_a_rim() -> None:
    """Local tomography: a 96-px disk seen by a 48-px detector. The reference is ASTRA's
    FBP of the whole disk's sinogram, cropped to the field of view."""
    from debond.pipeline.recon import truncated

    n_full, n_seen = 96, 48
    yy, xx = np.mgrid[:n_full, :n_full] - (n_full - 1) / 2
    phantom = np.where(np.hypot(yy, xx) < 44, 0.02, 0.0)
    phantom[np.hypot(yy - 5, xx + 3) < 8] = 0.05
    angles = np.linspace(0, np.pi, 120, endpoint=False)
    geometry = astra.create_proj_geom("parallel", 1.0, n_full, angles)
    volume = astra.create_vol_geom(n_full, n_full)
    projector = astra.create_projector("linear", geometry, volume)
    _, full = astra.create_sino(phantom, projector)
    astra.projector.delete(projector)
    crop = slice((n_full - n_seen) // 2, (n_full + n_seen) // 2)
    seen = np.ascontiguousarray(full[:, crop], dtype=np.float32)
    assert truncated(seen) and not truncated(full)
    centre = (n_seen - 1) / 2
    result = reconstruct_block(seen[None], angles, centre, algorithm="fbp", voxel_size_um=1.0)[0]
    radius = np.hypot(*(np.mgrid[:n_seen, :n_seen] - centre))
    inside, truth = radius < n_seen / 2 - 2, phantom[crop, crop]
    # ASTRA's FBP of the truncated rows as they are: a bright rim and a cupping
    plain = astra_loop(seen[None], angles, centre, "fbp", 1)[0] * VOXEL_UM

    def spread(image: np.ndarray) -> float:
        """Mean error once the offset local tomography cannot recover is taken out."""
        error = (image - truth)[inside]
        return float(np.abs(error - np.median(error)).mean())

    def cupping(image: np.ndarray) -> float:
        rim = inside & (radius > 18)
        centre_matrix = (radius < 10) & (truth < 0.03)
        return float(image[rim].mean() - image[centre_matrix].mean())

    assert spread(result) < 0.3 * spread(plain)
    assert abs(cupping(result)) < 0.2 * 0.02 < 0.5 * 0.02 < cupping(plain)
