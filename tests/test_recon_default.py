"""The recon stage's default, ``algorithm = "auto"``: FBP on CPU-only workers, recorded
as such; SIRT where ASTRA finds a CUDA device; and an explicit iterative algorithm on
the CPU announced with an estimate of its duration before it runs."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import astra
import dask.array as da
import numpy as np
import pytest
from distributed import Client

import debond.pipeline.recon as recon
from debond.campaign import load_campaign
from debond.cluster import cluster
from debond.pipeline.recon import (
    CPU_STEP_SECONDS,
    WARN_SECONDS,
    Estimate,
    estimate_seconds,
    measure_step_seconds,
    reconstruct,
    reconstruct_sinograms,
    resolve_algorithm,
    workers_have_cuda,
)
from debond.runner import run_campaign
from debond.stages import REGISTRY
from debond.stages.base import kernel_keywords
from debond.storage import open_volume
from debond.synth import project, projection_geometry
from tests.pipeline.test_recon import VOXEL_UM, astra_loop, relative_difference

needs_cuda = pytest.mark.skipif(not astra.use_cuda(), reason="ASTRA finds no CUDA device")
cpu_only = pytest.mark.skipif(astra.use_cuda(), reason="ASTRA finds a CUDA device here")

CENTRE = 32.87  # the axis of the phantom's projections, px (sub-pixel on purpose)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Exact projections of two 64² slices (a disc with two inclusions), axis at
    32.87 px: sinograms (2, 90, 64) in voxel units and the angles."""
    y, x = np.mgrid[:64, :64] - 31.5
    slices = np.zeros((2, 64, 64), np.float32)
    slices[:, np.hypot(y, x) <= 24] = 0.05
    slices[0, np.hypot(y - 8, x + 5) <= 6] = 0.2
    slices[1, np.hypot(y + 10, x - 9) <= 4] = 0.3
    sinograms = project(slices * np.float32(VOXEL_UM), projection_geometry(90, 64, CENTRE - 31.5))
    angles = np.linspace(0.0, np.pi, 90, endpoint=False)
    return np.ascontiguousarray(sinograms.transpose(1, 0, 2)), angles


# ----------------------------------------------------------------- the default


def test_the_default_is_auto_in_the_section_and_the_kernel() -> None:
    keywords = kernel_keywords(REGISTRY.get("recon"))
    assert keywords["algorithm"] == "auto" and keywords["iterations"] == 1000
    fields = REGISTRY.get("recon").parameters.model_fields
    assert fields["algorithm"].get_default() == "auto"


@cpu_only
def test_default_on_a_cpu_only_machine_is_fbp_equal_to_astra(
    phantom: tuple[np.ndarray, np.ndarray],
) -> None:
    """No ``algorithm``: FBP, recorded as FBP, equal to ASTRA's FBP called directly."""
    sinograms, angles = phantom
    result = reconstruct_sinograms(
        da.from_array(sinograms, chunks=(1, -1, -1)),
        angles,
        voxel_size_um=VOXEL_UM,
        rotation_centre_px=CENTRE,
    )
    assert (result.algorithm, result.device, result.estimate) == ("fbp", "CPU", None)
    assert result.detail.startswith('FBP on CPU (algorithm "auto"); rotation centre 32.87 px')
    expected = astra_loop(sinograms, angles, CENTRE, "fbp", 1)
    assert relative_difference(result.volume.compute(), expected) <= 1e-5


def test_auto_resolves_from_every_worker() -> None:
    assert resolve_algorithm("auto", {"local": False}) == "fbp"
    assert resolve_algorithm("auto", {"local": True}) == "sirt"
    assert resolve_algorithm("AUTO", {"a": True, "b": True}) == "sirt"
    # Mixed: blocks are not pinned to GPU workers, so the run is FBP throughout.
    assert resolve_algorithm("auto", {"a": True, "b": False}) == "fbp"
    assert resolve_algorithm("auto", {}) == "fbp"
    for explicit in ("fbp", "sirt", "cgls"):
        assert resolve_algorithm(explicit, {"local": False}) == explicit
        assert resolve_algorithm(explicit, {"local": True}) == explicit


def test_auto_where_the_workers_report_cuda_builds_sirt(
    phantom: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision, not the run: workers that report CUDA give the SIRT graph (the
    same keys as an explicit SIRT) and no estimate."""
    sinograms, angles = phantom
    monkeypatch.setattr(recon, "workers_have_cuda", lambda: {"tcp://gpu-0": True})
    stack = da.from_array(sinograms, chunks=(1, -1, -1))
    result = reconstruct_sinograms(
        stack, angles, voxel_size_um=VOXEL_UM, rotation_centre_px=CENTRE, iterations=7
    )
    assert (result.algorithm, result.device, result.estimate) == ("sirt", "CUDA", None)
    sirt = reconstruct(
        stack.rechunk({0: 8}),
        angles,
        CENTRE,
        algorithm="sirt",
        iterations=7,
        voxel_size_um=VOXEL_UM,
    )
    assert result.volume.name == sirt.name


def test_the_kernel_resolves_auto_per_block(phantom: tuple[np.ndarray, np.ndarray]) -> None:
    """``reconstruct(algorithm="auto")`` decides where each block runs, as ``gpu=None``."""
    sinograms, angles = phantom
    cuda = astra.use_cuda()
    auto = reconstruct(sinograms, angles, CENTRE, algorithm="auto", iterations=5, voxel_size_um=1)
    chosen = reconstruct(
        sinograms,
        angles,
        CENTRE,
        algorithm="sirt" if cuda else "fbp",
        iterations=5,
        voxel_size_um=1,
    )
    np.testing.assert_array_equal(auto.compute(), chosen.compute())


@pytest.mark.gpu
@needs_cuda
def test_auto_with_a_cuda_device_runs_the_papers_sirt(
    phantom: tuple[np.ndarray, np.ndarray],
) -> None:
    sinograms, angles = phantom
    result = reconstruct_sinograms(
        da.from_array(sinograms, chunks=(2, -1, -1)),
        angles,
        voxel_size_um=VOXEL_UM,
        rotation_centre_px=CENTRE,
        iterations=50,
    )
    assert workers_have_cuda() == {"local": True}
    assert (result.algorithm, result.device, result.estimate) == ("sirt", "CUDA", None)
    expected = astra_loop(sinograms, angles, CENTRE, "sirt", 50, cuda=True)
    assert relative_difference(result.volume.compute(), expected) <= 2e-2


# ----------------------------------------------------------------- the estimate


@pytest.mark.parametrize(
    ("changed", "larger"),
    [
        ("iterations", 100),
        ("rows", 16),
        ("angles", 360),
        ("columns", 512),
        ("slots", 1),  # fewer slots: no faster
    ],
)
def test_the_cost_model_grows_with_iterations_and_size(changed: str, larger: int) -> None:
    base: dict[str, Any] = {"iterations": 10, "rows": 8, "angles": 180, "columns": 256}

    def seconds(**change: int) -> float:
        p = {**base, **change}
        shape = (p["rows"], p["angles"], p["columns"])
        slots = p.get("slots", 4)
        return estimate_seconds("sirt", p["iterations"], shape, slab_rows=2, slots=slots)

    assert seconds(**{changed: larger}) > seconds()


def test_the_cost_model_is_proportional() -> None:
    """Iterations ×10 → ×10; per row: angles × columns × grid edge."""
    one = estimate_seconds("sirt", 100, (1, 181, 640))
    assert estimate_seconds("sirt", 1000, (1, 181, 640)) == pytest.approx(10 * one)
    assert estimate_seconds("cgls", 100, (2, 181, 640)) == pytest.approx(2 * one)
    assert one == pytest.approx(100 * 181 * 640 * 640 * CPU_STEP_SECONDS)
    assert estimate_seconds("sirt", 100, (1, 181, 640), shape_yx=(320, 1280)) == pytest.approx(
        2 * one
    )
    # Blocks run side by side on the slots.
    assert estimate_seconds("sirt", 100, (8, 181, 640), slab_rows=2, slots=4) == pytest.approx(
        2 * one
    )
    assert estimate_seconds("fbp", 1000, (1, 181, 640)) < one / 100


def test_the_estimate_of_a_measured_run_is_within_a_factor_of_3() -> None:
    """Calibrated here (180 × 256), then a different problem timed here."""
    rng = np.random.default_rng(1)
    sinograms = rng.random((2, 120, 96), dtype=np.float32)
    angles = np.linspace(0.0, np.pi, 120, endpoint=False)
    iterations = 40
    step = measure_step_seconds()
    predicted = estimate_seconds("sirt", iterations, sinograms.shape, step_seconds=step)
    started = time.perf_counter()
    recon.reconstruct_block(
        sinograms, angles, 47.5, algorithm="sirt", iterations=iterations, voxel_size_um=1.0
    )
    measured = time.perf_counter() - started
    assert measured / 3 <= predicted <= 3 * measured, (predicted, measured)


@cpu_only
def test_explicit_sirt_on_the_cpu_comes_with_its_estimate(
    phantom: tuple[np.ndarray, np.ndarray],
) -> None:
    sinograms, angles = phantom
    stack = da.from_array(sinograms, chunks=(1, -1, -1))
    options: dict[str, Any] = {"voxel_size_um": VOXEL_UM, "rotation_centre_px": CENTRE}
    few = reconstruct_sinograms(stack, angles, algorithm="sirt", iterations=20, **options)
    assert few.estimate is not None and few.algorithm == "sirt"
    assert re.match(
        r"SIRT 20 iterations on CPU: about [\d.]+ (s|min) estimated; rotation", few.detail
    )
    many = reconstruct_sinograms(stack, angles, algorithm="cgls", iterations=2000, **options)
    assert many.estimate is not None
    assert many.estimate.seconds > few.estimate.seconds
    assert many.detail.startswith("CGLS 2000 iterations on CPU: about")
    np.testing.assert_allclose(
        few.volume.compute(), astra_loop(sinograms, angles, CENTRE, "sirt", 20), rtol=0, atol=1e-4
    )


def test_a_long_estimate_is_a_warning() -> None:
    tooth = estimate_seconds("sirt", 1000, (2, 181, 640), slab_rows=8, slots=2)
    assert tooth > WARN_SECONDS  # the default of the paper on tooth.h5's two rows
    text = str(Estimate(tooth, "sirt", 1000, CPU_STEP_SECONDS, 2))
    assert text.startswith("WARNING: SIRT 1000 iterations on CPU: about 21 min estimated")
    assert 'algorithm = "fbp"' in text
    short = str(Estimate(90.0, "sirt", 10, CPU_STEP_SECONDS, 2))
    assert short == "SIRT 10 iterations on CPU: about 1.5 min estimated"
    assert str(Estimate(700.0, "fbp", 1, CPU_STEP_SECONDS, 1)) == (
        "WARNING: FBP on CPU: about 12 min estimated"
    )
    assert str(Estimate(4 * 3600.0, "cgls", 1000, CPU_STEP_SECONDS, 2)).startswith(
        "WARNING: CGLS 1000 iterations on CPU: about 4.0 h estimated"
    )


# ----------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with cluster(workers=2) as connected:
        yield connected


@pytest.mark.distributed
@cpu_only
def test_a_campaign_without_recon_runs_fbp_and_records_it(
    small_campaign: Path, client: Client, tmp_path: Path
) -> None:
    """``[recon]`` left out: the workers are asked, FBP runs, the line printed before the
    work and the stored attributes say so; an explicit SIRT then announces its estimate."""
    shutil.copytree(
        small_campaign, tmp_path / "small", ignore=shutil.ignore_patterns("truth", "store.zarr")
    )
    campaign_file = tmp_path / "small" / "campaign.toml"
    text = re.sub(r"(?ms)^\[recon\]\n.*?\n\n", "", campaign_file.read_text())
    assert "[recon]" not in text
    campaign_file.write_text(text)
    assert set(workers_have_cuda()) == set(client.scheduler_info()["workers"])  # asked there
    lines: list[str] = []
    campaign = load_campaign(campaign_file)
    assert campaign.stage_parameters("recon")["algorithm"] == "auto"
    run_campaign(campaign, client, stages=["ingest", "prep", "recon"], echo=lines.append)
    running = [line for line in lines if line.startswith("recon") and "running" in line]
    assert len(running) == 4
    assert all('FBP on CPU (algorithm "auto")' in line for line in running), running
    store = tmp_path / "small" / "store.zarr"
    stored = open_volume(store, "c00", "recon")
    assert stored.attrs["algorithm"] == "fbp"
    assert stored.attrs["algorithm_requested"] == "auto"
    assert stored.attrs["device"] == "CPU"
    sinograms = open_volume(store, "c00", "sinograms")
    expected = astra_loop(
        sinograms.values,
        np.asarray(sinograms.attrs["angles_rad"]),
        float(stored.attrs["rotation_centre_px"]),
        "fbp",
        1,
    )
    assert relative_difference(stored.values, expected) <= 1e-5

    campaign_file.write_text(text + '\n[recon]\nalgorithm = "sirt"\niterations = 3\n')
    lines.clear()
    run_campaign(load_campaign(campaign_file), client, stages=["recon"], echo=lines.append)
    running = [line for line in lines if line.startswith("recon") and "running" in line]
    assert len(running) == 4
    assert all(
        re.search(r"SIRT 3 iterations on CPU: about [\d.]+ s estimated", line) for line in running
    ), running
    stored = open_volume(store, "c00", "recon")
    assert stored.attrs["algorithm"] == "sirt" and stored.attrs["estimated_seconds"] >= 0
