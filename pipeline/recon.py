"""Tomographic reconstruction with ASTRA: sinograms → attenuation volume.

Two layers (DESIGN.md, principle 1):

- :func:`reconstruct_block`, the kernel: (rows, angles, columns) NumPy
  sinograms → (rows, y, x) slices, each row reconstructed independently by an
  ASTRA 2D algorithm (or, on a GPU, the whole slab by ASTRA's 3D iterative
  algorithms).
- :func:`reconstruct`, the lazy wrapper: validates, then ``map_blocks`` over
  row chunks (rows are independent: no halo).

Geometry. Detector column ``j`` is centred at ``j`` (the first at 0); pixels
and voxels have the same size. The rotation axis projects onto column
``centre_px``, applied to a fraction of a pixel, never rounded: with
``shift = centre_px − (columns − 1)/2`` the detector of an ASTRA
``parallel_vec`` geometry is moved by ``−shift`` along its own direction
(``vectors[:, 2:4] = −shift·u``, the convention of
:func:`debond.synth.projection_geometry`), which places the axis at the centre
of the reconstruction grid. ASTRA's CPU ``FBP`` accepts only the plain
``parallel`` geometry (ASTRA 2.5: "FBP currently only supports parallel
projection geometries"), so on the CPU the sinogram is moved instead: an exact
band-limited (Fourier) shift by ``shift`` columns of the edge-padded sinogram
brings the axis to the detector centre, then ``FBP`` runs on ``parallel``.
Everything else (SIRT, CGLS on the CPU; FBP_CUDA, SIRT_CUDA, CGLS_CUDA,
SIRT3D_CUDA, CGLS3D_CUDA on a GPU) uses the shifted ``parallel_vec`` /
``parallel3d_vec`` geometry directly.

Local tomography. When the sample is wider than the detector, every
projection is cut at its edges and FBP's ramp filter, seeing a step there,
raises a bright rim and a cupping across the field of view. On the CPU, FBP
filters such a row (:func:`truncated`) on a detector widened with its edge
values, half its width on either side; the grid is unchanged. The offset
that local tomography cannot recover remains (a few % of the attenuation).

Units. Sinograms are line integrals in voxel units (−log of the normalised
transmission); ASTRA returns attenuation per voxel, divided here by
``voxel_size_um`` to give 1/µm.

CPU or GPU (principle 4): with ``gpu=None`` each block asks ASTRA on the
worker that runs it (``astra.use_cuda()``), so one graph runs on both.

The stage's default, ``algorithm="auto"``: the paper's SIRT where ASTRA finds
a CUDA device on the workers, FBP on CPU-only workers (1000 CPU SIRT
iterations take hours). :func:`reconstruct_sinograms` asks every worker once,
before it builds the graph (:func:`workers_have_cuda`), and builds one graph
with the algorithm it chose, so the stored ``algorithm`` attribute is what
every block ran. An iterative algorithm on CPU workers comes with an estimate
of its duration (:func:`estimate_seconds`, calibrated by
:func:`measure_step_seconds` on a worker) that the stage shows before it runs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import astra
import dask.array as da
import numpy as np
from dask.base import get_scheduler
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sp_fft

from debond.pipeline import fbp as device_fbp
from debond.pipeline.arrays import array_module, is_cupy, meta_like
from debond.pipeline.centre import resolve_centre

__all__ = [
    "ALGORITHMS",
    "AUTO",
    "CPU_STEP_SECONDS",
    "FBP_FILTERS",
    "Estimate",
    "Reconstruction",
    "estimate_seconds",
    "measure_step_seconds",
    "reconstruct",
    "reconstruct_block",
    "reconstruct_sinograms",
    "resolve_algorithm",
    "workers_have_cuda",
]

#: Algorithm names accepted by ``algorithm`` (besides :data:`AUTO`).
ALGORITHMS = ("fbp", "sirt", "cgls")
#: ``algorithm = "auto"``: SIRT where ASTRA finds a CUDA device, FBP elsewhere.
AUTO = "auto"
#: What ``"auto"`` becomes with and without a CUDA device.
AUTO_CHOICE = {True: "sirt", False: "fbp"}
#: ASTRA's CPU cost of one ray–voxel step, seconds: one SIRT or CGLS iteration
#: of one sinogram row (angles, columns) on a (y, x) grid takes about
#: ``angles · columns · max(y, x)`` steps (a forward and a back projection
#: with the ``linear`` projector, single-threaded); CPU FBP about
#: :data:`FBP_ITERATIONS` of an iteration. 8–9.6 ns per step from 64² to 640²
#: on this project's shared 2-core development machine (README, "How long a
#: reconstruction takes"); the default of :func:`estimate_seconds`; the stage
#: measures it again where the blocks run (:func:`measure_step_seconds`).
CPU_STEP_SECONDS = 8.5e-9
#: CPU FBP costs about this fraction of one SIRT iteration (0.38–0.53 measured).
FBP_ITERATIONS = 0.5
#: An estimate above this many seconds is shown as a WARNING.
WARN_SECONDS = 600.0
#: FBP filters (ASTRA's ``FilterType`` names).
FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
#: ASTRA's CPU projector for every CPU algorithm: Joseph's linear interpolation,
#: the model of the CUDA kernels and of the synthetic projections.
CPU_PROJECTOR = "linear"
#: On a GPU, SIRT and CGLS use ASTRA's 3D algorithms over a block of at least
#: this many rows (one upload, one kernel launch per iteration for the slab).
SLAB_MIN_ROWS = 2
#: A sinogram whose edge columns carry more than this share of its 99th
#: percentile is truncated (the sample is wider than the field of view).
TRUNCATION_SHARE = 0.05

_CPU = {"fbp": "FBP", "sirt": "SIRT", "cgls": "CGLS"}
_CUDA = {"fbp": "FBP_CUDA", "sirt": "SIRT_CUDA", "cgls": "CGLS_CUDA"}
_CUDA_3D = {"sirt": "SIRT3D_CUDA", "cgls": "CGLS3D_CUDA"}


@dataclass(frozen=True)
class _Parameters:
    """Validated reconstruction parameters (see :func:`reconstruct_block`)."""

    angles: NDArray[np.float64]
    centre_px: float
    algorithm: str
    iterations: int
    nonnegative: bool
    fbp_filter: str
    voxel_size_um: float
    gpu: bool | None
    shape_yx: tuple[int, int]


def reconstruct_block(
    sinograms: ArrayLike,
    angles: ArrayLike,
    centre_px: float,
    *,
    algorithm: str = "sirt",
    iterations: int = 1000,
    nonnegative: bool = True,
    fbp_filter: str = "ram-lak",
    voxel_size_um: float,
    gpu: bool | None = None,
    shape_yx: tuple[int, int] | None = None,
) -> NDArray[np.float32]:
    """Reconstruct a block of sinogram rows with ASTRA (the pure kernel).

    Parameters
    ----------
    sinograms : (rows, angles, columns) array
        Line integrals in voxel units (−log of the flat/dark-normalised
        transmission), any real dtype (computed in float32).
    angles : (angles,) array
        Projection angles, radians.
    centre_px : float
        Detector column (first at 0) onto which the rotation axis projects;
        applied to a fraction of a pixel. Must lie on the detector,
        −0.5 … columns − 0.5.
    algorithm : {"sirt", "fbp", "cgls", "auto"}
        ``"sirt"`` (default): ASTRA SIRT / SIRT_CUDA; ``"fbp"``: filtered
        back-projection (filter ``fbp_filter``); ``"cgls"``: conjugate gradient least
        squares; ``"auto"``: SIRT where this block runs on CUDA, FBP on the
        CPU (decided per block, as ``gpu=None`` is; :func:`reconstruct_sinograms`
        decides once for a whole run instead, so that it can record the choice).
    iterations : int
        Iterations of SIRT and CGLS, ≥ 1 (default 1000); unused by FBP.
    nonnegative : bool
        SIRT only: clamp the estimate at ≥ 0 after every iteration (ASTRA
        option ``MinConstraint = 0``). FBP and CGLS have no constraint in
        ASTRA and ignore it. Default True.
    fbp_filter : str
        FBP only: the filter, one of :data:`FBP_FILTERS` (ASTRA's
        ``FilterType``); default ``"ram-lak"``.
    voxel_size_um : float
        Voxel (and detector pixel) edge, µm, > 0.
    gpu : bool or None
        ``None`` (default): ASTRA's CUDA algorithms when ``astra.use_cuda()``
        is True where this runs, the CPU algorithms otherwise. ``True``:
        require CUDA. ``False``: CPU only.
    shape_yx : (int, int), optional
        Reconstruction grid (y, x) in voxels, centred on the rotation axis.
        Default: (columns, columns).

    Returns
    -------
    (rows, y, x) numpy.ndarray of float32
        Linear attenuation coefficient, 1/µm (ASTRA's result / ``voxel_size_um``).

    Raises
    ------
    ValueError
        An argument out of range; the message names it.
    RuntimeError
        ``gpu=True`` where ASTRA finds no CUDA device.

    Notes
    -----
    On the CPU every row runs its own ASTRA 2D algorithm (projector
    ``"linear"``). On a GPU, FBP runs row by row (FBP_CUDA, ``parallel_vec``);
    SIRT and CGLS run over the whole block at once with SIRT3D_CUDA /
    CGLS3D_CUDA on a ``parallel3d_vec`` geometry when the block has at least
    :data:`SLAB_MIN_ROWS` rows (rays stay within their row, so this solves the
    same per-row problems), else row by row with SIRT_CUDA / CGLS_CUDA.
    Every ASTRA object is freed, also on error.

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.linspace(0, np.pi, 60, endpoint=False)
    >>> sino = np.zeros((1, 60, 32), np.float32)  # an empty field of view
    >>> reconstruct_block(sino, theta, 15.5, algorithm="fbp", voxel_size_um=0.5).shape
    (1, 32, 32)
    """
    block = np.asarray(sinograms)
    params = _parameters(
        block.shape,
        angles,
        centre_px,
        algorithm=algorithm,
        iterations=iterations,
        nonnegative=nonnegative,
        fbp_filter=fbp_filter,
        voxel_size_um=voxel_size_um,
        gpu=gpu,
        shape_yx=shape_yx,
    )
    return _reconstruct(block, params)


def reconstruct(
    sinograms: da.Array | ArrayLike,
    angles: ArrayLike,
    centre_px: float,
    *,
    algorithm: str = "sirt",
    iterations: int = 1000,
    nonnegative: bool = True,
    fbp_filter: str = "ram-lak",
    voxel_size_um: float,
    gpu: bool | None = None,
    shape_yx: tuple[int, int] | None = None,
) -> da.Array:
    """Lazy reconstruction of a sinogram stack, row chunk by row chunk.

    Parameters
    ----------
    sinograms : (rows, angles, columns) dask or NumPy array
        Line integrals in voxel units. Chunks along rows are kept (each is one
        task); angles and columns are merged into one chunk each.
    angles, centre_px, algorithm, iterations, nonnegative, fbp_filter, voxel_size_um, gpu, shape_yx
        As for :func:`reconstruct_block`; validated here, before any work.

    Returns
    -------
    (rows, y, x) dask.array.Array of float32
        Attenuation, 1/µm; chunks (the input's row chunks, y, x), with (y, x)
        = ``shape_yx`` (default (columns, columns)). Nothing is computed.

    Raises
    ------
    ValueError
        An argument out of range (the message names it).

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> theta = np.linspace(0, np.pi, 60, endpoint=False)
    >>> sino = da.zeros((4, 60, 32), chunks=(2, 60, 32), dtype=np.float32)
    >>> volume = reconstruct(sino, theta, 15.5, iterations=10, voxel_size_um=0.5)
    >>> volume.chunks
    ((2, 2), (32,), (32,))
    """
    stack = sinograms if isinstance(sinograms, da.Array) else da.asarray(np.asarray(sinograms))
    params = _parameters(
        stack.shape,
        angles,
        centre_px,
        algorithm=algorithm,
        iterations=iterations,
        nonnegative=nonnegative,
        fbp_filter=fbp_filter,
        voxel_size_um=voxel_size_um,
        gpu=gpu,
        shape_yx=shape_yx,
    )
    stack = stack.rechunk({1: -1, 2: -1})
    n_y, n_x = params.shape_yx
    return stack.map_blocks(
        functools.partial(_reconstruct, params=params),
        chunks=(stack.chunks[0], (n_y,), (n_x,)),
        dtype=np.float32,
        meta=meta_like(stack, np.float32),  # CuPy blocks give CuPy blocks
        token="reconstruct",
    )


@dataclass(frozen=True)
class Estimate:
    """How long an iterative reconstruction should take on CPU workers.

    Attributes
    ----------
    seconds : float
        Expected wall time of the whole reconstruction, s.
    algorithm : str
        ``"sirt"`` or ``"cgls"`` (or ``"fbp"``).
    iterations : int
    step_seconds : float
        The CPU cost of one ray–voxel step it assumed (:data:`CPU_STEP_SECONDS`).
    slots : int
        Blocks reconstructed at once (worker threads).
    """

    seconds: float
    algorithm: str
    iterations: int
    step_seconds: float
    slots: int

    @property
    def warning(self) -> bool:
        """More than :data:`WARN_SECONDS` (10 min)."""
        return self.seconds > WARN_SECONDS

    def __str__(self) -> str:
        what = self.algorithm.upper()
        if self.algorithm != "fbp":
            what += f" {self.iterations} iterations"
        text = f"{what} on CPU: about {_duration(self.seconds)} estimated"
        if self.warning and self.algorithm != "fbp":
            return (
                f'WARNING: {text} (algorithm = "fbp" or "auto" takes about '
                f"{_duration(self.seconds * FBP_ITERATIONS / self.iterations)}; "
                "a worker with a CUDA GPU runs SIRT far faster)"
            )
        return f"WARNING: {text}" if self.warning else text


def _duration(seconds: float) -> str:
    """``"12 s"``, ``"4.5 min"``, ``"80 min"``, ``"3.2 h"``."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_seconds(
    algorithm: str,
    iterations: int,
    shape: Sequence[int],
    *,
    shape_yx: tuple[int, int] | None = None,
    slab_rows: int | None = None,
    slots: int = 1,
    step_seconds: float = CPU_STEP_SECONDS,
) -> float:
    """Expected wall time of a CPU reconstruction, from ASTRA's cost per ray–voxel step.

    One iteration of SIRT or CGLS on one sinogram row costs
    ``angles · columns · max(y, x)`` steps of ``step_seconds`` (Joseph's
    projector visits about max(y, x) voxels along each ray, once forward and
    once back); FBP costs :data:`FBP_ITERATIONS` of one iteration. Rows go in
    blocks of ``slab_rows``; ``slots`` blocks run at once, one per worker
    thread (ASTRA's CPU algorithms use one core each).

    Parameters
    ----------
    algorithm : {"fbp", "sirt", "cgls"}
    iterations : int
        Ignored by FBP.
    shape : (rows, angles, columns)
        The sinogram stack.
    shape_yx : (int, int), optional
        The reconstruction grid; default (columns, columns).
    slab_rows : int, optional
        Rows per block; default all rows in one block.
    slots : int
        Blocks computed at once, ≥ 1.
    step_seconds : float
        Seconds per step: :data:`CPU_STEP_SECONDS`, or
        :func:`measure_step_seconds` on the machine that will run it.

    Returns
    -------
    float
        Seconds; non-decreasing in iterations, rows, angles, columns and grid.

    Examples
    --------
    >>> round(estimate_seconds("sirt", 1000, (2, 181, 640), step_seconds=8.5e-9))
    1260
    """
    n_rows, n_angles, n_columns = (int(n) for n in shape)
    n_y, n_x = (n_columns, n_columns) if shape_yx is None else shape_yx
    per_row = n_angles * n_columns * max(n_y, n_x) * step_seconds
    passes = FBP_ITERATIONS if algorithm == "fbp" else float(iterations)
    block = n_rows if slab_rows is None else max(1, min(int(slab_rows), n_rows))
    blocks = math.ceil(n_rows / block) if n_rows else 0
    rounds = math.ceil(blocks / max(1, int(slots)))
    return float(rounds * block * per_row * passes)


def measure_step_seconds(
    n_angles: int = 180, n_columns: int = 256, *, iterations: int = 3
) -> float:
    """Time ASTRA's CPU SIRT here, per ray–voxel step (see :func:`estimate_seconds`).

    Runs ``iterations`` SIRT iterations on one row of a problem of at most
    180 angles × 256 columns (about 70 ms per iteration on a 2-core
    development machine), so it is quick whatever the real problem's size.

    Parameters
    ----------
    n_angles, n_columns : int
        The real problem's size; the timed one is no larger than 180 × 256.
    iterations : int
        Timed iterations, ≥ 1 (default 3).

    Returns
    -------
    float
        Seconds per step.
    """
    n_angles, n_columns = max(1, min(n_angles, 180)), max(8, min(n_columns, 256))
    angles = np.linspace(0.0, np.pi, n_angles, endpoint=False)
    geometry = astra.create_proj_geom("parallel", 1.0, n_columns, angles)
    volume_geometry = astra.create_vol_geom(n_columns, n_columns)
    projector = astra.create_projector(CPU_PROJECTOR, geometry, volume_geometry)
    sinogram = np.random.default_rng(0).random((n_angles, n_columns), dtype=np.float32)
    sino_id = astra.data2d.create("-sino", geometry, sinogram)
    rec_id = astra.data2d.create("-vol", volume_geometry, 0.0)
    config = astra.astra_dict("SIRT")
    config.update(ProjectionDataId=sino_id, ReconstructionDataId=rec_id, ProjectorId=projector)
    config["option"] = {"MinConstraint": 0.0}
    algorithm_id = astra.algorithm.create(config)
    try:
        astra.algorithm.run(algorithm_id, 1)  # first touch of the buffers, untimed
        started = time.perf_counter()
        astra.algorithm.run(algorithm_id, iterations)
        seconds = time.perf_counter() - started
    finally:
        astra.algorithm.delete(algorithm_id)
        astra.data2d.delete([sino_id, rec_id])
        astra.projector.delete(projector)
    return seconds / (iterations * n_angles * n_columns * n_columns)


def workers_have_cuda() -> dict[str, bool]:
    """Whether ASTRA finds a CUDA device, asked where the graph will run.

    Returns
    -------
    dict of str to bool
        One entry per worker of the active ``distributed`` client (asked with
        ``Client.run``); without one, ``{"local": astra.use_cuda()}`` (the
        threads of this process compute).
    """
    client = _active_client()
    if client is None:
        return {"local": bool(astra.use_cuda())}
    answers = client.run(astra.use_cuda)
    return {str(worker): bool(found) for worker, found in answers.items()}


def resolve_algorithm(algorithm: str, cuda: Mapping[str, bool]) -> str:
    """The algorithm a run uses: ``"auto"`` → SIRT if every worker has CUDA, else FBP.

    Parameters
    ----------
    algorithm : {"auto", "fbp", "sirt", "cgls"}
    cuda : mapping of worker to bool
        :func:`workers_have_cuda`.

    Returns
    -------
    str
        ``algorithm`` itself unless it is ``"auto"``.

    Examples
    --------
    >>> resolve_algorithm("auto", {"tcp://a": True, "tcp://b": False})
    'fbp'
    >>> resolve_algorithm("auto", {"local": True}), resolve_algorithm("cgls", {"local": False})
    ('sirt', 'cgls')
    """
    name = algorithm.lower()
    if name != AUTO:
        return name
    # A cluster with CPU-only workers among GPU ones gets FBP: its blocks are
    # not pinned to the GPU workers, and one CPU block of 1000 SIRT iterations
    # would take hours; the whole volume is reconstructed one way.
    return AUTO_CHOICE[bool(cuda) and all(cuda.values())]


def _active_client() -> Any:
    """The ``distributed`` client that would compute a graph now, or None."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    return client if get_scheduler() == client.get else None


def _cpu_estimate(
    algorithm: str,
    iterations: int,
    shape: Sequence[int],
    slab_rows: int,
    cuda: Mapping[str, bool],
) -> Estimate:
    """The estimate of a run on the workers without CUDA, its cost measured on one of them."""
    _, n_angles, n_columns = shape
    client = _active_client()
    if client is None:
        step = measure_step_seconds(n_angles, n_columns)
        slots = os.cpu_count() or 1
    else:
        cpu_workers = [w for w, found in cuda.items() if not found]
        # Client.run, not a task: a task would queue behind the blocks of
        # other samples, possibly for as long as the run it is to estimate;
        # timed beside them, it also sees the contention the blocks will see.
        timed = client.run(measure_step_seconds, n_angles, n_columns, workers=cpu_workers[:1])
        step = float(next(iter(timed.values())))
        threads = client.nthreads()
        slots = sum(threads.get(w, 1) for w in cpu_workers)
    seconds = estimate_seconds(
        algorithm, iterations, shape, slab_rows=slab_rows, slots=slots, step_seconds=step
    )
    return Estimate(seconds, algorithm, iterations, step, slots)


@dataclass(frozen=True)
class Reconstruction:
    """Result of :func:`reconstruct_sinograms`.

    Attributes
    ----------
    volume : (rows, y, x) dask array of float32
        Attenuation, 1/µm, lazy.
    centre_px : float
        The rotation centre used, detector pixels (first column at 0).
    centre_source : str
        Where it came from: the campaign file or the automatic search.
    algorithm : {"fbp", "sirt", "cgls"}
        The algorithm every block runs (``"auto"`` resolved).
    device : {"CUDA", "CPU", "CPU and CUDA"}
        Where ASTRA runs it: what the workers reported.
    estimate : Estimate or None
        For SIRT and CGLS on workers without CUDA: the expected duration.
    automatic : bool
        The algorithm was chosen by ``algorithm = "auto"``.
    """

    volume: da.Array
    centre_px: float
    centre_source: str
    algorithm: str
    device: str
    estimate: Estimate | None = None
    automatic: bool = False

    @property
    def detail(self) -> str:
        """One line for the user, shown before the work starts."""
        chosen = f"{self.algorithm.upper()} on {self.device}"
        if self.automatic:
            chosen += ' (algorithm "auto")'
        if self.estimate is not None:
            chosen = str(self.estimate)
        return f"{chosen}; rotation centre {self.centre_px:.2f} px ({self.centre_source})"


def reconstruct_sinograms(
    sinograms: da.Array,
    angles: ArrayLike,
    *,
    voxel_size_um: float,
    rotation_centre_px: float | None = None,
    centre_search_radius_px: float | None = None,
    algorithm: str = AUTO,
    iterations: int = 1000,
    nonnegative: bool = True,
    fbp_filter: str = "ram-lak",
    slab_rows: int = 8,
) -> Reconstruction:
    """The recon stage: the rotation centre (given or found), then :func:`reconstruct`.

    Parameters
    ----------
    sinograms : (rows, angles, columns) dask array
        Line integrals in voxel units.
    angles : (angles,) array
        Radians.
    voxel_size_um : float
        Voxel edge, µm.
    rotation_centre_px : float, optional
        The centre on the detector, px; default: found by
        :func:`debond.pipeline.centre.find_centre` (Vo's Fourier method).
    centre_search_radius_px : float, optional
        How far from the detector centre the search looks (default: a
        quarter of the detector width).
    algorithm : {"auto", "fbp", "sirt", "cgls"}
        ``"auto"`` (default): the paper's SIRT (``iterations``) where ASTRA
        finds a CUDA device on every worker, FBP otherwise
        (:func:`resolve_algorithm`). The others as for :func:`reconstruct`;
        SIRT and CGLS on CPU workers come with an :class:`Estimate`.
    iterations, nonnegative, fbp_filter
        As for :func:`reconstruct`.
    slab_rows : int, default 8
        Sinogram rows reconstructed together in one task (one GPU call).

    Returns
    -------
    Reconstruction
        With the algorithm that runs, where, and (iterative on CPU) how long
        it should take.

    Notes
    -----
    The workers are asked once, here, before the graph is built
    (:func:`workers_have_cuda`), and the graph gets the resolved algorithm:
    the graph is still one for CPU and GPU workers (``gpu=None``, each block
    picks ASTRA's CUDA or CPU variant where it runs), and the algorithm
    recorded with the volume is the one every block ran, which a per-block
    ``"auto"`` could not promise on a mixed cluster.
    """
    _check_algorithm(algorithm)
    centre = resolve_centre(
        rotation_centre_px, sinograms, angles, search_radius_px=centre_search_radius_px
    )
    source = (
        "campaign file" if rotation_centre_px is not None else "automatic (Vo's Fourier method)"
    )
    cuda = workers_have_cuda()
    chosen = resolve_algorithm(algorithm, cuda)
    volume = reconstruct(
        sinograms.rechunk({0: slab_rows}),
        angles,
        centre,
        algorithm=chosen,
        iterations=iterations,
        nonnegative=nonnegative,
        fbp_filter=fbp_filter,
        voxel_size_um=voxel_size_um,
    )
    found = set(cuda.values())
    device = "CPU and CUDA" if len(found) > 1 else "CUDA" if True in found else "CPU"
    estimate = None
    if chosen != "fbp" and False in found:
        estimate = _cpu_estimate(chosen, iterations, sinograms.shape, slab_rows, cuda)
    return Reconstruction(
        volume, centre, source, chosen, device, estimate, automatic=algorithm.lower() == AUTO
    )


# ----------------------------------------------------------------- validation


def _check_algorithm(algorithm: object) -> None:
    if not isinstance(algorithm, str) or algorithm.lower() not in (AUTO, *ALGORITHMS):
        raise ValueError(
            f"algorithm must be one of {', '.join(map(repr, (AUTO, *ALGORITHMS)))}; "
            f"got {algorithm!r}"
        )


def _parameters(
    shape: Sequence[int],
    angles: ArrayLike,
    centre_px: float,
    *,
    algorithm: str,
    iterations: int,
    nonnegative: bool,
    fbp_filter: str,
    voxel_size_um: float,
    gpu: bool | None,
    shape_yx: tuple[int, int] | None,
) -> _Parameters:
    """Check every argument once, where it enters; name the one at fault."""
    if len(shape) != 3:
        raise ValueError(
            f"sinograms must be 3D (rows, angles, columns); got {len(shape)}D, shape {tuple(shape)}"
        )
    _, n_angles, n_columns = (int(n) for n in shape)
    if n_angles < 1 or n_columns < 1:
        raise ValueError(f"sinograms need angles and columns; got shape {tuple(shape)}")
    theta = np.asarray(angles, dtype=np.float64)
    if theta.ndim != 1 or theta.size != n_angles:
        raise ValueError(
            f"angles must be 1D with one angle per sinogram angle ({n_angles}, axis 1 of "
            f"sinograms); got shape {theta.shape}"
        )
    if not np.all(np.isfinite(theta)):
        raise ValueError("angles must be finite numbers (radians)")
    _check_algorithm(algorithm)
    if not isinstance(fbp_filter, str) or fbp_filter.lower() not in FBP_FILTERS:
        raise ValueError(
            f"fbp_filter must be one of {', '.join(map(repr, FBP_FILTERS))}; got {fbp_filter!r}"
        )
    if isinstance(iterations, bool) or not isinstance(iterations, int | np.integer):
        raise ValueError(f"iterations must be an integer ≥ 1; got {iterations!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be ≥ 1; got {iterations}")
    if isinstance(centre_px, bool) or not isinstance(centre_px, int | float | np.number):
        raise ValueError(f"centre_px must be a number of detector pixels; got {centre_px!r}")
    centre = float(centre_px)
    if not math.isfinite(centre) or not -0.5 <= centre <= n_columns - 0.5:
        raise ValueError(
            f"centre_px = {centre_px!r} is off the detector: the rotation axis must project "
            f"onto a column between -0.5 and {n_columns - 0.5} ({n_columns} columns, the first "
            "at 0). Is it in pixels of this (possibly binned) detector?"
        )
    if isinstance(voxel_size_um, bool) or not isinstance(voxel_size_um, int | float | np.number):
        raise ValueError(f"voxel_size_um must be a positive number (µm); got {voxel_size_um!r}")
    voxel = float(voxel_size_um)
    if not math.isfinite(voxel) or voxel <= 0:
        raise ValueError(f"voxel_size_um must be a positive number (µm); got {voxel_size_um!r}")
    if gpu is not None and not isinstance(gpu, bool | np.bool_):
        raise ValueError(f"gpu must be True, False or None (automatic); got {gpu!r}")
    if shape_yx is None:
        grid = (n_columns, n_columns)
    else:
        grid = tuple(shape_yx)  # type: ignore[assignment]
        if len(grid) != 2 or any(
            isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1 for n in grid
        ):
            raise ValueError(f"shape_yx must be two positive integers (y, x); got {shape_yx!r}")
        grid = (int(grid[0]), int(grid[1]))
    return _Parameters(
        angles=theta,
        centre_px=centre,
        algorithm=algorithm.lower(),
        iterations=int(iterations),
        nonnegative=bool(nonnegative),
        fbp_filter=fbp_filter.lower(),
        voxel_size_um=voxel,
        gpu=None if gpu is None else bool(gpu),
        shape_yx=grid,
    )


# ----------------------------------------------------------------- kernel


def _reconstruct(sinograms: NDArray[np.generic], params: _Parameters) -> NDArray[np.float32]:
    """The kernel on validated parameters (also the ``map_blocks`` function)."""
    if is_cupy(sinograms):
        return _reconstruct_on_device(sinograms, params)
    block = np.ascontiguousarray(sinograms, dtype=np.float32)
    n_rows, _, n_columns = block.shape
    n_y, n_x = params.shape_yx
    if n_rows == 0:
        return np.empty((0, n_y, n_x), dtype=np.float32)
    use_cuda = astra.use_cuda() if params.gpu is None else params.gpu
    if use_cuda and not astra.use_cuda():
        raise RuntimeError(
            "gpu=True, but ASTRA finds no CUDA device here; use gpu=None (automatic) or False"
        )
    if params.algorithm == AUTO:
        params = dataclasses.replace(params, algorithm=AUTO_CHOICE[bool(use_cuda)])
    shift = params.centre_px - (n_columns - 1) / 2.0
    if use_cuda and params.algorithm in _CUDA_3D and n_rows >= SLAB_MIN_ROWS:
        volume = _slab_cuda(block, params, shift)
    elif use_cuda:
        volume = _rows_2d(block, params, shift, _CUDA[params.algorithm], cuda=True)
    elif params.algorithm == "fbp":
        volume = _fbp_cpu(block, params, shift)
    else:
        volume = _rows_2d(block, params, shift, _CPU[params.algorithm], cuda=False)
    volume /= np.float32(params.voxel_size_um)
    return volume


def _reconstruct_on_device(block: Any, params: _Parameters) -> Any:
    """A CuPy block: FBP where it lies (:mod:`debond.pipeline.fbp`), SIRT and CGLS by ASTRA.

    ``"auto"`` is SIRT where ASTRA finds a CUDA device and FBP elsewhere, as
    on the host. ASTRA takes host arrays (and moves them to its device
    itself), so SIRT and CGLS copy the block to the host and the result
    back. Truncated rows (:func:`truncated`) are filtered on a widened
    detector, as on the CPU.
    """
    xp = array_module(block)
    algorithm = params.algorithm
    if algorithm == AUTO:
        algorithm = AUTO_CHOICE[bool(astra.use_cuda())]
    if algorithm != "fbp":
        on_host = dataclasses.replace(params, algorithm=algorithm)
        return xp.asarray(_reconstruct(block.get(), on_host))
    n_rows, _, n_columns = block.shape
    out = xp.empty((n_rows, *params.shape_yx), dtype=xp.float32)
    wide = [truncated(block[row]) for row in range(n_rows)]
    for widened in (False, True):
        rows = [row for row in range(n_rows) if wide[row] == widened]
        if rows:
            out[rows] = device_fbp.fbp(
                block[rows],
                params.angles,
                params.centre_px,
                fbp_filter=params.fbp_filter,
                shape_yx=params.shape_yx,
                widen_px=n_columns // 2 if widened else 0,
            )
    out /= xp.float32(params.voxel_size_um)
    return out


def _vectors_2d(angles: NDArray[np.float64], shift: float) -> NDArray[np.float64]:
    """``parallel_vec`` rows (ray, detector centre, detector u) with the axis at
    column (columns − 1)/2 + ``shift``."""
    vectors = np.zeros((angles.size, 6))
    vectors[:, 0], vectors[:, 1] = np.sin(angles), -np.cos(angles)  # ray direction
    vectors[:, 4], vectors[:, 5] = np.cos(angles), np.sin(angles)  # detector u, one pixel
    vectors[:, 2:4] = -shift * vectors[:, 4:6]  # detector centre
    return vectors


def _geometry_2d(angles: NDArray[np.float64], n_columns: int, shift: float) -> dict[str, object]:
    geometry: dict[str, object] = astra.create_proj_geom(
        "parallel_vec", n_columns, _vectors_2d(angles, shift)
    )
    return geometry


def _geometry_3d(
    angles: NDArray[np.float64], n_rows: int, n_columns: int, shift: float
) -> dict[str, object]:
    """``parallel3d_vec``: the 2D geometry in every row, detector v along z."""
    flat = _vectors_2d(angles, shift)
    vectors = np.zeros((angles.size, 12))
    vectors[:, 0:2] = flat[:, 0:2]  # ray
    vectors[:, 3:5] = flat[:, 2:4]  # detector centre
    vectors[:, 6:8] = flat[:, 4:6]  # u
    vectors[:, 11] = 1.0  # v: one voxel along z
    geometry: dict[str, object] = astra.create_proj_geom(
        "parallel3d_vec", n_rows, n_columns, vectors
    )
    return geometry


def _options(params: _Parameters) -> dict[str, float | str]:
    if params.algorithm == "fbp":
        return {"FilterType": params.fbp_filter}
    return {"MinConstraint": 0.0} if params.algorithm == "sirt" and params.nonnegative else {}


def _rows_2d(
    block: NDArray[np.float32], params: _Parameters, shift: float, name: str, *, cuda: bool
) -> NDArray[np.float32]:
    """Row by row with an ASTRA 2D algorithm on the shifted ``parallel_vec`` geometry."""
    n_rows, _, n_columns = block.shape
    n_y, n_x = params.shape_yx
    geometry = _geometry_2d(params.angles, n_columns, shift)
    volume_geometry = astra.create_vol_geom(n_y, n_x)
    out = np.empty((n_rows, n_y, n_x), dtype=np.float32)
    projector = None if cuda else astra.create_projector(CPU_PROJECTOR, geometry, volume_geometry)
    sino_id = astra.data2d.create("-sino", geometry)
    rec_id = astra.data2d.create("-vol", volume_geometry)
    try:
        for row in range(n_rows):
            astra.data2d.store(sino_id, block[row])
            astra.data2d.store(rec_id, 0.0)
            out[row] = _run_2d(name, params, sino_id, rec_id, projector)
    finally:
        astra.data2d.delete([sino_id, rec_id])
        if projector is not None:
            astra.projector.delete(projector)
    return out


def _run_2d(
    name: str, params: _Parameters, sino_id: int, rec_id: int, projector: int | None
) -> NDArray[np.float32]:
    config = astra.astra_dict(name)
    config["ProjectionDataId"] = sino_id
    config["ReconstructionDataId"] = rec_id
    if projector is not None:
        config["ProjectorId"] = projector
    config["option"] = _options(params)
    algorithm_id = astra.algorithm.create(config)
    try:
        astra.algorithm.run(algorithm_id, 1 if params.algorithm == "fbp" else params.iterations)
        return np.asarray(astra.data2d.get(rec_id), dtype=np.float32)
    finally:
        astra.algorithm.delete(algorithm_id)


def _shift_columns(sinograms: NDArray[np.floating], shift: float) -> NDArray[np.float32]:
    """Sinograms moved by ``shift`` columns: out[..., c] = in[..., c + shift].

    An exact band-limited (Fourier) shift of the sinograms padded by their edge
    values (columns + ⌈|shift|⌉ on each side), so a sub-pixel shift neither
    blurs (as interpolation would, by an amount that depends on the fraction)
    nor wraps around. The right side's padding is extended to the next length
    that the FFT factors fast (``scipy.fft.next_fast_len``): 3 × 256 + 4 =
    772 = 4 × 193 took 3.5 times as long as 800.

    Parameters
    ----------
    sinograms : (..., columns) array
    shift : float
        Columns, any sign, any fraction.

    Returns
    -------
    (..., columns) numpy.ndarray of float32
    """
    n_columns = sinograms.shape[-1]
    pad = n_columns + math.ceil(abs(shift))
    size = sp_fft.next_fast_len(n_columns + 2 * pad, real=True)
    widths = [(0, 0)] * (sinograms.ndim - 1) + [(pad, size - n_columns - pad)]
    # Single precision: the result is float32 anyway, and the transforms take half the time.
    padded = np.pad(np.asarray(sinograms, dtype=np.float32), widths, mode="edge")
    ramp = np.exp(2j * np.pi * sp_fft.rfftfreq(size) * shift).astype(np.complex64)
    moved = sp_fft.irfft(sp_fft.rfft(padded, axis=-1) * ramp, size, axis=-1)
    return np.asarray(moved[..., pad : pad + n_columns], dtype=np.float32)


def truncated(sinogram: NDArray[np.floating]) -> bool:
    """Whether a (angles, columns) sinogram's sample is wider than the detector.

    Its outermost columns then carry attenuation at most angles (local
    tomography): the median over angles of either edge column exceeds
    :data:`TRUNCATION_SHARE` of the sinogram's 99th percentile. A sample
    inside the field of view leaves them at the noise of air.

    Examples
    --------
    >>> inside = np.zeros((4, 9)); inside[:, 3:6] = 1.0
    >>> truncated(inside), truncated(inside + 0.5)
    (False, True)
    """
    xp = array_module(sinogram)  # NumPy or CuPy
    top = float(xp.percentile(sinogram, 99))
    if not top > 0:
        return False
    edges = xp.median(sinogram[:, [0, -1]], axis=0)
    return bool(edges.max() > TRUNCATION_SHARE * top)


def _fbp_cpu(block: NDArray[np.float32], params: _Parameters, shift: float) -> NDArray[np.float32]:
    """CPU FBP: axis brought to the detector centre by a Fourier shift, ``parallel`` geometry.

    A truncated row (:func:`truncated`) is filtered on a detector widened by
    half its width on either side with its edge values, which keeps the
    ramp filter from raising a bright rim and a cupping at the edge of the
    field of view; the grid stays (y, x). Rows are shifted one at a time: the
    shift of a whole block would hold about 36 bytes per sinogram value at
    once (the values padded to three times the width, and their spectra),
    which at 1024 columns and 768 angles took a worker of 1 GiB past its
    limit.
    """
    n_rows, _, n_columns = block.shape
    n_y, n_x = params.shape_yx
    pad = n_columns // 2
    volume_geometry = astra.create_vol_geom(n_y, n_x)
    out = np.empty((n_rows, n_y, n_x), dtype=np.float32)
    # ASTRA's projector and buffers for each detector width met, made once
    made: dict[bool, tuple[int, int, int]] = {}
    try:
        for row in range(n_rows):
            sinogram = _shift_columns(block[row], shift) if shift != 0 else block[row]
            widened = truncated(sinogram)
            if widened not in made:
                width = n_columns + 2 * pad if widened else n_columns
                geometry = astra.create_proj_geom("parallel", 1.0, width, params.angles)
                made[widened] = (
                    astra.create_projector(CPU_PROJECTOR, geometry, volume_geometry),
                    astra.data2d.create("-sino", geometry),
                    astra.data2d.create("-vol", volume_geometry),
                )
            projector, sino_id, rec_id = made[widened]
            if widened:
                sinogram = np.pad(sinogram, ((0, 0), (pad, pad)), mode="edge")
            astra.data2d.store(sino_id, sinogram)
            astra.data2d.store(rec_id, 0.0)
            out[row] = _run_2d("FBP", params, sino_id, rec_id, projector)
    finally:
        for projector, sino_id, rec_id in made.values():
            astra.data2d.delete([sino_id, rec_id])
            astra.projector.delete(projector)
    return out


def _slab_cuda(
    block: NDArray[np.float32], params: _Parameters, shift: float
) -> NDArray[np.float32]:
    """SIRT3D_CUDA / CGLS3D_CUDA over the whole block (``parallel3d_vec``)."""
    n_rows, _, n_columns = block.shape
    n_y, n_x = params.shape_yx
    geometry = _geometry_3d(params.angles, n_rows, n_columns, shift)
    volume_geometry = astra.create_vol_geom(n_y, n_x, n_rows)  # data (rows, y, x)
    sino_id = astra.data3d.create("-sino", geometry, block)  # data (rows, angles, columns)
    rec_id = astra.data3d.create("-vol", volume_geometry, 0.0)
    try:
        config = astra.astra_dict(_CUDA_3D[params.algorithm])
        config["ProjectionDataId"] = sino_id
        config["ReconstructionDataId"] = rec_id
        config["option"] = _options(params)
        algorithm_id = astra.algorithm.create(config)
        try:
            astra.algorithm.run(algorithm_id, params.iterations)
        finally:
            astra.algorithm.delete(algorithm_id)
        return np.asarray(astra.data3d.get(rec_id), dtype=np.float32)
    finally:
        astra.data3d.delete([sino_id, rec_id])
