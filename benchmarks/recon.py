"""Benchmark: reconstruction throughput on a LocalCluster against ASTRA looped, and the 7×7 median.

What is measured
----------------
1. Reconstruction throughput, slices per second, of ASTRA's CPU ``FBP`` and
   ``SIRT`` (projector ``"linear"``) for four cases (default): FBP and SIRT at
   256² with 360 angles, and at 512² with 901 angles (fewer slices; SIRT with
   ``--iterations`` = 5 iterations at 256², ``--iterations-512`` = 3 at 512²,
   to keep the run short; SIRT times are also given per iteration).
   :func:`debond.pipeline.recon.reconstruct` (``gpu=False``,
   ``voxel_size_um=1``) is computed (``.compute()``: graph built, sinogram
   chunks shipped from the client, slices gathered back) on a
   ``distributed.LocalCluster`` of 1, then 2 worker processes with one thread
   each; the sinograms are split into chunks of a few rows (one task each).
   The rotation axis is off-centre, ``centre_px = (columns − 1)/2 + 1.37``,
   so the pipeline also pays for its sub-pixel axis handling (FBP: a Fourier
   shift of the sinograms; SIRT: a shifted ``parallel_vec`` geometry).
2. The 7×7 median, :func:`debond.pipeline.prep.median_filter`, on an
   (angles, rows, columns) float32 array (default (180, 256, 256), chunks of 15
   whole projections), computed both with Dask's threaded scheduler (as many
   threads as the largest worker count) and on the largest LocalCluster
   (array generated and persisted on the workers, result gathered back).
3. Peak memory per worker: while the pipeline runs, a thread in this process
   samples the resident set size (RSS, ``psutil``) of every worker process
   every 50 ms; the maximum over samples and workers is reported per case,
   with the idle RSS of the workers before the first case, the size of one
   sinogram chunk and one output chunk for comparison, and each worker's
   high-water mark (``VmHWM`` in ``/proc/<pid>/status``, Linux) when its
   cluster closes. (Not ``ru_maxrss``: on Linux it survives ``exec``, so a
   spawned worker would report its parent's peak.)

CPU time: the CPU seconds of the worker processes and of this process (client
and scheduler) per run against the loop's, ``loop CPU / pipeline CPU``: the
per-core efficiency were every worker given a free core, which the load of
other processes on a shared machine does not move (wall times do).

Where the pipeline's time goes: Dask's task stream records how long the
workers spent computing tasks. Reported per run: the kernel time per slice
(the workers' time in the reconstruction tasks, summed over repeats and
divided by repeats × slices), its ratio to the loop's time per
slice ("kernel / loop": the cost of the pipeline's kernel itself, e.g. the
FBP axis shift, and of a worker process sharing the machine), and the busy
fraction, task time / (workers × wall time) (the rest is scheduling, data
transfer and idle workers).

Every time is the median over ``--repeats`` runs (the individual times are
kept in the JSON). Untimed warm-ups come first: ASTRA's first calls in this
process, and imports and first calls (tiny FBP, SIRT and median graphs) on
every new cluster.

Reference
---------
ASTRA called directly in a plain Python loop in this process, one slice after
another: a projector (``"linear"``) is made once per loop; per slice the
sinogram and volume data objects and the algorithm are created, run, read and
freed. FBP uses the plain ``parallel`` geometry (ASTRA's CPU FBP accepts no
other) and ignores the axis offset; SIRT uses the same shifted
``parallel_vec`` geometry and the same option (``MinConstraint = 0``) as the
pipeline, so their results are compared too (max |Δ|). Reported: slices/s of
loop and pipeline, the ratio pipeline / loop on 1 worker, and the per-core
efficiency on w workers, (pipeline slices/s) / (w × loop slices/s). The
project's goal is a per-core efficiency ≥ 0.95; whether it is met is recorded,
never asserted.

ASTRA CPU SIRT seconds per iteration (for the README): the loop's time per
slice of the largest SIRT case (512², 901 angles) divided by its iterations
(set-up included), and the marginal time per iteration, (t_k − t_1)/(k − 1),
from a further one-iteration run of one slice.

The median's reference is ``scipy.ndimage.median_filter(whole, size=(1, 7, 7))``
on the same array in this process; the pipeline's results are checked to be
identical to it.

Data
----
Sinograms: per size one phantom (random disks of random attenuation inside
the reconstruction circle, fixed seed) projected once with ASTRA's forward
projector on the shifted ``parallel_vec`` geometry (so the axis is at
``centre_px``); each row is that sinogram times a random factor (0.5 to 1.5)
plus Gaussian noise (1% of the maximum), clipped at 0. The median's input is
uniform random float32 (``dask.array.random.default_rng(seed)``). Run times of
both methods do not depend on the values.

Notes
-----
The machine's load average is recorded at the start and the end: other
processes slow the loop and the cluster, not necessarily equally, so compare
ratios from runs on a quiet machine. ASTRA's CPU algorithms run on one thread,
so the loop uses one core; the cluster's workers are limited to one thread
each (Dask sets ``OMP_NUM_THREADS=1`` etc. in worker processes).

Usage
-----
``python benchmarks/recon.py [--repeats R] [--quick] [--workers 1 2]
[--iterations K] [--iterations-512 K] [--seed S] [--no-write]``; the result
goes to ``benchmarks/results/recon.json``. ``--quick``: tiny sizes (64² × 90
and 128² × 180 angles, SIRT with at most 2 iterations, a (30, 64, 64) median),
a smoke run of a few seconds a repeat.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import astra
import dask.array as da
import numpy as np
import psutil
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
from distributed import Client, LocalCluster, get_task_stream, wait
from numpy.typing import NDArray
from scipy import ndimage

import debond.pipeline.prep as prep
import debond.pipeline.recon as recon

NAME = "recon"
#: The project's goal: pipeline slices/s per worker ≥ 0.95 × the loop's slices/s.
GOAL_PER_CORE = 0.95
#: Rotation axis offset from the detector centre, pixels (off-centre on purpose).
AXIS_OFFSET_PX = 1.37
#: Median window edge, pixels (the paper's 7×7).
MEDIAN_SIZE = 7
#: Interval between RSS samples of the worker processes, seconds.
SAMPLE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Case:
    """One reconstruction problem: ``slices`` sinograms of ``angles`` × ``size`` pixels."""

    algorithm: str  # "fbp" or "sirt"
    size: int  # detector columns = reconstruction edge
    angles: int
    slices: int
    rows_per_chunk: int
    iterations: int = 1  # SIRT only

    @property
    def key(self) -> str:
        return f"{self.algorithm}_{self.size}"

    @property
    def label(self) -> str:
        its = f", {self.iterations} it." if self.algorithm == "sirt" else ""
        return f"{self.algorithm.upper()} {self.size}², {self.angles} angles{its}"

    @property
    def centre_px(self) -> float:
        return (self.size - 1) / 2.0 + AXIS_OFFSET_PX

    @property
    def sinogram_chunk_bytes(self) -> int:
        return self.rows_per_chunk * self.angles * self.size * 4

    @property
    def output_chunk_bytes(self) -> int:
        return self.rows_per_chunk * self.size * self.size * 4


def default_cases(iterations: int, iterations_512: int) -> list[Case]:
    """FBP and SIRT at 256² × 360 angles and 512² × 901 angles."""
    return [
        Case("fbp", 256, 360, slices=16, rows_per_chunk=2),
        Case("fbp", 512, 901, slices=4, rows_per_chunk=1),
        Case("sirt", 256, 360, slices=4, rows_per_chunk=1, iterations=iterations),
        Case("sirt", 512, 901, slices=2, rows_per_chunk=1, iterations=iterations_512),
    ]


def quick_cases(iterations: int) -> list[Case]:
    """Tiny sizes for a smoke run."""
    k = min(iterations, 2)
    return [
        Case("fbp", 64, 90, slices=8, rows_per_chunk=2),
        Case("fbp", 128, 180, slices=4, rows_per_chunk=1),
        Case("sirt", 64, 90, slices=4, rows_per_chunk=1, iterations=k),
        Case("sirt", 128, 180, slices=2, rows_per_chunk=1, iterations=k),
    ]


# ----------------------------------------------------------------- data


def angles_rad(n_angles: int) -> NDArray[np.float64]:
    """``n_angles`` equally spaced angles over [0, π), radians."""
    return np.linspace(0.0, np.pi, n_angles, endpoint=False)


def vectors_2d(angles: NDArray[np.float64], shift: float) -> NDArray[np.float64]:
    """``parallel_vec`` rows with the axis at column (columns − 1)/2 + ``shift``.

    The convention of :mod:`debond.pipeline.recon`: the detector is moved by
    ``−shift`` pixels along its own direction.
    """
    vectors = np.zeros((angles.size, 6))
    vectors[:, 0], vectors[:, 1] = np.sin(angles), -np.cos(angles)  # ray direction
    vectors[:, 4], vectors[:, 5] = np.cos(angles), np.sin(angles)  # detector u, one pixel
    vectors[:, 2:4] = -shift * vectors[:, 4:6]  # detector centre
    return vectors


def phantom(size: int, rng: np.random.Generator, disks: int = 40) -> NDArray[np.float32]:
    """Random disks of random attenuation (per voxel) inside the reconstruction circle."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2.0
    image = np.zeros((size, size), dtype=np.float64)
    for _ in range(disks):
        radius = rng.uniform(0.02, 0.12) * size
        distance = rng.uniform(0.0, 0.45 * size - radius)
        direction = rng.uniform(0.0, 2.0 * np.pi)
        cy, cx = distance * np.sin(direction), distance * np.cos(direction)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] += rng.uniform(0.002, 0.02)
    return image.astype(np.float32)


def sinograms(size: int, n_angles: int, rows: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """(rows, angles, size) float32: one projected phantom, scaled and noised per row."""
    shift = AXIS_OFFSET_PX
    angles = angles_rad(n_angles)
    geometry = astra.create_proj_geom("parallel_vec", size, vectors_2d(angles, shift))
    volume_geometry = astra.create_vol_geom(size, size)
    projector = astra.create_projector("linear", geometry, volume_geometry)
    try:
        sino_id, sino = astra.create_sino(phantom(size, rng), projector)
        astra.data2d.delete(sino_id)
    finally:
        astra.projector.delete(projector)
    base = np.asarray(sino, dtype=np.float32)
    factors = rng.uniform(0.5, 1.5, size=(rows, 1, 1)).astype(np.float32)
    noise = rng.normal(0.0, 0.01 * float(base.max()), size=(rows, n_angles, size))
    return np.clip(base[None] * factors + noise.astype(np.float32), 0.0, None)


# ----------------------------------------------------------------- reference


def astra_loop(
    sinos: NDArray[np.float32], angles: NDArray[np.float64], case: Case, iterations: int
) -> NDArray[np.float32]:
    """ASTRA directly, one slice after another; every object freed.

    FBP: plain ``parallel`` geometry (the axis offset ignored), filter
    ``ram-lak``. SIRT: the shifted ``parallel_vec`` geometry and
    ``MinConstraint = 0``, as the pipeline.
    """
    n_rows, _, n_columns = sinos.shape
    options: dict[str, float | str]
    if case.algorithm == "fbp":
        geometry = astra.create_proj_geom("parallel", 1.0, n_columns, angles)
        name, options, runs = "FBP", {"FilterType": "ram-lak"}, 1
    else:
        shift = case.centre_px - (n_columns - 1) / 2.0
        geometry = astra.create_proj_geom("parallel_vec", n_columns, vectors_2d(angles, shift))
        name, options, runs = "SIRT", {"MinConstraint": 0.0}, iterations
    volume_geometry = astra.create_vol_geom(n_columns, n_columns)
    projector = astra.create_projector("linear", geometry, volume_geometry)
    out = np.empty((n_rows, n_columns, n_columns), dtype=np.float32)
    try:
        for row in range(n_rows):
            sino_id = astra.data2d.create("-sino", geometry, sinos[row])
            rec_id = astra.data2d.create("-vol", volume_geometry, 0.0)
            try:
                config = astra.astra_dict(name)
                config["ProjectionDataId"] = sino_id
                config["ReconstructionDataId"] = rec_id
                config["ProjectorId"] = projector
                config["option"] = options
                algorithm_id = astra.algorithm.create(config)
                try:
                    astra.algorithm.run(algorithm_id, runs)
                    out[row] = astra.data2d.get(rec_id)
                finally:
                    astra.algorithm.delete(algorithm_id)
            finally:
                astra.data2d.delete([sino_id, rec_id])
    finally:
        astra.projector.delete(projector)
    return out


# ----------------------------------------------------------------- pipeline


def pipeline_volume(
    sinos: da.Array, angles: NDArray[np.float64], case: Case, iterations: int
) -> da.Array:
    """The lazy :func:`debond.pipeline.recon.reconstruct` of a case (CPU, 1 µm voxels)."""
    return recon.reconstruct(
        sinos,
        angles,
        case.centre_px,
        algorithm=case.algorithm,
        iterations=iterations,
        voxel_size_um=1.0,
        gpu=False,
    )


class RssSampler:
    """Peak resident set size of some processes, sampled by a background thread.

    Parameters
    ----------
    pids : mapping of name to process id
    interval_s : float
        Seconds between samples.
    """

    def __init__(self, pids: Mapping[str, int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-sampler", daemon=True)
        self.peak_bytes = dict.fromkeys(pids, 0.0)
        self.samples = 0

    def _poll(self) -> None:
        while True:
            for name, process in self._processes.items():
                try:
                    rss = float(process.memory_info().rss)
                except psutil.Error:
                    continue
                self.peak_bytes[name] = max(self.peak_bytes[name], rss)
            self.samples += 1
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_now(pids: Mapping[str, int]) -> dict[str, float]:
    """Current RSS of each process, bytes."""
    return {name: float(psutil.Process(pid).memory_info().rss) for name, pid in pids.items()}


def warm_up_cluster(client: Client, workers: int) -> None:
    """Imports and first calls on every worker: tiny FBP, SIRT and median graphs."""
    rows = 4 * workers
    angles = angles_rad(30)
    tiny = da.from_array(np.ones((rows, angles.size, 32), dtype=np.float32), chunks=(1, -1, -1))
    for algorithm in ("fbp", "sirt"):
        case = Case(algorithm, 32, angles.size, rows, 1, iterations=1)
        pipeline_volume(tiny, angles, case, 1).compute()
    projections = da.ones((rows, 16, 16), dtype=np.float32, chunks=(1, -1, -1))
    prep.median_filter(projections, MEDIAN_SIZE).compute()


def task_seconds(stream: list[dict[str, Any]], token: str) -> float:
    """Seconds the workers spent computing the tasks of one array (a task stream's records).

    Parameters
    ----------
    stream : list of dict
        Records of :func:`distributed.get_task_stream`.
    token : str
        The array's token (the end of its name): tasks whose name ends with it
        count. Dask fuses the sinogram chunks with the reconstruction into
        tasks named ``array-reconstruct-<token>``; the stream may also hold
        tasks of a previous graph that ended just before it was opened (worker
        clocks are offset slightly), which this excludes.

    Notes
    -----
    A key computed again (the same graph in the next repeat) keeps the
    earlier computations in its ``startstops``, so intervals are counted once.
    """
    intervals: set[tuple[str, float, float]] = set()
    for task in stream:
        key = task["key"]
        name = str(key[0] if isinstance(key, tuple) else key)
        if name.endswith(token):
            intervals.update(
                (str(key), part["start"], part["stop"])
                for part in task["startstops"]
                if part["action"] == "compute"
            )
    return sum(stop - start for _, start, stop in intervals)


def run_pipeline_case(
    client: Client,
    pids: Mapping[str, int],
    sinos: NDArray[np.float32],
    angles: NDArray[np.float64],
    case: Case,
    repeats: int,
) -> tuple[Timing, NDArray[np.float32], RssSampler, int, float, float]:
    """Time ``reconstruct(...).compute()`` on the client's cluster, sampling worker RSS.

    Returns the timing, the last volume, the RSS sampler, the number of
    reconstruction tasks, the seconds the workers spent in them (all repeats)
    and the CPU seconds per run of the workers, client and scheduler.
    """
    stack = da.from_array(sinos, chunks=(case.rows_per_chunk, -1, -1))
    tasks = len(stack.chunks[0])

    def compute() -> NDArray[np.float32]:
        return np.asarray(pipeline_volume(stack, angles, case, case.iterations).compute())

    token = pipeline_volume(stack, angles, case, case.iterations).name.rsplit("-", 1)[-1]
    cpu = cluster_cpu_seconds(client)
    with RssSampler(pids) as sampler, get_task_stream(client) as stream:
        timing, volume = time_repeats(compute, repeats)
    cpu = (cluster_cpu_seconds(client) - cpu) / repeats
    return timing, volume, sampler, tasks, task_seconds(stream.data, token), cpu


# ----------------------------------------------------------------- median


def median_pipeline(projections: da.Array, **compute: Any) -> NDArray[np.float32]:
    """:func:`debond.pipeline.prep.median_filter` computed (``compute``: its options)."""
    return np.asarray(prep.median_filter(projections, MEDIAN_SIZE).compute(**compute))


def time_median(
    compute: Callable[[], NDArray[np.float32]], reference: NDArray[np.float32], repeats: int
) -> tuple[Timing, bool]:
    """Time ``compute`` and check its last result equals ``reference`` exactly."""
    timing, value = time_repeats(compute, repeats)
    return timing, bool(np.array_equal(value, reference))


# ----------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Reconstruction (FBP, SIRT) on a LocalCluster against ASTRA looped; "
        "the 7×7 median against scipy."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of every measurement (medians)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="LocalCluster sizes, one thread per worker process (default 1 2)",
    )
    parser.add_argument("--iterations", type=int, default=5, help="SIRT iterations at 256²")
    parser.add_argument(
        "--iterations-512", type=int, default=3, help="SIRT iterations at 512² (default 3)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.iterations < 1 or args.iterations_512 < 1:
        parser.error("--repeats, --iterations and --iterations-512 must be >= 1")
    if any(w < 1 for w in args.workers):
        parser.error("--workers must be >= 1")
    args.workers = sorted(set(args.workers))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the JSON document."""
    args = parse_args(argv)
    repeats, seed = args.repeats, args.seed
    cases = (
        quick_cases(args.iterations)
        if args.quick
        else default_cases(args.iterations, args.iterations_512)
    )
    median_shape = (30, 64, 64) if args.quick else (180, 256, 256)
    median_chunk = 5 if args.quick else 15
    max_workers = max(args.workers)
    sources = source_digests(recon, prep)
    machine = machine_info()  # the load average at the start, among others

    # Data, generated once: sinograms per (size, angles), shared by FBP and SIRT.
    rng = np.random.default_rng(seed)
    data: dict[tuple[int, int], NDArray[np.float32]] = {}
    for case in cases:
        rows = max(c.slices for c in cases if (c.size, c.angles) == (case.size, case.angles))
        if (case.size, case.angles) not in data:
            data[case.size, case.angles] = sinograms(case.size, case.angles, rows, rng)
    lazy_projections = da.random.default_rng(seed).random(
        median_shape, dtype=np.float32, chunks=(median_chunk, -1, -1)
    )
    whole = np.asarray(lazy_projections.compute(scheduler="threads"))

    def case_data(case: Case) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        return data[case.size, case.angles][: case.slices], angles_rad(case.angles)

    # Reference: ASTRA looped in this process (after an untimed first call).
    warm = Case("sirt", 32, 30, 1, 1, iterations=1)
    astra_loop(np.ones((1, 30, 32), np.float32), angles_rad(30), warm, 1)
    astra_loop(np.ones((1, 30, 32), np.float32), angles_rad(30), Case("fbp", 32, 30, 1, 1), 1)
    loops: dict[str, Timing] = {}
    loop_cpu: dict[str, float] = {}
    loop_volumes: dict[str, NDArray[np.float32]] = {}
    for case in cases:
        sinos, angles = case_data(case)
        cpu = process_cpu_seconds()
        loops[case.key], loop_volumes[case.key] = time_repeats(
            functools.partial(astra_loop, sinos, angles, case, case.iterations), repeats
        )
        loop_cpu[case.key] = (process_cpu_seconds() - cpu) / repeats
    # One slice of the largest SIRT case with one iteration: marginal time per iteration.
    sirt_case = max((c for c in cases if c.algorithm == "sirt"), key=lambda c: c.size)
    sirt_sinos, sirt_angles = case_data(sirt_case)
    one_iteration, _ = time_repeats(
        lambda: astra_loop(sirt_sinos[:1], sirt_angles, sirt_case, 1), repeats
    )

    # Median reference and the threaded scheduler, in this process.
    median_scipy, median_ref = time_repeats(
        lambda: ndimage.median_filter(whole, size=(1, MEDIAN_SIZE, MEDIAN_SIZE)), repeats
    )
    whole_dask = da.from_array(whole, chunks=(median_chunk, -1, -1))
    median_threads, threads_identical = time_median(
        functools.partial(
            median_pipeline, whole_dask, scheduler="threads", num_workers=max_workers
        ),
        median_ref,
        repeats,
    )

    # The pipeline on LocalClusters of 1, 2, … workers.
    pipeline: dict[int, dict[str, Any]] = {}
    worker_memory: dict[int, dict[str, Any]] = {}
    median_cluster: Timing | None = None
    cluster_identical = False
    median_cluster_peak = 0.0
    for workers in args.workers:
        pipeline[workers] = {}
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            warm_up_cluster(client, workers)
            pids: dict[str, int] = client.run(os.getpid)
            idle = rss_now(pids)
            for case in cases:
                sinos, angles = case_data(case)
                timing, volume, sampler, tasks, busy, cpu = run_pipeline_case(
                    client, pids, sinos, angles, case, repeats
                )
                agreement = (
                    float(np.max(np.abs(volume - loop_volumes[case.key])))
                    if case.algorithm == "sirt"
                    else None
                )
                pipeline[workers][case.key] = {
                    "timing": timing,
                    "tasks": tasks,
                    "task_seconds": busy,
                    "peak_rss_bytes": sampler.peak_bytes,
                    "rss_samples": sampler.samples,
                    "max_abs_difference_to_loop": agreement,
                    "cpu_s": cpu,
                }
            if workers == max_workers:
                persisted = client.persist(lazy_projections)
                wait(persisted)
                with RssSampler(pids) as sampler:
                    median_cluster, cluster_identical = time_median(
                        functools.partial(median_pipeline, persisted),
                        median_ref,
                        repeats,
                    )
                median_cluster_peak = max(sampler.peak_bytes.values())
                del persisted
            hwm = {k: high_water_mark(pid) for k, pid in pids.items()}
            worker_memory[workers] = {
                "idle_rss_before_cases_mib": {k: v / MIB for k, v in idle.items()},
                "vm_hwm_at_close_mib": {k: None if v is None else v / MIB for k, v in hwm.items()},
            }

    # Figures.
    recon_results: dict[str, Any] = {}
    goals_met: dict[str, dict[str, bool]] = {}
    for case in cases:
        loop = loops[case.key]
        loop_rate = case.slices / loop.median
        entry: dict[str, Any] = {
            "case": asdict(case) | {"centre_px": case.centre_px},
            "chunk_bytes": {
                "sinogram": case.sinogram_chunk_bytes,
                "output": case.output_chunk_bytes,
            },
            "loop": loop.as_dict()
            | {
                "slices_per_s": loop_rate,
                "per_slice_s": loop.median / case.slices,
                "per_iteration_s": (
                    loop.median / case.slices / case.iterations
                    if case.algorithm == "sirt"
                    else None
                ),
            },
            "pipeline": {},
        }
        goals_met[case.key] = {}
        for workers in args.workers:
            run = pipeline[workers][case.key]
            rate = case.slices / run["timing"].median
            per_core = rate / (workers * loop_rate)
            kernel_per_slice = run["task_seconds"] / (repeats * case.slices)
            entry["pipeline"][str(workers)] = run["timing"].as_dict() | {
                "workers": workers,
                "tasks": run["tasks"],
                "slices_per_s": rate,
                "ratio_to_loop": rate / loop_rate,
                "per_core_efficiency": per_core,
                "goal_met": bool(per_core >= GOAL_PER_CORE),
                "peak_worker_rss_mib": {k: v / MIB for k, v in run["peak_rss_bytes"].items()},
                "max_peak_worker_rss_mib": max(run["peak_rss_bytes"].values()) / MIB,
                "rss_samples": run["rss_samples"],
                "task_seconds_all_repeats": run["task_seconds"],
                "kernel_per_slice_s": kernel_per_slice,
                "kernel_over_loop": (loop.median / case.slices) / kernel_per_slice,
                "busy_fraction": run["task_seconds"] / (workers * sum(run["timing"].times)),
                "max_abs_difference_to_loop": run["max_abs_difference_to_loop"],
                # CPU seconds per run (workers, client, scheduler) against the loop's:
                # the per-core efficiency on free cores, which other load does not move
                "cpu_s": run["cpu_s"],
                "loop_cpu_s": loop_cpu[case.key],
                "cpu_per_core_efficiency": loop_cpu[case.key] / run["cpu_s"],
            }
            goals_met[case.key][str(workers)] = bool(per_core >= GOAL_PER_CORE)
        recon_results[case.key] = entry

    per_iteration = loops[sirt_case.key].median / sirt_case.slices / sirt_case.iterations
    per_slice_k = loops[sirt_case.key].median / sirt_case.slices
    marginal = (
        (per_slice_k - one_iteration.median) / (sirt_case.iterations - 1)
        if sirt_case.iterations > 1
        else None
    )
    if median_cluster is None:  # the largest cluster always runs the median
        raise RuntimeError("the median was not timed on a cluster")
    problem = {
        "cases": [asdict(c) | {"key": c.key, "centre_px": c.centre_px} for c in cases],
        "axis_offset_px": AXIS_OFFSET_PX,
        "sinograms": "one ASTRA-projected random-disk phantom per size, scaled 0.5–1.5 "
        "and noised (1% of max) per row, clipped at 0",
        "median_shape": list(median_shape),
        "median_chunks": [median_chunk, median_shape[1], median_shape[2]],
        "median_input": "uniform random float32 (dask.array.random.default_rng(seed))",
        "workers": args.workers,
        "threads_per_worker": 1,
        "repeats": repeats,
        "seed": seed,
        "quick": args.quick,
    }
    payload: dict[str, Any] = {
        "name": NAME,
        "description": "reconstruction throughput of debond.pipeline.recon.reconstruct on a "
        "LocalCluster against ASTRA looped in one process; the 7×7 median against scipy",
        "machine": machine | {"astra": astra.__version__},
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "sources": sources,
        "sources_changed_during_run": sources != source_digests(recon, prep),
        "problem": problem,
        "recon": recon_results,
        "sirt_per_iteration": {
            "case": sirt_case.key,
            "size": sirt_case.size,
            "angles": sirt_case.angles,
            "iterations": sirt_case.iterations,
            "per_iteration_s": per_iteration,
            "one_iteration_one_slice": one_iteration.as_dict(),
            "marginal_per_iteration_s": marginal,
        },
        "median": {
            "shape": list(median_shape),
            "size": MEDIAN_SIZE,
            "scipy": median_scipy.as_dict(),
            "threads": median_threads.as_dict()
            | {
                "num_workers": max_workers,
                "speedup_vs_scipy": median_scipy.median / median_threads.median,
                "identical_to_scipy": threads_identical,
            },
            "cluster": median_cluster.as_dict()
            | {
                "workers": max_workers,
                "speedup_vs_scipy": median_scipy.median / median_cluster.median,
                "identical_to_scipy": cluster_identical,
                "max_peak_worker_rss_mib": median_cluster_peak / MIB,
            },
        },
        "memory": {
            "workers": {str(w): m for w, m in worker_memory.items()},
            "client_max_rss_mib": max_rss_bytes() / MIB,
        },
        "goals": {"per_core_efficiency": GOAL_PER_CORE, "met": goals_met},
    }
    payload["summary"] = summary(payload, cases, args.workers)

    print_report(payload, cases, args.workers)
    if payload["sources_changed_during_run"]:
        print("warning: debond.pipeline sources changed on disk during the run", file=sys.stderr)
    if not args.no_write:
        path = write_result(NAME, payload)
        print(f"\nwritten: {path}")
    return payload


def _met(flag: bool) -> str:
    return "met" if flag else "not met"


def summary(payload: dict[str, Any], cases: list[Case], workers: list[int]) -> dict[str, str]:
    """The ``{label: value}`` figures printed by ``benchmarks/run.py``."""
    out: dict[str, str] = {}
    for case in cases:
        entry = payload["recon"][case.key]
        runs = entry["pipeline"]
        rates = [entry["loop"]["slices_per_s"]] + [runs[str(w)]["slices_per_s"] for w in workers]
        names = " / ".join(["loop"] + [f"{w} w" for w in workers])
        out[f"{case.label}, {case.slices} slices: slices/s {names}"] = " / ".join(
            f"{r:.3g}" for r in rates
        )
        out[f"{case.label}: per-core efficiency {', '.join(f'{w} w' for w in workers)}"] = (
            ", ".join(
                f"{runs[str(w)]['per_core_efficiency']:.2f} ({_met(runs[str(w)]['goal_met'])})"
                for w in workers
            )
            + f" [goal ≥ {GOAL_PER_CORE}]; in CPU time "
            + ", ".join(f"{runs[str(w)]['cpu_per_core_efficiency']:.2f}" for w in workers)
        )
    sirt = payload["sirt_per_iteration"]
    marginal = sirt["marginal_per_iteration_s"]
    out[f"ASTRA CPU SIRT {sirt['size']}², {sirt['angles']} angles, per iteration"] = (
        f"{fmt_seconds(sirt['per_iteration_s'])} ({sirt['iterations']} it. incl. set-up)"
        + (f"; marginal {fmt_seconds(marginal)}" if marginal is not None else "")
    )
    median = payload["median"]
    shape = "×".join(str(n) for n in median["shape"])
    label = (
        f"7×7 median {shape} f32: scipy / dask threads ({median['threads']['num_workers']}) / "
        f"cluster ({median['cluster']['workers']} w)"
    )
    out[label] = (
        f"{fmt_seconds(median['scipy']['median_s'])} / "
        f"{fmt_seconds(median['threads']['median_s'])} / "
        f"{fmt_seconds(median['cluster']['median_s'])}"
    )
    out["7×7 median speed-up vs scipy (threads / cluster)"] = (
        f"{median['threads']['speedup_vs_scipy']:.2f}× / "
        f"{median['cluster']['speedup_vs_scipy']:.2f}×"
    )
    peaks = [
        max(payload["recon"][c.key]["pipeline"][str(w)]["max_peak_worker_rss_mib"] for c in cases)
        for w in workers
    ]
    out[f"peak RSS per worker, recon ({', '.join(f'{w} w' for w in workers)})"] = ", ".join(
        f"{p:.0f} MiB" for p in peaks
    )
    largest = max(cases, key=lambda c: c.sinogram_chunk_bytes)
    out[f"largest chunks ({largest.label}): sinogram / output"] = (
        f"{fmt_mib(largest.sinogram_chunk_bytes)} / {fmt_mib(largest.output_chunk_bytes)}"
    )
    return out


def print_report(payload: dict[str, Any], cases: list[Case], workers: list[int]) -> None:
    """Print the problem, the reconstruction and median timings and memory as tables."""
    machine = payload["machine"]
    load = [machine.get("load_average_1_5_15_min"), payload.get("load_average_at_end")]
    load_text = " -> ".join(f"{x[0]:.2f}" for x in load if x) or "n/a"
    print(
        f"{NAME}: ASTRA {machine['astra']} CPU, projector 'linear'; axis at "
        f"(columns − 1)/2 + {AXIS_OFFSET_PX} px; {payload['problem']['repeats']} repeats"
    )
    print(
        f"machine: {machine['cpu_count']} cores, Python {machine['python']}, "
        f"NumPy {machine['numpy']}, SciPy {machine['scipy']}; "
        f"1-min load average {load_text} (start -> end)\n"
    )
    rows: list[list[Any]] = []
    for case in cases:
        entry = payload["recon"][case.key]
        loop = entry["loop"]
        chunks = (
            f"{case.rows_per_chunk} rows: "
            f"{fmt_mib(case.sinogram_chunk_bytes)} -> {fmt_mib(case.output_chunk_bytes)}"
        )
        rows.append(
            [
                f"{case.label}, {case.slices} slices",
                "ASTRA loop",
                fmt_seconds(loop["median_s"]),
                f"{loop['slices_per_s']:.3g}",
                "1.00",
                "",
                "",
                "",
                chunks,
            ]
        )
        for w in workers:
            run = entry["pipeline"][str(w)]
            rows.append(
                [
                    "",
                    f"pipeline, {w} w ({run['tasks']} tasks)",
                    fmt_seconds(run["median_s"]),
                    f"{run['slices_per_s']:.3g}",
                    f"{run['per_core_efficiency']:.2f}",
                    f"{run['cpu_per_core_efficiency']:.2f}",
                    f"{run['kernel_over_loop']:.2f}",
                    f"{run['busy_fraction']:.2f}",
                    f"{run['max_peak_worker_rss_mib']:.0f} MiB",
                    "",
                ]
            )
    print_table(
        rows,
        [
            "case",
            "run",
            "median time",
            "slices/s",
            "per core",
            "CPU per core",
            "kernel/loop",
            "busy",
            "peak worker RSS",
            "chunk: sinogram -> slices",
        ],
    )
    print()
    sirt = payload["sirt_per_iteration"]
    median = payload["median"]
    figures: list[list[Any]] = [
        [
            f"ASTRA CPU SIRT {sirt['size']}², {sirt['angles']} angles: s/iteration "
            f"({sirt['iterations']} it., incl. set-up)",
            fmt_seconds(sirt["per_iteration_s"]),
        ],
        [
            "  one slice, 1 iteration (median)",
            fmt_seconds(sirt["one_iteration_one_slice"]["median_s"]),
        ],
    ]
    if sirt["marginal_per_iteration_s"] is not None:
        figures.append(
            [
                "  marginal s/iteration (t_k − t_1)/(k − 1)",
                fmt_seconds(sirt["marginal_per_iteration_s"]),
            ]
        )
    for case in cases:
        if case.algorithm == "sirt":
            diffs = [
                payload["recon"][case.key]["pipeline"][str(w)]["max_abs_difference_to_loop"]
                for w in workers
            ]
            figures.append(
                [f"{case.label}: max |pipeline − loop|", ", ".join(f"{d:.2g}" for d in diffs)]
            )
    figures += [
        ["7×7 median, scipy.ndimage (whole array)", fmt_seconds(median["scipy"]["median_s"])],
        [
            f"7×7 median, pipeline, dask threads ({median['threads']['num_workers']})",
            f"{fmt_seconds(median['threads']['median_s'])} "
            f"({median['threads']['speedup_vs_scipy']:.2f}×, identical: "
            f"{median['threads']['identical_to_scipy']})",
        ],
        [
            f"7×7 median, pipeline, cluster ({median['cluster']['workers']} w)",
            f"{fmt_seconds(median['cluster']['median_s'])} "
            f"({median['cluster']['speedup_vs_scipy']:.2f}×, identical: "
            f"{median['cluster']['identical_to_scipy']}), peak worker RSS "
            f"{median['cluster']['max_peak_worker_rss_mib']:.0f} MiB",
        ],
    ]
    for w, memory in payload["memory"]["workers"].items():
        idle = ", ".join(f"{v:.0f}" for v in memory["idle_rss_before_cases_mib"].values())
        peak = ", ".join(
            "n/a" if v is None else f"{v:.0f}" for v in memory["vm_hwm_at_close_mib"].values()
        )
        figures.append([f"{w} w: worker RSS idle / peak (VmHWM) at close", f"{idle} / {peak} MiB"])
    figures.append(["client max RSS", f"{payload['memory']['client_max_rss_mib']:.0f} MiB"])
    print_table(figures, ["figure", "value"])


if __name__ == "__main__":
    main()
