"""Benchmark: labelling and gap measurement on a LocalCluster against whole-array references.

What is measured
----------------
1. Labelling throughput, voxels per second, of
   :func:`debond.pipeline.label.label` (``connectivity=6``; the reductions and
   the union-find, then ``.labels`` computed and gathered back) on a random-blob
   mask (default 256³, chunks 64³): Gaussian-smoothed white noise (σ = 2
   voxels, fixed seed) above 0.5 of its standard deviation (about 31% of the
   voxels, many components, some crossing many blocks). The pipeline runs on
   Dask's threaded scheduler (2 threads, mask a ``da.from_array`` of the
   NumPy array) and on a ``distributed.LocalCluster`` of 2 worker processes
   with one thread each (mask persisted on the workers first, labels gathered
   back). Its two passes are timed apart too: ``label()`` (block labels,
   touching pairs, union-find; small results) and ``.labels.compute()`` (cc3d
   again plus the lookup table, the labelled volume gathered).
2. Gap measurement throughput, particles and rays per second, of
   :func:`debond.pipeline.measure.measure_gaps` (0.06 µm voxels, 256 rays,
   rays up to 3 µm, no sample mask; returns a computed table) on the same
   2-worker cluster, on a phantom of non-overlapping silicon spheres (code 3,
   labels 1..N, radii 3–6 voxels) each wrapped by a CBD shell (code 2, 2
   voxels thick) at a random gap of 0.5–4 voxels, pore elsewhere (default 200
   particles in 192³, inputs chunked 64³ and persisted on the workers), and
   again with the inputs written to a Zarr store in the same chunks, as the
   stage gives them (each batch reads its box from the store).
3. Memory: every worker's high-water mark (``VmHWM`` of
   ``/proc/<pid>/status``, Linux; read on the worker with ``client.run`` and
   reset before each part by writing 5 to ``/proc/self/clear_refs``), the
   workers' idle RSS, and this (client) process's peak RSS above its RSS just
   before each measurement (sampled every 50 ms by a thread with ``psutil``,
   so memory of native libraries counts too) and its ``ru_maxrss``.
4. Optional (``--large SIZE``): a whole ``debond run`` of a synthetic
   campaign (:func:`debond.synth.write_campaign` with the ``large`` preset at
   SIZE³; it writes 4 samples, of which the first ``--large-samples``, default
   1, are kept by rewriting the copy of ``campaign.toml``) with
   :func:`debond.runner.run_campaign` on a LocalCluster of 2 workers whose
   ``memory_limit`` is about half the float32 volume (SIZE³ × 2 bytes, or
   ``--large-memory-limit-mib``). Reported: the wall time of writing the
   campaign and of the run, each stage's ``Outcome`` (state, seconds), the
   workers' peak memory per stage (VmHWM read and reset whenever the runner
   prints a line: the interval before a ``running`` line is the stage's graph
   building, before ``done`` its computation) against the memory limit and
   the volume's size, worker restarts, spilled bytes, and the particles in
   ``tables/campaign/particles.parquet`` against the synthetic truth.

   A worker's idle RSS (Python, NumPy, Dask, ASTRA imported) is about 210 MiB,
   more than half the float32 volume below SIZE ≈ 470; with Dask's default
   thresholds the nanny restarts such a worker at once (95% of the limit) and
   a paused worker (80%) never resumes. So by default the run keeps Dask's
   spill thresholds (managed memory above 60% and process memory above 70%
   of the limit go to disk) and disables ``pause`` and ``terminate``
   (recorded in the JSON); ``--large-enforce-limit`` keeps all of Dask's
   defaults. Not in the default run: on a shared 2-core machine, at SIZE =
   256 writing the 4 samples took 3–4 minutes and the run of one sample
   about 1 minute; at SIZE = 384 writing took 11.6 minutes and the run 2.8
   minutes (the whole benchmark 16 minutes, over the 15 minutes allowed).
   The runner's ``Outcome.seconds`` leave out a stage's graph building
   (``recon``'s centre search, ``label()``'s reduction pass), which the
   intervals report.

Reference
---------
Labelling: ``scipy.ndimage.label(mask)`` (6-connectivity, int32) and
``cc3d.connected_components(mask, connectivity=6)`` on the whole NumPy array
in this process (single-threaded). The pipeline's labels are checked to equal
scipy's exactly, cc3d's count to equal scipy's. Reported: voxels/s of every
method, and the pipeline's speed relative to scipy and to cc3d.

Gap measurement: the pure kernel :func:`debond.pipeline.measure.ray_gaps_kernel`
called in a plain Python loop over the particles on the whole-volume NumPy
arrays (centroids from ``scipy.ndimage.center_of_mass``, timed with the loop;
the same 256 Fibonacci directions, step 0.25 voxel and maximum length), the
mean, standard deviation and count of each particle's valid rays as
``measure_gaps`` computes them. For comparison the same loop on crops (each
particle's bounding box from ``scipy.ndimage.find_objects`` widened by
``measure_gaps``' margin ``ceil(L + 0.25) + 2`` voxels, L the maximum ray
length in voxels): the pipeline's own per-particle work in one process.
Agreement: max |Δ gap_mean| and equal valid-ray counts between pipeline and
whole-volume loop; accuracy: the median |gap_mean − drawn gap| (µm).

Per core: the cluster's particles/s over 2 × the loop's (goal: at least 0.95),
in wall time and in CPU time (the CPU seconds of the workers, the client and
the scheduler per run against the loop process's: what the cluster would
reach with a free core per worker; the load of other processes on a shared
machine moves wall times, not these).

Every time is the median over ``--repeats`` runs (the individual times are
kept in the JSON); untimed warm-ups come first (imports and first calls in
this process and on the workers). The machine's load average is recorded at
the start and the end: other processes slow the methods, not necessarily
equally.

Usage
-----
``python benchmarks/measure.py [--repeats R] [--quick] [--seed S]
[--label-size N] [--label-chunk C] [--measure-size N] [--measure-chunk C]
[--particles P]
[--large SIZE] [--large-samples K] [--large-memory-limit-mib M]
[--large-enforce-limit] [--no-write]``; the result goes to
``benchmarks/results/measure.json``. ``--quick``: a 64³ mask in 32³ chunks and
20 particles in 64³ (chunks 32³), a smoke run of a few seconds a repeat.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
import tomllib
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import psutil
import zarr
from common import (
    MIB,
    Timing,
    cluster_cpu_seconds,
    fmt_mib,
    fmt_seconds,
    high_water_mark,
    machine_info,
    max_rss_bytes,
    print_table,
    process_cpu_seconds,
    source_digests,
    time_repeats,
    write_result,
)
from distributed import Client, LocalCluster, wait
from label import (
    BLOB_SIGMA,
    BLOB_THRESHOLD_STD,
    CONNECTIVITY,
    blob_mask,
    cc3d_label,
    scipy_label,
)
from numpy.typing import NDArray
from scipy import ndimage

import debond.pipeline.label as label_module
import debond.pipeline.measure as measure_module
from debond.pipeline.label import label
from debond.pipeline.measure import fibonacci_directions, measure_gaps, ray_gaps_kernel
from debond.pipeline.segment import CBD, SILICON

NAME = "measure"
#: Gap measurement: the stage's parameters.
VOXEL_SIZE_UM = 0.06
N_RAYS = 256
MAX_RAY_LENGTH_UM = 3.0
#: Step along a ray in voxels (``measure_gaps`` uses 0.25).
STEP_VOX = 0.25
#: Phantom: sphere radii and gaps (voxels), CBD shell thickness (voxels).
RADIUS_VOX = (3.0, 6.0)
GAP_VOX = (0.5, 4.0)
SHELL_VOX = 2.0
#: The goal: the cluster's particles/s per worker at least this share of the loop's.
GOAL_PER_CORE = 0.95
#: Interval between RSS samples, seconds.
SAMPLE_INTERVAL_S = 0.05


# ----------------------------------------------------------------- memory


def reset_high_water_mark() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ≥ 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def rss_now() -> float:
    """This process's current RSS, bytes."""
    return float(psutil.Process().memory_info().rss)


def worker_hwm(client: Client, reset: bool = False) -> dict[str, float | None]:
    """Every worker's ``VmHWM`` (bytes), read on the worker; then reset it if asked."""
    peaks: dict[str, float | None] = client.run(high_water_mark)
    if reset:
        client.run(reset_high_water_mark)
    return peaks


def worker_rss(client: Client) -> dict[str, float]:
    """Every worker's current RSS, bytes."""
    rss: dict[str, float] = client.run(rss_now)
    return rss


class PeakRss:
    """Peak RSS of this process above its RSS at entry, sampled by a background thread."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-sampler", daemon=True)
        self.base_bytes = 0.0
        self.peak_bytes = 0.0

    def _poll(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, float(self._process.memory_info().rss))
            if self._stop.wait(self._interval):
                return

    @property
    def above_base_bytes(self) -> float:
        return max(0.0, self.peak_bytes - self.base_bytes)

    def __enter__(self) -> PeakRss:
        self.base_bytes = float(self._process.memory_info().rss)
        self.peak_bytes = self.base_bytes
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sampled(func: Callable[[], Any]) -> tuple[float, Any]:
    """Peak RSS of this process above its starting RSS during one call (bytes), and its value."""
    with PeakRss() as peak:
        value = func()
    return peak.above_base_bytes, value


def _mib(values: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else v / MIB for k, v in values.items()}


def _max_mib(values: Mapping[str, float | None]) -> float | None:
    known = [v for v in values.values() if v is not None]
    return max(known) / MIB if known else None


def persist_arrays(client: Client, arrays: list[NDArray[Any]], chunks: int) -> list[da.Array]:
    """NumPy arrays chunked and persisted on the workers (Dask's warning that the NumPy
    data travel inside the graph, once, is silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        persisted: list[da.Array] = client.persist(
            [da.from_array(a, chunks=chunks) for a in arrays]
        )
    wait(persisted)
    return persisted


@contextmanager
def local_cluster(**options: Any) -> Iterator[Client]:
    """A LocalCluster of 2 worker processes with one thread each, and its client."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", **options
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# ----------------------------------------------------------------- labelling


def pipeline_label(
    mask: da.Array, splits: list[tuple[float, float]] | None = None
) -> tuple[NDArray[np.int32], int]:
    """``label(mask).labels`` computed on the current scheduler; the two passes' times
    (``label()``, ``.labels.compute()``) are appended to ``splits``."""
    start = time.perf_counter()
    found = label(mask, connectivity=CONNECTIVITY)
    middle = time.perf_counter()
    labels = np.asarray(found.labels.compute())
    if splits is not None:
        splits.append((middle - start, time.perf_counter() - middle))
    return labels, int(found.count)


def _split_medians(splits: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "label_call_median_s": float(np.median([s[0] for s in splits])),
        "labels_compute_median_s": float(np.median([s[1] for s in splits])),
    }


def run_labelling(size: int, chunk: int, seed: int, repeats: int) -> dict[str, Any]:
    """Part 1 (references and threads here, the cluster on a LocalCluster)."""
    mask = blob_mask(size, seed)
    voxels = mask.size
    # Warm-up: imports and first calls.
    small = mask[: min(size, 32), : min(size, 32), : min(size, 32)]
    scipy_label(small)
    cc3d_label(small)
    with dask.config.set(scheduler="threads", num_workers=2):
        pipeline_label(da.from_array(small, chunks=max(8, chunk // 2)))

    scipy_timing, (reference, count) = time_repeats(lambda: scipy_label(mask), repeats)
    scipy_peak, _ = sampled(lambda: scipy_label(mask))
    cc3d_timing, (cc3d_labels, cc3d_count) = time_repeats(lambda: cc3d_label(mask), repeats)
    cc3d_peak, _ = sampled(lambda: cc3d_label(mask))
    cc3d_identical = bool(np.array_equal(cc3d_labels, reference))
    del cc3d_labels

    lazy = da.from_array(mask, chunks=chunk)
    thread_splits: list[tuple[float, float]] = []
    with dask.config.set(scheduler="threads", num_workers=2):
        threads_timing, (threads_labels, threads_count) = time_repeats(
            lambda: pipeline_label(lazy, thread_splits), repeats
        )
        threads_peak, _ = sampled(lambda: pipeline_label(lazy))
    threads_identical = bool(np.array_equal(threads_labels, reference))
    del threads_labels

    cluster_splits: list[tuple[float, float]] = []
    with local_cluster() as client:
        tiny = client.persist(da.from_array(small, chunks=max(8, chunk // 2)))
        pipeline_label(tiny)  # imports and first calls on the workers
        idle = worker_rss(client)
        (persisted,) = persist_arrays(client, [mask], chunk)
        worker_hwm(client, reset=True)
        with PeakRss() as client_peak:
            cluster_timing, (cluster_labels, cluster_count) = time_repeats(
                lambda: pipeline_label(persisted, cluster_splits), repeats
            )
        hwm = worker_hwm(client)
        blocks = int(np.prod(persisted.numblocks))
    cluster_identical = bool(np.array_equal(cluster_labels, reference))
    del cluster_labels

    def entry(timing: Timing, peak_bytes: float) -> dict[str, Any]:
        return timing.as_dict() | {
            "voxels_per_s": voxels / timing.median,
            "speed_vs_scipy": scipy_timing.median / timing.median,
            "speed_vs_cc3d": cc3d_timing.median / timing.median,
            "client_peak_rss_above_start_mib": peak_bytes / MIB,
        }

    return {
        "problem": {
            "shape": [size] * 3,
            "chunks": [chunk] * 3,
            "blocks": blocks,
            "voxels": voxels,
            "foreground_fraction": float(mask.mean()),
            "components": count,
            "connectivity": CONNECTIVITY,
            "mask": f"Gaussian-smoothed (σ = {BLOB_SIGMA}) white noise above "
            f"{BLOB_THRESHOLD_STD} std, seed {seed}",
            "mask_mib": mask.nbytes / MIB,
            "labels_int32_mib": voxels * 4 / MIB,
        },
        "scipy": entry(scipy_timing, scipy_peak),
        "cc3d": entry(cc3d_timing, cc3d_peak)
        | {"count_equal_scipy": cc3d_count == count, "identical_to_scipy": cc3d_identical},
        "threads": entry(threads_timing, threads_peak)
        | {
            "num_workers": 2,
            "count_equal_scipy": threads_count == count,
            "identical_to_scipy": threads_identical,
        }
        | _split_medians(thread_splits),
        "cluster": entry(cluster_timing, client_peak.above_base_bytes)
        | {
            "workers": 2,
            "count_equal_scipy": cluster_count == count,
            "identical_to_scipy": cluster_identical,
            "worker_idle_rss_mib": _mib(idle),
            "worker_vm_hwm_mib": _mib(hwm),
            "max_worker_vm_hwm_mib": _max_mib(hwm),
        }
        | _split_medians(cluster_splits),
    }


# ----------------------------------------------------------------- gaps


@dataclass(frozen=True)
class Phantom:
    """Silicon spheres (labels 1..N) in CBD shells at known gaps; voxel units."""

    phases: NDArray[np.uint8]
    labels: NDArray[np.int32]
    centre: NDArray[np.float64]  # (N, 3)
    radius: NDArray[np.float64]
    gap: NDArray[np.float64]


def phantom(size: int, n_particles: int, seed: int) -> Phantom:
    """``n_particles`` spheres placed at random without overlap of sphere, gap and shell
    (shells of neighbours may overlap each other), centres at least a radius + 1
    voxel from the faces."""
    rng = np.random.default_rng(seed)
    centres: list[NDArray[np.float64]] = []
    radii: list[float] = []
    gaps: list[float] = []
    tries = 0
    while len(centres) < n_particles:
        tries += 1
        if tries > 2000 * n_particles:
            raise RuntimeError(
                f"placed only {len(centres)} of {n_particles} particles in {size}³; "
                "use fewer particles or a larger volume"
            )
        r, g = float(rng.uniform(*RADIUS_VOX)), float(rng.uniform(*GAP_VOX))
        c = rng.uniform(r + 1.0, size - 2.0 - r, size=3)
        if centres:
            distance = np.linalg.norm(np.asarray(centres) - c, axis=1)
            if np.any(distance < np.asarray(radii) + np.asarray(gaps) + r + g + SHELL_VOX):
                continue
        centres.append(c)
        radii.append(r)
        gaps.append(g)
    shape = (size, size, size)
    phases = np.zeros(shape, np.uint8)
    labels = np.zeros(shape, np.int32)
    boxes = []
    for c, r, g in zip(centres, radii, gaps, strict=True):
        reach = r + g + SHELL_VOX
        lo = [max(0, math.floor(c[a] - reach) - 1) for a in range(3)]
        hi = [min(size, math.ceil(c[a] + reach) + 2) for a in range(3)]
        box = tuple(slice(lo[a], hi[a]) for a in range(3))
        zz, yy, xx = np.ogrid[box]
        distance = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        phases[box][(distance >= r + g) & (distance < reach)] = CBD
        boxes.append((box, distance))
    for index, ((box, distance), r) in enumerate(zip(boxes, radii, strict=True)):
        inside = distance < r
        phases[box][inside] = SILICON
        labels[box][inside] = index + 1
    return Phantom(phases, labels, np.asarray(centres), np.asarray(radii), np.asarray(gaps))


def _margin(max_length_vox: float) -> int:
    """``measure_gaps``' crop margin beyond the bounding box, voxels."""
    return math.ceil(max_length_vox + STEP_VOX) + 2


def kernel_loop(
    phases: NDArray[np.uint8],
    labels: NDArray[np.int32],
    directions: NDArray[np.float64],
    max_length_vox: float,
    crops: bool,
) -> NDArray[np.float64]:
    """``ray_gaps_kernel`` in a Python loop over the particles: (N, 3) mean, std, valid rays.

    Centroids from ``scipy.ndimage.center_of_mass``; ``crops``: each particle's
    bounding box (``scipy.ndimage.find_objects``) widened by ``measure_gaps``'
    margin, else the whole volume.
    """
    particles = np.unique(labels)
    particles = particles[particles != 0]
    centroids = ndimage.center_of_mass(labels != 0, labels, particles)
    boxes = ndimage.find_objects(labels) if crops else []
    margin = _margin(max_length_vox)
    shape = labels.shape
    out = np.empty((particles.size, 3))
    for row, particle in enumerate(particles):
        phases_crop, labels_crop, origin = phases, labels, (0, 0, 0)
        if crops:
            box = boxes[int(particle) - 1]
            assert box is not None
            lo = [max(0, box[a].start - margin) for a in range(3)]
            hi = [min(shape[a], box[a].stop + margin) for a in range(3)]
            window = tuple(slice(lo[a], hi[a]) for a in range(3))
            phases_crop, labels_crop, origin = phases[window], labels[window], (lo[0], lo[1], lo[2])
        gaps = ray_gaps_kernel(
            phases_crop,
            labels_crop,
            int(particle),
            centroids[row],
            directions,
            max_length_vox=max_length_vox,
            step_vox=STEP_VOX,
            crop_origin=origin,
            volume_shape=shape,
        )
        valid = gaps[np.isfinite(gaps)]
        out[row] = (valid.mean(), valid.std(), valid.size) if valid.size else (np.nan, np.nan, 0)
    return out


def pipeline_gaps(phases: da.Array, labels: da.Array) -> pd.DataFrame:
    """``measure_gaps`` with the stage's parameters (computes on the current scheduler)."""
    return measure_gaps(
        phases,
        labels,
        voxel_size_um=VOXEL_SIZE_UM,
        n_rays=N_RAYS,
        max_ray_length_um=MAX_RAY_LENGTH_UM,
        sample=None,
    )


def run_gaps(size: int, n_particles: int, chunk: int, seed: int, repeats: int) -> dict[str, Any]:
    """Part 2: the kernel looped here, then ``measure_gaps`` on a LocalCluster."""
    data = phantom(size, n_particles, seed)
    max_length_vox = MAX_RAY_LENGTH_UM / VOXEL_SIZE_UM
    directions = fibonacci_directions(N_RAYS)
    rays = n_particles * N_RAYS

    # Warm-up: one particle of the kernel, then the timed loops.
    ray_gaps_kernel(
        data.phases,
        data.labels,
        1,
        data.centre[0],
        directions,
        max_length_vox=max_length_vox,
        step_vox=STEP_VOX,
        volume_shape=data.labels.shape,
    )
    cpu = process_cpu_seconds()
    whole_timing, whole = time_repeats(
        lambda: kernel_loop(data.phases, data.labels, directions, max_length_vox, False), repeats
    )
    whole_cpu = (process_cpu_seconds() - cpu) / repeats
    whole_peak, _ = sampled(
        lambda: kernel_loop(data.phases, data.labels, directions, max_length_vox, False)
    )
    cpu = process_cpu_seconds()
    crops_timing, cropped = time_repeats(
        lambda: kernel_loop(data.phases, data.labels, directions, max_length_vox, True), repeats
    )
    crops_cpu = (process_cpu_seconds() - cpu) / repeats

    with local_cluster() as client:
        # Imports and first calls on the workers: a 2-particle phantom.
        warm = phantom(48, 2, seed + 1)
        pipeline_gaps(da.from_array(warm.phases, chunks=24), da.from_array(warm.labels, chunks=24))
        idle = worker_rss(client)
        phases, labels = persist_arrays(client, [data.phases, data.labels], chunk)
        worker_hwm(client, reset=True)
        cpu = cluster_cpu_seconds(client)
        with PeakRss() as client_peak:
            cluster_timing, table = time_repeats(lambda: pipeline_gaps(phases, labels), repeats)
        cluster_cpu = (cluster_cpu_seconds(client) - cpu) / repeats
        hwm = worker_hwm(client)
        blocks = int(np.prod(phases.numblocks))
        # As the stage runs it: the inputs in Zarr, each batch reading its box.
        with tempfile.TemporaryDirectory() as folder:
            stored = [
                zarr.create_array(Path(folder) / name, data=v, chunks=(chunk,) * 3)
                for name, v in (("phases", data.phases), ("labels", data.labels))
            ]
            worker_hwm(client, reset=True)
            cpu = cluster_cpu_seconds(client)
            stored_timing, stored_table = time_repeats(lambda: pipeline_gaps(*stored), repeats)
            stored_cpu = (cluster_cpu_seconds(client) - cpu) / repeats
            stored_hwm = worker_hwm(client)

    voxel = VOXEL_SIZE_UM
    reference_um = whole[:, 0] * voxel
    measured = table["gap_mean_um"].to_numpy()
    both = np.isfinite(measured) & np.isfinite(reference_um)
    same_nan = bool(np.array_equal(np.isfinite(measured), np.isfinite(reference_um)))
    max_difference = float(np.max(np.abs(measured[both] - reference_um[both]))) if both.any() else 0
    crops_difference = float(np.nanmax(np.abs(cropped[:, 0] - whole[:, 0]))) * voxel
    truth_um = data.gap * voxel
    error = np.abs(measured - truth_um)[np.isfinite(measured)]
    valid_rays = int(table["n_rays"].sum())
    margin = _margin(max_length_vox)

    def rates(timing: Timing) -> dict[str, Any]:
        return timing.as_dict() | {
            "particles_per_s": n_particles / timing.median,
            "rays_per_s": rays / timing.median,
            "per_particle_s": timing.median / n_particles,
        }

    return {
        "problem": {
            "shape": [size] * 3,
            "chunks": [chunk] * 3,
            "blocks": blocks,
            "particles": n_particles,
            "rays_per_particle": N_RAYS,
            "rays": rays,
            "voxel_size_um": voxel,
            "max_ray_length_um": MAX_RAY_LENGTH_UM,
            "max_ray_length_vox": max_length_vox,
            "step_vox": STEP_VOX,
            "crop_margin_vox": margin,
            "radius_vox": list(RADIUS_VOX),
            "gap_vox": list(GAP_VOX),
            "shell_vox": SHELL_VOX,
            "silicon_fraction": float((data.labels != 0).mean()),
            "phases_mib": data.phases.nbytes / MIB,
            "labels_mib": data.labels.nbytes / MIB,
            "seed": seed,
        },
        "kernel_loop_whole_volume": rates(whole_timing)
        | {"client_peak_rss_above_start_mib": whole_peak / MIB},
        "kernel_loop_crops": rates(crops_timing)
        | {"max_abs_gap_difference_to_whole_um": crops_difference},
        "cluster": rates(cluster_timing)
        | {
            "workers": 2,
            "speed_vs_whole_volume_loop": whole_timing.median / cluster_timing.median,
            "speed_vs_crops_loop": crops_timing.median / cluster_timing.median,
            # per core: the cluster's rate over 2 × the loop's (the goal: at least 0.95)
            "per_core_vs_whole_volume_loop": whole_timing.median / cluster_timing.median / 2,
            "per_core_vs_crops_loop": crops_timing.median / cluster_timing.median / 2,
            # CPU seconds per run (workers, client and scheduler) against the loops': the
            # per-core figure on free cores, which other processes' load does not move
            "cpu_s": cluster_cpu,
            "loop_cpu_s": {"whole_volume": whole_cpu, "crops": crops_cpu},
            "cpu_per_core_vs_whole_volume_loop": whole_cpu / cluster_cpu,
            "cpu_per_core_vs_crops_loop": crops_cpu / cluster_cpu,
            "goal_per_core": GOAL_PER_CORE,
            "client_peak_rss_above_start_mib": client_peak.above_base_bytes / MIB,
            "worker_idle_rss_mib": _mib(idle),
            "worker_vm_hwm_mib": _mib(hwm),
            "max_worker_vm_hwm_mib": _max_mib(hwm),
        },
        "cluster_stored": rates(stored_timing)
        | {
            "workers": 2,
            "per_core_vs_whole_volume_loop": whole_timing.median / stored_timing.median / 2,
            "per_core_vs_crops_loop": crops_timing.median / stored_timing.median / 2,
            "cpu_s": stored_cpu,
            "cpu_per_core_vs_whole_volume_loop": whole_cpu / stored_cpu,
            "cpu_per_core_vs_crops_loop": crops_cpu / stored_cpu,
            "worker_vm_hwm_mib": _mib(stored_hwm),
            "same_table_as_dask_inputs": bool(stored_table.equals(table)),
        },
        "agreement": {
            "max_abs_gap_difference_to_loop_um": max_difference,
            "same_particles_without_gap": same_nan,
            "valid_rays_equal_to_loop": bool(
                np.array_equal(table["n_rays"].to_numpy(), whole[:, 2].astype(np.int64))
            ),
            "valid_rays": valid_rays,
            "valid_ray_fraction": valid_rays / rays,
            "particles_with_gap": int(np.isfinite(measured).sum()),
            "median_abs_error_to_drawn_gap_um": float(np.median(error)) if error.size else None,
            "max_abs_error_to_drawn_gap_um": float(np.max(error)) if error.size else None,
        },
    }


# ----------------------------------------------------------------- out of core


class RunRecorder:
    """The runner's ``echo``: keeps each line with its time and, per line, every worker's
    ``VmHWM`` since the previous line (read, then reset)."""

    def __init__(self, client: Client, start: float, stages: tuple[str, ...]) -> None:
        self.client = client
        self.stages = stages
        self.start = start
        self.lines: list[dict[str, Any]] = []

    def __call__(self, line: str) -> None:
        try:
            peaks = _mib(worker_hwm(self.client, reset=True))
        except Exception as error:  # a worker restarting: record why, keep running
            peaks = {"error": None}
            line = f"{line}   [VmHWM not read: {type(error).__name__}: {error}]"
        seconds = time.perf_counter() - self.start
        self.lines.append({"t_s": seconds, "line": line, "worker_vm_hwm_mib_before": peaks})
        print(f"  {seconds:7.1f} s  {line}", flush=True)

    def intervals(self) -> dict[str, dict[str, float | None]]:
        """Per interval kind, its wall time (s, summed) and the max worker VmHWM (MiB):
        ``<stage>: computing`` ends at the stage's ``done``/``failed`` line, ``<stage>:
        building`` at its ``running`` line (graph building, e.g. the centre search of
        ``recon``, the reductions of ``label()``); the rest is ``other``."""
        out: dict[str, dict[str, float | None]] = {}
        previous = 0.0
        for entry in self.lines:
            words = entry["line"].split()
            key = "other"
            if len(words) >= 3 and words[0] in self.stages:
                if words[2] == "running":
                    key = f"{words[0]}: building"
                elif words[2].lower() in ("done", "failed"):
                    key = f"{words[0]}: computing"
            slot = out.setdefault(key, {"seconds": 0.0, "max_worker_vm_hwm_mib": None})
            slot["seconds"] = (slot["seconds"] or 0.0) + entry["t_s"] - previous
            previous = entry["t_s"]
            peak = _max_mib_plain(entry["worker_vm_hwm_mib_before"])
            if peak is not None:
                slot["max_worker_vm_hwm_mib"] = max(slot["max_worker_vm_hwm_mib"] or 0.0, peak)
        return out


def _max_mib_plain(values: Mapping[str, float | None]) -> float | None:
    known = [v for v in values.values() if v is not None]
    return max(known) if known else None


def _spill_metrics(dask_worker: Any) -> dict[str, float]:
    """A worker's cumulative spill metrics (``SpillBuffer.cumulative_metrics``)."""
    metrics = getattr(dask_worker.data, "cumulative_metrics", {})
    return {f"{label} ({unit})": float(value) for (label, unit), value in metrics.items()}


def _import_runner() -> None:
    import debond.runner  # noqa: F401


def keep_samples(campaign_file: Path, count: int) -> list[str]:
    """Rewrite ``campaign_file`` with only its first ``count`` samples; their ids."""
    from debond.campaign import dump_campaign

    document = tomllib.loads(campaign_file.read_text(encoding="utf-8"))
    document["sample"] = document["sample"][:count]
    dump_campaign(document, campaign_file)
    return [str(s["id"]) for s in document["sample"]]


def run_large(
    size: int, samples: int, memory_limit: float, enforce: bool, seed: int
) -> dict[str, Any]:
    """Part 4: write a synthetic ``large`` campaign, then ``debond run`` it out of core."""
    from debond.campaign import load_campaign
    from debond.runner import RunError, run_campaign
    from debond.stages import REGISTRY
    from debond.synth import write_campaign

    stages = REGISTRY.names
    volume_bytes = 4.0 * size**3
    config: dict[str, Any] = (
        {}
        if enforce
        else {
            "distributed.worker.memory.pause": False,
            "distributed.worker.memory.terminate": False,
        }
    )
    result: dict[str, Any] = {
        "size": size,
        "samples_kept": samples,
        "stages": list(stages),
        "memory_limit_mib": memory_limit / MIB,
        "float32_volume_mib": volume_bytes / MIB,
        "memory_limit_over_volume": memory_limit / volume_bytes,
        "dask_memory_config": config
        or "Dask defaults (target 0.6, spill 0.7, pause 0.8, terminate 0.95 of the limit)",
    }
    with tempfile.TemporaryDirectory(prefix="debond-measure-") as scratch:
        folder = Path(scratch) / "campaign"
        print(f"  writing a 'large' campaign of {size}³ into {folder} ...", flush=True)
        write_seconds, written = time_repeats(
            lambda: write_campaign(folder, "large", seed=seed, size=size), 1
        )
        kept = keep_samples(written.campaign, samples)
        raw_bytes = sum(p.stat().st_size for p in (folder / "raw").glob("*.h5"))
        result |= {"write_campaign_s": write_seconds.median, "samples": kept}
        result["raw_file_mib_per_sample"] = raw_bytes / len(written.samples) / MIB
        truth = pd.read_parquet(folder / "truth" / "particles.parquet")
        result["truth_particles"] = int(truth["sample"].isin(kept).sum())

        client_peak = PeakRss()
        with (
            dask.config.set(config),
            local_cluster(
                memory_limit=memory_limit, local_directory=str(folder / "dask")
            ) as client,
        ):
            client.run(_import_runner)  # imports, as a run's first task would
            pids_before: dict[str, int] = client.run(os.getpid)
            idle = worker_rss(client)
            worker_hwm(client, reset=True)
            start = time.perf_counter()
            recorder = RunRecorder(client, start, stages)
            outcomes: list[Any] = []
            error_text = None
            with client_peak:
                try:
                    outcomes = run_campaign(load_campaign(written.campaign), client, echo=recorder)
                except RunError as error:
                    outcomes = list(error.outcomes)
                    error_text = traceback.format_exc()
                except Exception:
                    error_text = traceback.format_exc()
            run_seconds = time.perf_counter() - start
            recorder("end of run")
            pids_after: dict[str, int] = client.run(os.getpid)
            try:
                spill = client.run(_spill_metrics)
            except Exception as error:
                spill = {"error": f"{type(error).__name__}: {error}"}
        table_path = load_campaign(written.campaign).tables_dir / "particles.parquet"
        table = pd.read_parquet(table_path) if table_path.exists() else None
        if table is not None:  # the 3D particles; the SEM sections' rows are not counted
            table = table[table["modality"] == "3d"]

    states = [o.state for o in outcomes]
    done = {(o.stage, o.sample) for o in outcomes if o.state == "done"}
    completed = error_text is None and all((s, k) in done for s in stages for k in kept)
    stage_seconds = {s: sum(o.seconds for o in outcomes if o.stage == s) for s in stages}
    intervals = recorder.intervals()
    known = [
        v["max_worker_vm_hwm_mib"]
        for v in intervals.values()
        if v["max_worker_vm_hwm_mib"] is not None
    ]
    peak = max(known) if known else None
    result |= {
        "run_s": run_seconds,
        "completed": completed,
        "error": error_text,
        "outcomes": [
            {
                "stage": o.stage,
                "sample": o.sample,
                "state": o.state,
                "seconds": o.seconds,
                "detail": o.detail,
            }
            for o in outcomes
        ],
        "state_counts": {s: states.count(s) for s in sorted(set(states))},
        "not_done": [
            f"{o.stage} of {o.sample}: {o.state} {o.detail}" for o in outcomes if o.state != "done"
        ],
        "stage_seconds": stage_seconds,
        "worker_idle_rss_mib": _mib(idle),
        "intervals": intervals,
        "max_worker_vm_hwm_mib": peak,
        "max_worker_vm_hwm_over_limit": None if peak is None else peak * MIB / memory_limit,
        "max_worker_vm_hwm_over_volume": None if peak is None else peak * MIB / volume_bytes,
        "client_peak_rss_above_start_mib": client_peak.above_base_bytes / MIB,
        "worker_restarts": len(set(pids_before.values()) - set(pids_after.values())),
        "spill_metrics": spill,
        "echo": recorder.lines,
        "particles_measured": None if table is None else len(table),
        "particles_with_gap": None
        if table is None
        else int(np.isfinite(table["gap_mean_um"].to_numpy(dtype=float)).sum()),
    }
    return result


# ----------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Labelling and gap measurement on a LocalCluster against scipy/cc3d and "
        "the kernel looped; optionally a whole `debond run` out of core."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of every measurement (medians)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data")
    parser.add_argument("--label-size", type=int, help="mask edge, voxels (default 256)")
    parser.add_argument("--label-chunk", type=int, help="mask chunk edge, voxels (default 64)")
    parser.add_argument("--measure-size", type=int, help="phantom edge, voxels (default 192)")
    parser.add_argument("--measure-chunk", type=int, help="phantom chunk edge, voxels (default 64)")
    parser.add_argument("--particles", type=int, help="phantom particles (default 200)")
    parser.add_argument(
        "--large",
        type=int,
        metavar="SIZE",
        help="also run a whole synthetic campaign of SIZE³ out of core (default: off)",
    )
    parser.add_argument(
        "--large-samples", type=int, default=1, help="samples of the campaign run (1–4)"
    )
    parser.add_argument(
        "--large-memory-limit-mib",
        type=float,
        help="memory limit per worker, MiB (default: half the float32 volume, SIZE³ × 2 B)",
    )
    parser.add_argument(
        "--large-enforce-limit",
        action="store_true",
        help="keep Dask's pause (80%%) and terminate (95%%) thresholds",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(argv)
    defaults = (64, 32, 64, 32, 20) if args.quick else (256, 64, 192, 64, 200)
    names = ("label_size", "label_chunk", "measure_size", "measure_chunk", "particles")
    for name, value in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.repeats, *(getattr(args, name) for name in names)) < 1:
        parser.error("--repeats and the sizes must be >= 1")
    if args.particles < 1 or not 1 <= args.large_samples <= 4:
        parser.error("--particles must be >= 1 and --large-samples in 1..4")
    if args.large is not None and args.large < 32:
        parser.error("--large must be >= 32")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the JSON document."""
    args = parse_args(argv)
    sources = source_digests(label_module, measure_module)
    machine = machine_info()  # the load average at the start, among others
    started = time.perf_counter()

    print(f"{NAME}: labelling {args.label_size}³ in {args.label_chunk}³ chunks ...", flush=True)
    part_start = time.perf_counter()
    labelling = run_labelling(args.label_size, args.label_chunk, args.seed, args.repeats)
    labelling["part_wall_s"] = time.perf_counter() - part_start

    print(f"{NAME}: gaps of {args.particles} particles in {args.measure_size}³ ...", flush=True)
    part_start = time.perf_counter()
    gaps = run_gaps(args.measure_size, args.particles, args.measure_chunk, args.seed, args.repeats)
    gaps["part_wall_s"] = time.perf_counter() - part_start

    large = None
    if args.large is not None:
        limit = (
            args.large_memory_limit_mib * MIB
            if args.large_memory_limit_mib is not None
            else 2.0 * args.large**3
        )
        print(f"{NAME}: out-of-core run of {args.large}³, limit {fmt_mib(limit)} ...", flush=True)
        part_start = time.perf_counter()
        large = run_large(
            args.large, args.large_samples, limit, args.large_enforce_limit, args.seed
        )
        large["part_wall_s"] = time.perf_counter() - part_start

    payload: dict[str, Any] = {
        "name": NAME,
        "description": "labelling (debond.pipeline.label) against scipy.ndimage.label and cc3d; "
        "gap measurement (measure_gaps) against ray_gaps_kernel looped; worker memory; "
        "optionally a whole `debond run` out of core",
        "machine": machine | {"cc3d": _version("cc3d"), "distributed": _version("distributed")},
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "sources": sources,
        "sources_changed_during_run": sources != source_digests(label_module, measure_module),
        "repeats": args.repeats,
        "quick": args.quick,
        "seed": args.seed,
        "labelling": labelling,
        "gaps": gaps,
        "large": large,
        "memory": {"client_max_rss_mib": max_rss_bytes() / MIB},
        "wall_s": time.perf_counter() - started,
    }
    payload["summary"] = summary(payload)

    print()
    print_report(payload)
    if payload["sources_changed_during_run"]:
        print("warning: debond.pipeline sources changed on disk during the run", file=sys.stderr)
    if not args.no_write:
        path = write_result(NAME, payload)
        print(f"\nwritten: {path}")
    return payload


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version({"cc3d": "connected-components-3d"}.get(module, module))
    except Exception:
        return None


def _mvox(rate: float) -> str:
    return f"{rate / 1e6:.3g}"


def _opt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def summary(payload: dict[str, Any]) -> dict[str, str]:
    """The ``{label: value}`` figures printed by ``benchmarks/run.py``."""
    lab, gaps = payload["labelling"], payload["gaps"]
    problem = lab["problem"]
    edge, chunk = problem["shape"][0], problem["chunks"][0]
    out: dict[str, str] = {
        f"label {edge}³ ({problem['foreground_fraction']:.0%} fg, {problem['components']} "
        f"comp.), chunks {chunk}³: Mvoxel/s scipy / cc3d / threads (2) / cluster (2 w)": " / ".join(
            _mvox(lab[k]["voxels_per_s"]) for k in ("scipy", "cc3d", "threads", "cluster")
        ),
        "label: median time scipy / cc3d / threads / cluster": " / ".join(
            fmt_seconds(lab[k]["median_s"]) for k in ("scipy", "cc3d", "threads", "cluster")
        ),
        "label: speed vs scipy (threads / cluster); vs cc3d (threads / cluster)": (
            f"{lab['threads']['speed_vs_scipy']:.2f}× / {lab['cluster']['speed_vs_scipy']:.2f}×; "
            f"{lab['threads']['speed_vs_cc3d']:.2f}× / {lab['cluster']['speed_vs_cc3d']:.2f}×"
        ),
        "label: identical to scipy.ndimage.label (threads / cluster)": (
            f"{lab['threads']['identical_to_scipy']} / {lab['cluster']['identical_to_scipy']}"
        ),
        "label: peak worker VmHWM / client peak RSS above start (cluster)": (
            f"{_opt_mib(lab['cluster']['max_worker_vm_hwm_mib'])} / "
            f"{lab['cluster']['client_peak_rss_above_start_mib']:.0f} MiB "
            f"(int32 labels {problem['labels_int32_mib']:.0f} MiB)"
        ),
    }
    gp = gaps["problem"]
    whole, crops, cluster, stored = (
        gaps["kernel_loop_whole_volume"],
        gaps["kernel_loop_crops"],
        gaps["cluster"],
        gaps["cluster_stored"],
    )
    agree = gaps["agreement"]
    out |= {
        f"gaps {gp['particles']} particles in {gp['shape'][0]}³, {gp['rays_per_particle']} rays: "
        "particles/s loop whole / loop crops / cluster (2 w)": " / ".join(
            f"{e['particles_per_s']:.3g}" for e in (whole, crops, cluster)
        ),
        "gaps: rays/s loop whole / cluster; time loop whole / cluster": (
            f"{whole['rays_per_s']:.3g} / {cluster['rays_per_s']:.3g}; "
            f"{fmt_seconds(whole['median_s'])} / {fmt_seconds(cluster['median_s'])}"
        ),
        "gaps: cluster speed vs loop (whole volume / crops)": (
            f"{cluster['speed_vs_whole_volume_loop']:.2f}× / {cluster['speed_vs_crops_loop']:.2f}×"
        ),
        "gaps: per core vs loop (whole volume / crops), goal 0.95": (
            f"{cluster['per_core_vs_whole_volume_loop']:.2f} / "
            f"{cluster['per_core_vs_crops_loop']:.2f}"
        ),
        "gaps, inputs in Zarr: per core vs loop (whole volume / crops), same table": (
            f"{stored['per_core_vs_whole_volume_loop']:.2f} / "
            f"{stored['per_core_vs_crops_loop']:.2f}, {stored['same_table_as_dask_inputs']}"
        ),
        "gaps: per core in CPU time vs loop (whole volume / crops)": (
            f"{cluster['cpu_per_core_vs_whole_volume_loop']:.2f} / "
            f"{cluster['cpu_per_core_vs_crops_loop']:.2f}"
        ),
        "gaps: max |Δ gap| to loop; median |gap − drawn gap|": (
            f"{agree['max_abs_gap_difference_to_loop_um']:.2g} µm; "
            + (
                "n/a"
                if agree["median_abs_error_to_drawn_gap_um"] is None
                else f"{agree['median_abs_error_to_drawn_gap_um'] * 1000:.1f} nm"
            )
        ),
        "gaps: peak worker VmHWM / client peak RSS above start (cluster)": (
            f"{_opt_mib(cluster['max_worker_vm_hwm_mib'])} / "
            f"{cluster['client_peak_rss_above_start_mib']:.0f} MiB"
        ),
        "client max RSS (ru_maxrss)": f"{payload['memory']['client_max_rss_mib']:.0f} MiB",
    }
    large = payload["large"]
    if large is not None:
        stages = " / ".join(fmt_seconds(seconds) for seconds in large["stage_seconds"].values())
        out |= {
            f"out of core {large['size']}³, {len(large['samples'])} sample(s): completed; "
            "write / run wall time": (
                f"{large['completed']}; {fmt_seconds(large['write_campaign_s'])} / "
                f"{fmt_seconds(large['run_s'])}"
            ),
            "out of core: " + " / ".join(large["stage_seconds"]): stages,
            "out of core: peak worker VmHWM / limit / float32 volume": (
                f"{_opt_mib(large['max_worker_vm_hwm_mib'])} / "
                f"{large['memory_limit_mib']:.0f} MiB / {large['float32_volume_mib']:.0f} MiB"
            ),
            "out of core: stages not done": "; ".join(large["not_done"])[:200] or "none",
            "out of core: particles measured (with gap) / truth": (
                f"{large['particles_measured']} ({large['particles_with_gap']}) / "
                f"{large['truth_particles']}"
            ),
        }
    return out


def print_report(payload: dict[str, Any]) -> None:
    """Print the problems, timings and memory as tables."""
    machine = payload["machine"]
    load = [machine.get("load_average_1_5_15_min"), payload.get("load_average_at_end")]
    load_text = " -> ".join(f"{x[0]:.2f}" for x in load if x) or "n/a"
    print(
        f"{NAME}: {payload['repeats']} repeats; machine: {machine['cpu_count']} cores, "
        f"Python {machine['python']}, NumPy {machine['numpy']}, SciPy {machine['scipy']}, "
        f"cc3d {machine['cc3d']}, distributed {machine['distributed']}; "
        f"1-min load average {load_text} (start -> end)\n"
    )
    lab = payload["labelling"]
    problem = lab["problem"]
    print(
        f"labelling: {'×'.join(map(str, problem['shape']))} mask ({problem['mask']}), "
        f"{problem['foreground_fraction']:.1%} foreground, {problem['components']} components, "
        f"chunks {problem['chunks'][0]}³ ({problem['blocks']} blocks)"
    )
    rows: list[list[Any]] = []
    for key, name in (
        ("scipy", "scipy.ndimage.label"),
        ("cc3d", "cc3d.connected_components"),
        ("threads", "label(), dask threads (2)"),
        ("cluster", "label(), LocalCluster (2 w)"),
    ):
        e = lab[key]
        split = (
            f"{fmt_seconds(e['label_call_median_s'])} + {fmt_seconds(e['labels_compute_median_s'])}"
            if "label_call_median_s" in e
            else ""
        )
        rows.append(
            [
                name,
                fmt_seconds(e["median_s"]),
                _mvox(e["voxels_per_s"]),
                f"{e['speed_vs_scipy']:.2f}",
                f"{e['speed_vs_cc3d']:.2f}",
                split,
                str(e.get("identical_to_scipy", "")),
                f"{e['client_peak_rss_above_start_mib']:.0f} MiB",
            ]
        )
    print_table(
        rows,
        [
            "method",
            "median time",
            "Mvoxel/s",
            "vs scipy",
            "vs cc3d",
            "label() + .labels",
            "= scipy",
            "client peak RSS",
        ],
    )
    cl = lab["cluster"]
    print(
        f"cluster workers: idle RSS {_fmt_values(cl['worker_idle_rss_mib'])}, "
        f"VmHWM while labelling {_fmt_values(cl['worker_vm_hwm_mib'])}\n"
    )

    gaps = payload["gaps"]
    gp = gaps["problem"]
    print(
        f"gaps: {gp['particles']} spheres in {gp['shape'][0]}³ (chunks {gp['chunks'][0]}³), "
        f"{gp['rays_per_particle']} rays each, voxel {gp['voxel_size_um']} µm, rays up to "
        f"{gp['max_ray_length_um']} µm ({gp['max_ray_length_vox']:.0f} voxels; crop margin "
        f"{gp['crop_margin_vox']} voxels)"
    )
    rows = []
    for key, name in (
        ("kernel_loop_whole_volume", "ray_gaps_kernel looped, whole volume"),
        ("kernel_loop_crops", "ray_gaps_kernel looped, crops"),
        ("cluster", "measure_gaps, LocalCluster (2 w)"),
        ("cluster_stored", "the same, inputs in Zarr (as the stage)"),
    ):
        e = gaps[key]
        rows.append(
            [
                name,
                fmt_seconds(e["median_s"]),
                f"{e['particles_per_s']:.3g}",
                f"{e['rays_per_s']:.3g}",
                fmt_seconds(e["per_particle_s"]),
                f"{gaps['kernel_loop_whole_volume']['median_s'] / e['median_s']:.2f}",
            ]
        )
    print_table(
        rows, ["method", "median time", "particles/s", "rays/s", "per particle", "vs loop whole"]
    )
    agree, cl = gaps["agreement"], gaps["cluster"]
    print(
        f"agreement: max |Δ gap_mean| pipeline vs loop "
        f"{agree['max_abs_gap_difference_to_loop_um']:.2g} µm, valid rays equal "
        f"{agree['valid_rays_equal_to_loop']}, {agree['particles_with_gap']} particles with a "
        f"gap, {agree['valid_ray_fraction']:.1%} of rays valid; |gap − drawn| median "
        f"{_nm(agree['median_abs_error_to_drawn_gap_um'])}, max "
        f"{_nm(agree['max_abs_error_to_drawn_gap_um'])}"
    )
    print(
        f"cluster workers: idle RSS {_fmt_values(cl['worker_idle_rss_mib'])}, VmHWM while "
        f"measuring {_fmt_values(cl['worker_vm_hwm_mib'])}; client peak RSS above start "
        f"{cl['client_peak_rss_above_start_mib']:.0f} MiB; client max RSS "
        f"{payload['memory']['client_max_rss_mib']:.0f} MiB"
    )

    large = payload["large"]
    if large is None:
        return
    print(
        f"\nout of core: {large['size']}³ ({', '.join(large['samples'])}), worker memory limit "
        f"{large['memory_limit_mib']:.0f} MiB, float32 volume "
        f"{large['float32_volume_mib']:.0f} MiB; Dask memory: {large['dask_memory_config']}"
    )
    print(
        f"write_campaign {fmt_seconds(large['write_campaign_s'])}; run "
        f"{fmt_seconds(large['run_s'])}; completed: {large['completed']}; worker restarts: "
        f"{large['worker_restarts']}"
    )
    rows = [
        [o["stage"], o["sample"], o["state"], fmt_seconds(o["seconds"]), o["detail"][:60]]
        for o in large["outcomes"]
    ]
    print_table(rows, ["stage", "sample", "state", "seconds", "detail"])
    print_table(
        [
            [k, fmt_seconds(v["seconds"]), _opt_mib(v["max_worker_vm_hwm_mib"])]
            for k, v in large["intervals"].items()
        ],
        ["interval", "wall time", "max worker VmHWM"],
    )
    print(
        f"particles measured {large['particles_measured']} (with a gap "
        f"{large['particles_with_gap']}), truth {large['truth_particles']}; client peak RSS "
        f"above start {large['client_peak_rss_above_start_mib']:.0f} MiB"
    )
    spill = large["spill_metrics"]
    print(
        "worker spill metrics (cumulative): "
        + (
            "; ".join(
                f"{worker.rsplit(':', 1)[-1]}: "
                + (", ".join(f"{k} {v:.3g}" for k, v in m.items()) if isinstance(m, dict) else m)
                for worker, m in spill.items()
            )
            or "none"
        )
    )
    if large["error"]:
        print(f"error:\n{large['error']}")


def _fmt_values(values: Mapping[str, float | None]) -> str:
    return ", ".join("n/a" if v is None else f"{v:.0f}" for v in values.values()) + " MiB"


def _nm(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} nm"


if __name__ == "__main__":
    main()
