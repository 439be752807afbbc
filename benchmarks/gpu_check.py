"""The GPU check: CuPy against NumPy on one GPU, correctness, throughput, memory.

Run by ``benchmarks/gpu_check.sh OUT_DIR`` on a machine with a CUDA GPU and
CuPy. It needs NumPy, SciPy and CuPy only (no Dask, Zarr or ASTRA) and reads
debond from the source tree. It writes ``gpu_check.json`` and prints a table.

Checks
------
- FBP (:mod:`debond.pipeline.fbp`): CuPy against NumPy on a 512² phantom
  (correlation, relative difference), slices per second at 2048² with 1500
  angles, the projected time of a 2048³ volume, and the GPU memory pool's
  peak against :func:`debond.pipeline.fbp.peak_bytes`.
- The ndimage kernels the stages dispatch to (:mod:`debond.pipeline.arrays`):
  median, Gaussian, Euclidean distance transform and connected-component
  labelling, cupyx.scipy.ndimage against scipy.ndimage on a 256³ volume of
  blobs: equality (labels as partitions) and the speed ratio.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from debond.pipeline import arrays
from debond.pipeline.fbp import fbp, peak_bytes

REPEATS = 3


def _median_seconds(func: Callable[[], Any], repeats: int = REPEATS) -> float:
    import cupy

    times = []
    for _ in range(repeats):
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        func()
        cupy.cuda.Device().synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _phantom_sinograms(n: int, n_angles: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Analytic sinograms of discs (chords), so no projector is needed."""
    rng = np.random.default_rng(0)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    t = np.arange(n) - (n - 1) / 2
    sinograms = np.zeros((rows, n_angles, n), np.float32)
    for row in range(rows):
        for _ in range(12):
            cx, cy = rng.uniform(-0.3, 0.3, 2) * n
            radius, mu = rng.uniform(0.02, 0.1) * n, rng.uniform(0.01, 0.05)
            offset = cx * np.cos(angles) + cy * np.sin(angles)  # the disc's centre on the detector
            d = t[None, :] - offset[:, None]
            sinograms[row] += mu * 2 * np.sqrt(np.clip(radius**2 - d**2, 0, None))
    return sinograms, angles


def check_fbp() -> dict[str, Any]:
    import cupy

    sinograms, angles = _phantom_sinograms(512, 720, 4)
    centre = 255.5 + 1.3
    cpu = fbp(sinograms, angles, centre)
    gpu = arrays.to_numpy(fbp(cupy.asarray(sinograms), angles, centre))
    correlation = float(np.corrcoef(cpu.ravel(), gpu.ravel())[0, 1])
    relative = float(np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu))

    rows, n, n_angles = 8, 2048, 1500
    big = cupy.asarray(np.random.default_rng(1).random((rows, n_angles, n), dtype=np.float32))
    big_angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    held_before = pool.total_bytes()
    fbp(big, big_angles, (n - 1) / 2)
    measured_peak = pool.total_bytes() - held_before
    seconds = _median_seconds(lambda: fbp(big, big_angles, (n - 1) / 2))
    estimate = peak_bytes(rows, n_angles, n)
    return {
        "fbp_correlation_cupy_numpy": correlation,
        "fbp_relative_difference": relative,
        "fbp_slices_per_second_2048_1500": rows / seconds,
        "fbp_2048_cubed_seconds": n / (rows / seconds),
        "fbp_peak_bytes_measured": int(measured_peak),
        "fbp_peak_bytes_estimated": int(estimate),
        "fbp_peak_measured_over_estimate": measured_peak / estimate,
    }


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images split the voxels the same way (any numbering)."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return bool(np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size)


def check_ndimage() -> dict[str, Any]:
    import cupy

    rng = np.random.default_rng(2)
    grey = scipy.ndimage.gaussian_filter(rng.normal(size=(256, 256, 256)), 3).astype(np.float32)
    mask = grey > np.percentile(grey, 70)
    on_gpu = {"grey": cupy.asarray(grey), "mask": cupy.asarray(mask)}
    results: dict[str, Any] = {}
    kernels: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
        "median_3": ("grey", lambda nd, x: nd.median_filter(x, size=3)),
        "gaussian_2": ("grey", lambda nd, x: nd.gaussian_filter(x, 2.0)),
        "edt": ("mask", lambda nd, x: nd.distance_transform_edt(x)),
        "label": ("mask", lambda nd, x: nd.label(x)[0]),
    }
    for name, (source, kernel) in kernels.items():
        host = grey if source == "grey" else mask
        expected = kernel(scipy.ndimage, host)
        device = arrays.ndimage_module(on_gpu[source])
        got = arrays.to_numpy(kernel(device, on_gpu[source]))
        if name == "label":
            results[f"{name}_identical_partition"] = _same_partition(expected, got)
        else:
            scale = float(np.abs(expected).max()) or 1.0
            results[f"{name}_max_difference"] = float(np.abs(got - expected).max() / scale)
        start = time.perf_counter()
        kernel(scipy.ndimage, host)
        cpu_seconds = time.perf_counter() - start
        data = on_gpu[source]
        gpu_seconds = _median_seconds(lambda k=kernel, m=device, x=data: k(m, x))
        results[f"{name}_gpu_over_cpu_speed"] = cpu_seconds / gpu_seconds
    return results


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(".")
    out.mkdir(parents=True, exist_ok=True)
    if not arrays.cuda_available():
        print("gpu_check: no CuPy with a CUDA device here; nothing measured", file=sys.stderr)
        return 2
    import cupy

    device = cupy.cuda.runtime.getDeviceProperties(0)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "gpu": device["name"].decode(),
        "cupy": cupy.__version__,
        "python": platform.python_version(),
    }
    for check in (check_fbp, check_ndimage):
        try:
            result.update(check())
        except Exception as error:  # one failed check must not hide the others' figures
            result[f"{check.__name__}_error"] = f"{type(error).__name__}: {error}"
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 1 if any(key.endswith("_error") for key in result) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
