"""Memory per task: each stage's estimator against the measured peak, and blocks that fit.

A stage's ``peak_bytes(block_shape, parameters)`` is checked against the peak
traced (``tracemalloc``: NumPy reports its buffers to it) while its kernel
runs one block, on two block sizes: within 80–120 %. The segmentation, whose
blocks are sized from that estimate, gives the same phases whatever the blocks.
Two `slow` runs on `dask worker` processes of 1 GiB with Dask's default
thresholds: the demo sample with its tasks bounded to a quarter of its volume
(the same table as unbounded), and a sample of 2.2 GB, twice a worker's limit.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import resource
import shutil
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import pytest
import zarr
from dask.utils import parse_bytes
from distributed import Client, LocalCluster
from scipy.spatial import cKDTree

from debond.campaign import load_campaign
from debond.memory import TASK_MEMORY_KEY, largest_block, task_budget, task_bytes
from debond.pipeline.ingest import DARKS, DATA, FLATS, THETA
from debond.pipeline.label import SPLIT_BYTES_PER_VOXEL, split_kernel
from debond.pipeline.segment import (
    kernel_peak_bytes,
    phases_kernel,
    prior_phases_kernel,
    segment,
    stored_block_peak_bytes,
    thresholds_from_histogram,
)
from debond.runner import run_campaign, sized_tasks, task_memory
from debond.scans import Variant, attenuation_volume, draw_scene, render
from debond.stages import REGISTRY
from debond.storage import open_volume
from debond.synth import PAPER_PARAMETERS, PRESETS, Material, write_campaign, write_sem
from tests.conftest import STARTUP_S
from tests.processes import Processes, scheduler_address, wait_for_workers

VOXEL_UM = 0.05
PRIOR_UM = (0.35, 0.5)


def traced_peak(func: Callable[[], Any]) -> float:
    """Peak bytes allocated while ``func`` runs, above what was allocated before."""
    func()  # once untraced: first-call caches (FFT plans, imports) are not the task's
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return float(peak - base)


def scene(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True phases (uint8) and a noisy attenuation (float32) of a debond.scans scene."""
    variant = Variant(
        "memory",
        "a test scene",
        VOXEL_UM,
        (0.03, 0.06, 0.32, 0.18, 0.10),
        shape=shape,
        radius_um=PRIOR_UM,
        gap_um=(0.1, 0.2),
        groups=("sphere",) * 4,
        graphite_bodies=1,
        cbd_blobs=12,
        blur_sigma_vox=0.7,
    )  # type: ignore[arg-type]
    drawn = draw_scene(variant, seed)
    values = attenuation_volume(drawn, variant)
    noise = np.random.default_rng(seed).normal(0.0, 0.012, values.shape)
    return render(drawn, 1)[0].astype(np.uint8), (values + noise).astype(np.float32)


@pytest.fixture(scope="module")
def volumes() -> dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]]:
    return {shape: scene(shape) for shape in ((32, 48, 48), (48, 64, 64))}


def check(stage: str, block: tuple[int, ...], parameters: dict[str, Any], measured: float) -> None:
    estimate = REGISTRY.get(stage).peak_bytes(block, parameters)
    ratio = measured / estimate
    assert 0.8 <= ratio <= 1.2, (
        f"{stage} on {block}: measured {measured / 2**20:.2f} MiB, estimated "
        f"{estimate / 2**20:.2f} MiB ({ratio:.2f})"
    )


@pytest.mark.parametrize("block", [(60, 16, 64), (120, 32, 96)])
def test_ingest_estimate(tmp_path: Path, block: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f[DATA] = rng.integers(1000, 3000, block).astype(np.uint16)
        f[FLATS] = np.full((2, *block[1:]), 4000, np.uint16)
        f[DARKS] = np.full((2, *block[1:]), 100, np.uint16)
        f[THETA] = np.linspace(0.0, 180.0, block[0], endpoint=False)
    reader = REGISTRY.get("ingest").kernel
    with dask.config.set(scheduler="sync"):
        measured = traced_peak(lambda: reader(path, angles_per_chunk=block[0]).data.compute())
    check("ingest", block, {}, measured)


@pytest.mark.parametrize("block", [(90, 32, 128), (180, 48, 256)])
def test_prep_estimate(block: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    counts = da.from_array(rng.integers(1000, 3000, block).astype(np.uint16), chunks=-1)
    flats = np.full((4, *block[1:]), 4000, np.uint16)
    darks = np.full((2, *block[1:]), 100, np.uint16)
    prepare = REGISTRY.get("prep").kernel
    with dask.config.set(scheduler="sync"):
        measured = traced_peak(lambda: prepare(counts, flats, darks).data.compute())
    check("prep", block, {}, measured)


@pytest.mark.parametrize("block", [(8, 90, 96), (16, 180, 128)])
def test_recon_estimate(block: tuple[int, int, int]) -> None:
    """With the axis off the detector's centre, as on a real scan (FBP shifts it)."""
    rows, angles, columns = block
    sinograms = np.random.default_rng(0).random(block).astype(np.float32)
    theta = np.linspace(0.0, np.pi, angles, endpoint=False)
    parameters = {"algorithm": "fbp", "slab_rows": rows}
    reconstruct = REGISTRY.get("recon").kernel

    def run() -> Any:
        stack = da.from_array(sinograms, chunks=-1)
        return reconstruct(
            stack, theta, voxel_size_um=VOXEL_UM, rotation_centre_px=columns / 2 + 2.3, **parameters
        ).volume.compute()

    with dask.config.set(scheduler="sync"):
        measured = traced_peak(run)
    check("recon", block, parameters, measured)


@pytest.mark.parametrize("prior", [True, False], ids=["size-prior", "ranked"])
def test_segment_estimate(volumes: dict[Any, Any], prior: bool) -> None:
    smallest = volumes[min(volumes)][1]
    if prior:  # the size prior's kernel is the slower: blocks of the smaller scene
        levels = segment(smallest, voxel_size_um=VOXEL_UM, radius_range_um=PRIOR_UM).levels
        assert levels is not None
        for shape in ((24, 40, 40), smallest.shape):
            block = np.ascontiguousarray(smallest[tuple(slice(n) for n in shape)])
            measured = traced_peak(lambda b=block: prior_phases_kernel(b, levels))
            check("segment", shape, {"radius_range_um": PRIOR_UM, "thresholds": None}, measured)
        return
    for shape, (_, values) in volumes.items():
        counts, edges = np.histogram(values, bins=256)
        # the scene's grey levels (multi-Otsu of five classes takes seconds)
        thresholds = thresholds_from_histogram(counts, edges, (0.015, 0.08, 0.14, 0.25))
        measured = traced_peak(lambda v=values, t=thresholds: phases_kernel(v, t))
        check("segment", shape, {"radius_range_um": None, "thresholds": None}, measured)


@pytest.mark.parametrize("prior", [True, False], ids=["size-prior", "ranked"])
def test_a_block_from_the_store_fits_its_estimate(
    tmp_path: Path, volumes: dict[Any, Any], prior: bool
) -> None:
    """The phase pass from the store: a block's task reads its box of recon and of
    the mask, denoises the box and runs the kernel (one block: the whole scene)."""
    options: dict[str, Any] = {"voxel_size_um": VOXEL_UM, "sigma_voxels": 1.0}
    if prior:
        options["radius_range_um"] = PRIOR_UM
    else:
        options["thresholds"] = (0.015, 0.08, 0.14, 0.25)
    for shape, (_, values) in volumes.items():
        recon = zarr.create_array(tmp_path / f"recon{shape}", data=values, chunks=(8, 16, 16))
        with dask.config.set({TASK_MEMORY_KEY: 2**30}):
            result = segment(recon, **options)
        assert result.from_store is not None
        mask = result.sample.compute()
        stored = zarr.create_array(tmp_path / f"sample{shape}", data=mask, chunks=(8, 16, 16))
        phases = result.from_store(stored)
        assert phases.npartitions == 1
        measured = traced_peak(lambda p=phases: p.compute(scheduler="sync"))
        # the block is the scene: nothing to read beyond its faces
        estimate = stored_block_peak_bytes(shape, 0, kernel_peak_bytes(shape, prior=prior))
        ratio = measured / estimate
        assert 0.8 <= ratio <= 1.2, (
            f"a block of {shape} from the store: measured {measured / 2**20:.2f} MiB, "
            f"estimated {estimate / 2**20:.2f} MiB ({ratio:.2f})"
        )


def test_label_and_measure_estimates(tmp_path: Path, volumes: dict[Any, Any]) -> None:
    """The label stage's largest task, a block's final labels from the stored phases
    (one block: the whole scene), and a block of the measure stage."""
    label = REGISTRY.get("label").kernel
    measure = REGISTRY.get("measure").kernel
    with dask.config.set(scheduler="sync"):
        for shape, (phases, _) in volumes.items():
            lazy = da.from_array(phases, chunks=-1)
            stored = zarr.create_array(tmp_path / f"phases{shape}", data=phases, chunks=shape)
            scratch = zarr.open_group(tmp_path / f"scratch{shape}", mode="w")
            found = label(stored, scratch, voxel_size_um=VOXEL_UM, radius_range_um=PRIOR_UM)
            assert found.labels.npartitions == 1
            check("label", shape, {}, traced_peak(lambda f=found: f.labels.compute()))
            labels = da.from_array(found.labels.compute(), chunks=-1)
            measured = traced_peak(lambda p=lazy, lb=labels: measure(p, lb, voxel_size_um=VOXEL_UM))
            check("measure", shape, {"voxel_size_um": VOXEL_UM}, measured)


@pytest.mark.parametrize("edge", [40, 80])
def test_a_split_fits_its_estimate(edge: int) -> None:
    """A splitting task holds :data:`SPLIT_BYTES_PER_VOXEL` per voxel of a component's
    box: two touching balls, cut at their neck."""
    z, y, x = np.indices((edge, edge, 2 * edge)).astype(np.float32)
    radius = edge / 2.5
    mask = np.zeros(z.shape, bool)
    for centre in (0.5 * edge, 1.3 * edge):
        mask |= (z - edge / 2) ** 2 + (y - edge / 2) ** 2 + (x - centre) ** 2 <= radius**2
    assert split_kernel(mask, min_radius_vox=3.0)[1] == 2
    measured = traced_peak(lambda: split_kernel(mask, min_radius_vox=3.0))
    ratio = measured / (SPLIT_BYTES_PER_VOXEL * mask.size)
    assert 0.8 <= ratio <= 1.2, f"a split of {mask.shape}: {ratio:.2f} of the estimate"


@pytest.mark.parametrize("shape", [(192, 256), (384, 384)])
def test_sem_estimate(tmp_path: Path, shape: tuple[int, int]) -> None:
    preset = dataclasses.replace(PRESETS["demo"], sem_shape=shape)
    path = tmp_path / "section.tif"
    rng = np.random.default_rng(1)
    write_sem(path, rng, 3, preset, PAPER_PARAMETERS, Material())
    analyse = REGISTRY.get("sem").kernel
    check("sem", shape, {}, traced_peak(lambda: analyse(path)))


def test_every_stage_declares_its_memory() -> None:
    for stage in REGISTRY:
        assert stage.memory is not None, stage.name
        block = (16,) * (2 if stage.chain == "sem" else 3)
        assert stage.peak_bytes(block, {"voxel_size_um": VOXEL_UM}) > 0


# ------------------------------------------------------------------ blocks that fit


def test_the_budget_is_a_share_of_the_workers_limit() -> None:
    assert task_budget(2**30, 2) == int(0.3 * 2**30 / 2)
    assert task_budget(None, 1) is None
    # what a worker holds shrinks the room under Dask's pause threshold (80 %)
    held = 350 * 2**20
    assert task_budget(2**30, 2, held=held) == int(0.4 * (0.8 * 2**30 - held) / 2)
    assert task_budget(2**30, 1, held=held, pause=0.9) == int(0.4 * (0.9 * 2**30 - held))
    assert task_budget(8 * 2**30, 1, held=held) == int(0.3 * 8 * 2**30)  # the share binds
    for limit, held_here in ((500 * 2**20, held), (100 * 2**20, 0.0)):
        with pytest.raises(ValueError, match=r"holds \d+ MiB") as refused:
            task_budget(limit, 2, held=held_here)
        suggested = re.search(r"at least (\d+\.\d\d) GiB", str(refused.value))
        assert suggested is not None
        enough = float(suggested.group(1)) * 2**30  # the limit it suggests is enough
        assert task_budget(enough, 2, held=held_here) >= 64 * 2**20
    with dask.config.set({TASK_MEMORY_KEY: "64 MiB"}):
        assert task_bytes() == 64 * 2**20
    with dask.config.set({TASK_MEMORY_KEY: -1}), pytest.raises(ValueError, match="debond.task"):
        task_bytes()


def one_gib_workers(processes: bool, workers: int, threads: int) -> LocalCluster:
    """A local cluster of workers limited to 1 GiB each, in this process or their own."""
    return LocalCluster(
        processes=processes,
        n_workers=workers,
        threads_per_worker=threads,
        memory_limit="1GiB",
        dashboard_address="127.0.0.1:0",
    )


def test_the_runner_reads_the_workers_limit_and_keeps_a_set_value() -> None:
    """Workers in this process share its memory: a task gets 30 % of the limit."""
    with one_gib_workers(processes=False, workers=2, threads=2) as local, Client(local) as client:
        expected = task_budget(2**30, 2)
        assert task_memory(client) == expected
        with sized_tasks(client) as budget:
            assert budget == task_bytes() == expected
        with dask.config.set({TASK_MEMORY_KEY: "64 MiB"}), sized_tasks(client) as budget:
            assert budget == task_bytes() == 64 * 2**20
    assert dask.config.get(TASK_MEMORY_KEY, None) is None


def worker_rss_with_stages() -> int:
    """On a worker: its resident bytes once debond's stages are loaded (psutil)."""
    import psutil

    import debond.stages  # noqa: F401

    return int(psutil.Process().memory_info().rss)


def test_the_runner_leaves_room_for_what_a_worker_process_holds() -> None:
    """A worker process of 1 GiB holds ~350 MiB of libraries: a task gets 40 % of the rest
    under the pause threshold, less than 30 % of the limit."""
    with one_gib_workers(processes=True, workers=1, threads=1) as local, Client(local) as client:
        budget = task_memory(client)
        (rss,) = client.run(worker_rss_with_stages).values()
    assert budget is not None
    assert rss > 100 * 2**20
    assert budget < task_budget(2**30, 1)
    assert budget == pytest.approx(0.4 * (0.8 * 2**30 - rss), rel=0.1)


@pytest.mark.parametrize("budget", [1e5, 3e6, 5e7, 1e9])
def test_the_largest_block_fits_and_one_step_more_does_not(budget: float) -> None:
    shape, halo = (300, 200, 250), (12, 12, 12)

    def peak(block: tuple[int, ...]) -> float:
        return 40.0 * float(np.prod(block))

    block = largest_block(shape, halo, peak, budget)
    padded = [b + (2 * h if b < n else 0) for b, n, h in zip(block, shape, halo, strict=True)]
    smallest = all(b == max(16, h) for b, h in zip(block, halo, strict=True))
    assert peak(tuple(padded)) <= budget or smallest
    if block != shape:
        edge = max(block) + 16
        bigger = [min(n, edge) for n in shape]
        padded = [b + (2 * h if b < n else 0) for b, n, h in zip(bigger, shape, halo, strict=True)]
        assert peak(tuple(padded)) > budget


@pytest.mark.slow
@pytest.mark.parametrize("prior", [True, False], ids=["size-prior", "ranked"])
def test_the_phases_do_not_depend_on_the_blocks(prior: bool) -> None:
    """One block (the whole volume) against blocks split along every axis."""
    # the size prior's halo is 52 voxels here, the ranked kernel's 12
    _, values = scene((40, 112, 112) if prior else (40, 72, 72), seed=2)
    options: dict[str, Any] = {"voxel_size_um": VOXEL_UM}
    if prior:
        options["radius_range_um"] = PRIOR_UM
    else:
        options["graphite_min_radius_um"] = 0.1
    found = []
    for budget, chunks in ((2**30, -1), (2e6 if prior else 3e6, (9, 30, 20))):
        with dask.config.set({TASK_MEMORY_KEY: budget}):
            result = segment(da.from_array(values, chunks=chunks), **options)
            blocks = result.phases.chunks
            found.append((result.phases.compute(), result.sample.compute(), blocks))
    (whole, whole_sample, one), (split, split_sample, many) = found
    assert len(one[1]) == len(one[2]) == 1 and len(many[1]) > 1 and len(many[2]) > 1
    assert np.array_equal(whole_sample, split_sample)
    assert np.array_equal(whole, split)


# ------------------------------------------------------------------ a small-memory run

#: A worker's limit in the small-memory runs, the scale benchmark's: Dask's
#: thresholds as they come (pause at 80 %, restart at 95 %). A worker process
#: holds 200–300 MiB of libraries before its first task, so much less than this
#: leaves a task too little to be worth running.
SMALL_LIMIT = "1GiB"
SMALL_LIMIT_BYTES = parse_bytes(SMALL_LIMIT)

#: The volume larger than a worker's memory: a tall pillar of 2112 × 512² float32
#: voxels is 2.2 GB, 2.06 × the limit, more than both workers together. Its
#: slices are the scale benchmark's 512², sampled by as many projections.
LARGE_SHAPE = (2112, 512, 512)

#: Seconds the large run may take, its data written; past them it is taken to
#: wait on a worker paused for good. The run took 20 minutes on 2 quiet cores
#: and 28 beside an 18-minute test run (3 December 2026); the limit keeps CI's
#: slow job within its 90 minutes.
LARGE_RUN_LIMIT_S = 2400.0

#: Worker log lines that say a worker ran out of memory or was restarted for it.
OUT_OF_MEMORY = ("95%", "Restarting worker", "KilledWorker", "Worker process died")


@dataclasses.dataclass
class WorkerRun:
    """What a run on `dask worker` processes left: its table, the workers' logs and peaks."""

    table: pd.DataFrame
    log_lines: list[str]
    peak_rss_bytes: list[float]
    restarted: bool


def run_on_workers(
    campaign_file: Path, folder: Path, memory_limit: str, limit_s: float | None = None
) -> WorkerRun:
    """A whole run on a `dask scheduler` and two workers of `memory_limit`, 1 thread each.

    With `limit_s`, the test fails when the run has not ended within that many
    seconds: a worker whose memory stays over Dask's pause threshold never
    resumes, and the run would wait for it for good.
    """
    dask_cli = str(Path(sys.executable).with_name("dask"))
    info = folder / "scheduler.json"
    processes = Processes(folder)
    deadline = time.monotonic() + STARTUP_S
    try:
        scheduler = [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0"]
        processes.start("scheduler", [*scheduler, "--no-dashboard", "--scheduler-file", str(info)])
        address = scheduler_address(info, processes, deadline)
        for i in range(2):
            worker = [dask_cli, "worker", address, "--nthreads", "1", "--no-dashboard"]
            processes.start(
                f"worker {i}", [*worker, "--host", "127.0.0.1", "--memory-limit", memory_limit]
            )
        wait_for_workers(address, processes, 2, deadline)
        with Client(address) as client:
            pids = client.run(os.getpid)
            ended: queue.Queue[BaseException | None] = queue.Queue()

            def run() -> None:
                try:
                    run_campaign(load_campaign(campaign_file), client, echo=lambda _: None)
                    ended.put(None)
                except BaseException as error:  # handed to the test's thread
                    ended.put(error)

            threading.Thread(target=run, daemon=True).start()
            try:
                failure = ended.get(timeout=limit_s)
            except queue.Empty:
                pytest.fail(f"the run did not end within {limit_s:.0f} s")
            if failure is not None:
                raise failure
            restarted = client.run(os.getpid) != pids
            # the workers' peak resident set since they started (ru_maxrss: kB on Linux)
            usage = client.run(resource.getrusage, resource.RUSAGE_SELF)
            peaks = [1024.0 * u.ru_maxrss for u in usage.values()]
            logs = [line for log in client.get_worker_logs().values() for _, line in log]
            logs += [line for _, line in client.get_scheduler_logs()]
    finally:
        processes.stop()
    tables = load_campaign(campaign_file).tables_dir
    return WorkerRun(pd.read_parquet(tables / "particles.parquet"), logs, peaks, restarted)


@pytest.mark.slow
def test_a_small_memory_run_gives_the_table_of_an_unbounded_one(tmp_path: Path) -> None:
    """Tasks bounded to a quarter of the volume, on workers of 1 GiB, against no bounds.

    The demo volume is smaller than a worker, so here the volume is bounded
    through the memory a task may use (what the runner derives from the
    workers' limit), which splits the segmentation's blocks along every axis;
    the next test runs a volume twice a worker's limit.
    """
    write_campaign(tmp_path / "bounded", "demo", seed=0, cycles=(3,))
    shutil.copytree(tmp_path / "bounded", tmp_path / "unbounded")
    shape = PRESETS["demo"].shape
    budget = 4 * int(np.prod(shape)) // 4  # float32 reconstruction
    block = largest_block(shape, (12,) * 3, lambda b: 60.0 * float(np.prod(b)), budget)
    assert all(b < n for b, n in zip(block, shape, strict=True))
    unbounded = run_on_workers(tmp_path / "unbounded" / "campaign.toml", tmp_path, "0")
    with dask.config.set({TASK_MEMORY_KEY: budget}):
        bounded = run_on_workers(tmp_path / "bounded" / "campaign.toml", tmp_path, SMALL_LIMIT)
    assert not bounded.restarted, "a worker was restarted"
    assert not [line for line in bounded.log_lines if "Pausing worker" in line or "95%" in line]
    assert len(bounded.table) > 0
    pd.testing.assert_frame_equal(bounded.table, unbounded.table)


@pytest.mark.slow
def test_a_volume_twice_a_workers_memory_runs_with_dasks_defaults(tmp_path: Path) -> None:
    """A 2112 × 512² sample (2.2 GB as float32) from raw projections to its particle table
    on two workers of 1 GiB, nothing tuned: no worker restarted, no task lost for
    memory, every worker's peak under its limit, and the particles those of the
    truth. Workers may pause (Dask's default) and resume."""
    large = PRESETS["large"]
    preset = dataclasses.replace(
        large,
        shape=LARGE_SHAPE,
        n_angles=round(0.75 * LARGE_SHAPE[-1]),
        sem_images=1,
        sem_shape=(256, 256),
    )
    write_campaign(tmp_path / "large", preset, seed=0, cycles=(3,))
    campaign_file = tmp_path / "large" / "campaign.toml"
    ran = run_on_workers(campaign_file, tmp_path, SMALL_LIMIT, limit_s=LARGE_RUN_LIMIT_S)

    volume = open_volume(load_campaign(campaign_file).store_location, "c03", "recon")
    assert volume.nbytes > 2 * SMALL_LIMIT_BYTES
    assert not ran.restarted, "a worker was restarted"
    assert not [line for line in ran.log_lines if any(s in line for s in OUT_OF_MEMORY)]
    assert max(ran.peak_rss_bytes) < SMALL_LIMIT_BYTES

    # The table is the sample's: inside particles found where the truth has them.
    truth = pd.read_parquet(tmp_path / "large" / "truth" / "particles.parquet")
    voxel = preset.voxel_size_um
    inside = truth[~truth["touches_border"] & (truth["radius_um"] > 3 * voxel)]
    measured = ran.table[ran.table["modality"] == "3d"]
    centroid = ["centroid_z_um", "centroid_y_um", "centroid_x_um"]
    distance, index = cKDTree(measured[centroid].to_numpy()).query(inside[centroid].to_numpy())
    found = distance < 2 * voxel
    assert found.mean() > 0.9
    error = measured["radius_um"].to_numpy()[index[found]] - inside["radius_um"].to_numpy()[found]
    assert abs(float(np.median(error))) < voxel
