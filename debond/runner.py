"""The campaign runner: which stages run for which samples, skipped or resumed.

``debond run CAMPAIGN.toml`` comes here. Every sample has a chain of stages:
its 3D stages in their fixed order (:data:`STAGE_ORDER`), and its SEM stage
as a chain of its own. All chains run at once on one cluster, each in a
thread that submits its stages' graphs one after the other, so the workers
are shared among samples at different stages (one sample reconstructs while
another is measured) and nothing waits for the slowest sample until the
particle table is gathered at the end. Each output is marked complete as soon
as its own computation finishes, so an interrupted run keeps every output
that had finished (DESIGN.md, principle 6).

Why the stages of a sample are not one graph: each stage's stored output is
the checkpoint a resumed run starts from, and some stages need values of the
previous one before their graph can be built (the rotation centre from the
sinograms, the thresholds from the histogram of the reconstruction, the
number of labels).

For each stage and sample the runner

1. works out the stage's parameters (the campaign section, with the sample's
   voxel size and manual rotation centre) and its inputs (the raw file, or the
   upstream arrays in the store, identified by their completion digests);
2. skips the outputs if :func:`debond.storage.status` says they are current
   (unless ``force``), otherwise
3. builds the lazy graph, which validates the input before any heavy work;
   the first stage with work of every chain is built before anything is
   created in the store (so bad raw input in one sample neither runs nor
   damages anything); a later stage that fails to build fails its sample;
4. creates the outputs with their provenance (no completion marker), computes
   their writes on the cluster, and marks them complete.

Stages and their outputs in ``samples/<id>/``:

========  ==============================  ====================================
stage     reads                           writes
========  ==============================  ====================================
ingest    the raw file (``txm``)          ``flats``, ``darks``, ``projections``
prep      projections, flats, darks       ``sinograms``
recon     sinograms                       ``recon``
segment   recon (or the sample's own      ``sample`` (bool), ``phases`` (uint8)
          segmentation, ``phases``)
label     phases                          ``particles`` (int32 labels)
measure   phases, particles, sample       ``tables/samples/<id>.parquet``
sem       the SEM images                  ``tables/sections/<id>.parquet``
========  ==============================  ====================================

After ``measure`` and ``sem`` the samples' rows are gathered into
``tables/particles.parquet``, SEM sections converted stereologically
(:func:`convert_sections`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import zarr
from distributed import Client, wait

from debond.campaign import PHASE_NAMES, STAGES, Campaign, Sample
from debond.pipeline.centre import resolve_centre
from debond.pipeline.ingest import (
    IngestError,
    Projections,
    read_data_exchange,
    read_tiff_stack,
    read_tiff_volume,
)
from debond.pipeline.label import label
from debond.pipeline.measure import measure_gaps
from debond.pipeline.prep import median_filter, normalise, remove_rings, to_sinograms
from debond.pipeline.recon import reconstruct
from debond.pipeline.segment import PORE, SILICON, segment
from debond.pipeline.sem import analyse_sem, usable_sections
from debond.pipeline.stereology import sections_to_spheres, unfold_radii
from debond.storage import (
    PendingWrite,
    Status,
    StoreError,
    find_array,
    open_store,
    open_volume,
    prepare_write,
    set_sample_attrs,
    status,
)
from debond.storage.provenance import IncompleteArray, InputLike, digest
from debond.storage.tables import PARTICLES_SCHEMA, read_metadata, read_table, write_table

__all__ = [
    "AVAILABLE_STAGES",
    "STAGE_ORDER",
    "Outcome",
    "RunError",
    "parse_stages",
    "run_campaign",
]

#: Every stage of ``debond run``, in the order they run (DESIGN.md).
STAGE_ORDER: tuple[str, ...] = STAGES
#: Largest difference between the segmented pore fraction and a known porosity
#: before the run warns.
POROSITY_TOLERANCE = 0.05
#: Metadata key of a stage table that holds its provenance digest.
DIGEST_KEY = "debond:digest"
#: Chains of stages (a sample's 3D stages, or its SEM stage) that run at once,
#: each a thread that submits its stages' graphs.
CHAINS_IN_FLIGHT = 8
#: The stages a run without ``--only`` runs: all of them.
AVAILABLE_STAGES = STAGE_ORDER
#: The 3D stages that start from raw projections (samples with ``phases`` skip them;
#: their ``segment`` imports the segmentation instead).
RAW_STAGES = ("ingest", "prep", "recon")

Echo = Callable[[str], None]


class RunError(RuntimeError):
    """A run that could not start or did not finish; the message says which sample and why.

    Attributes
    ----------
    outcomes : list of Outcome
        What had happened by then (empty when nothing ran).
    """

    def __init__(self, message: str, outcomes: Sequence[Outcome] = ()) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


@dataclass(frozen=True)
class Outcome:
    """What happened to one stage of one sample.

    Attributes
    ----------
    stage, sample : str
    state : {"done", "skipped", "failed", "blocked"}
        ``skipped``: outputs were current; ``blocked``: an earlier stage of the
        sample failed in this run.
    seconds : float
        Wall time from submission to completion, s (0 when not run).
    detail : str
        Why it was skipped or failed, or what was found (e.g. the centre).
    """

    stage: str
    sample: str
    state: str
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class _Output:
    """One array a stage writes: the lazy data and how to store it."""

    name: str
    data: da.Array
    purpose: str
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Work:
    """The built graph of one stage of one sample."""

    outputs: list[_Output]  # written in this order; the last is the stage's result
    extras: dict[str, da.Array]  # 0-d results recorded as attributes of the last output
    detail: str = ""
    table: Callable[[], pd.DataFrame] | None = None  # stages whose result is a table


@dataclass(frozen=True)
class _Plan:
    """One stage of one sample before anything is built."""

    stage: str
    sample: Sample
    outputs: tuple[str, ...]
    parameters: dict[str, Any]
    inputs: dict[str, InputLike]
    build: Callable[[], _Work]
    table: Path | None = None  # where a table stage writes its rows


# ----------------------------------------------------------------- stages


def parse_stages(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Stages named by ``--only`` in run order; all available ones for ``None``.

    Parameters
    ----------
    text : str, sequence of str or None
        ``"ingest,prep"`` or ``["ingest", "prep"]``; blanks ignored.

    Returns
    -------
    tuple of str
        The stages, in :data:`STAGE_ORDER`.

    Raises
    ------
    RunError
        An unknown stage name, or none.
    """
    if text is None:
        return AVAILABLE_STAGES
    names = text.split(",") if isinstance(text, str) else list(text)
    wanted = {name.strip() for name in names if name.strip()}
    if not wanted:
        raise RunError(f"--only names no stage; expected some of {', '.join(STAGE_ORDER)}")
    unknown = sorted(wanted - set(STAGE_ORDER))
    if unknown:
        raise RunError(
            f"--only: unknown stage {unknown[0]!r}; expected names among {', '.join(STAGE_ORDER)}"
        )
    return tuple(stage for stage in STAGE_ORDER if stage in wanted)


def _upstream(
    group: zarr.Group, sample: Sample, names: Sequence[str], stage: str
) -> dict[str, Any]:
    """The store arrays a stage reads; a clear error when one is missing."""
    found: dict[str, Any] = {}
    for name in names:
        array = find_array(group, sample.id, name)
        if array is None:
            producer = {"projections": "ingest", "flats": "ingest", "darks": "ingest"}.get(
                name, {"sinograms": "prep", "recon": "recon"}.get(name, "segment")
            )
            raise RunError(
                f"{stage} of {sample.where}: samples/{sample.id}/{name} is not in the store; "
                f"run the stage {producer!r} first"
            )
        found[name] = array
    return found


def _plan_ingest(campaign: Campaign, sample: Sample, group: zarr.Group) -> _Plan:
    parameters = {**campaign.stage_parameters("ingest"), "voxel_size_um": sample.voxel_size_um}
    assert sample.txm is not None  # RAW_STAGES only run for samples with txm

    def build() -> _Work:
        txm = sample.txm
        assert txm is not None
        if txm.is_dir():
            raw: Projections = read_tiff_stack(
                txm,
                projections=parameters["tiff_projections"],
                flats=parameters["tiff_flats"],
                darks=parameters["tiff_darks"],
                theta_file=parameters["tiff_theta_file"],
                angles_per_chunk=parameters["angles_per_chunk"],
            )
        else:
            raw = read_data_exchange(txm, angles_per_chunk=parameters["angles_per_chunk"])
        attrs = {
            "angles_rad": raw.theta_rad.tolist(),
            "source": str(raw.source),
            "layout": raw.layout,
            "detector_rows": list(raw.rows),
        }
        n_angles, n_rows, n_columns = raw.data.shape
        return _Work(
            outputs=[
                _Output("flats", raw.flats, "projections"),
                _Output("darks", raw.darks, "projections"),
                _Output("projections", raw.data, "projections", attrs),
            ],
            extras={},
            detail=f"{n_angles} projections of {n_rows} × {n_columns} px ({raw.layout})",
        )

    return _Plan(
        "ingest", sample, ("flats", "darks", "projections"), parameters, {"raw": sample.txm}, build
    )


def _plan_prep(campaign: Campaign, sample: Sample, group: zarr.Group) -> _Plan:
    parameters = campaign.stage_parameters("prep")
    inputs = _upstream(group, sample, ("projections", "flats", "darks"), "prep")

    def build() -> _Work:
        projections = open_volume(group, sample.id, "projections")
        flats = open_volume(group, sample.id, "flats").data
        darks = open_volume(group, sample.id, "darks").data
        normalised = normalise(projections.data, flats, darks, clip_to=parameters["clip_min"])
        filtered = median_filter(normalised.data, parameters["median_size"])
        sinograms = to_sinograms(filtered)
        if parameters["ring_removal"]:
            sinograms = remove_rings(sinograms)
        attrs = {"angles_rad": projections.attrs["angles_rad"]}
        return _Work(
            outputs=[_Output("sinograms", sinograms, "sinograms", attrs)],
            extras={"clipped_values": normalised.clipped},
        )

    return _Plan("prep", sample, ("sinograms",), parameters, dict(inputs), build)


def _plan_recon(campaign: Campaign, sample: Sample, group: zarr.Group) -> _Plan:
    parameters = {
        **campaign.stage_parameters("recon"),
        "rotation_centre_px": sample.rotation_centre_px,
        "voxel_size_um": sample.voxel_size_um,
    }
    inputs = _upstream(group, sample, ("sinograms",), "recon")

    def build() -> _Work:
        sinograms = open_volume(group, sample.id, "sinograms")
        angles = np.asarray(sinograms.attrs["angles_rad"], dtype=np.float64)
        manual = parameters["rotation_centre_px"]
        centre = resolve_centre(
            manual,
            sinograms.data,
            angles,
            search_radius_px=parameters["centre_search_radius_px"],
        )
        source = "campaign file" if manual is not None else "automatic (Vo's Fourier method)"
        volume = reconstruct(
            sinograms.data.rechunk({0: parameters["slab_rows"]}),
            angles,
            centre,
            algorithm=parameters["algorithm"],
            iterations=parameters["iterations"],
            nonnegative=parameters["nonnegative"],
            fbp_filter=parameters["fbp_filter"],
            voxel_size_um=sample.voxel_size_um,
        )
        attrs = {
            "rotation_centre_px": centre,
            "rotation_centre_source": source,
            "algorithm": parameters["algorithm"],
            "units": "1/µm",
        }
        return _Work(
            outputs=[_Output("recon", volume, "volume", attrs)],
            extras={},
            detail=f"rotation centre {centre:.2f} px ({source})",
        )

    return _Plan("recon", sample, ("recon",), parameters, dict(inputs), build)


def _plan_import(sample: Sample) -> _Plan:
    """``segment`` of a sample that brings its own segmentation (``phases`` TIFF)."""
    assert sample.phases is not None and sample.phase_codes is not None
    codes = dict(sample.phase_codes)
    parameters = {"phase_codes": codes, "voxel_size_um": sample.voxel_size_um}

    def build() -> _Work:
        assert sample.phases is not None
        grey = read_tiff_volume(sample.phases)
        table = np.zeros(
            int(np.iinfo(grey.dtype).max) + 1 if grey.dtype.kind in "ui" else 0, np.uint8
        )
        if table.size == 0:
            raise ValueError(
                f"{sample.where}.phases: {sample.phases} holds {grey.dtype} values; expected "
                "integer grey values (e.g. uint8 with pore 0, silicon 85, cbd 170)"
            )
        for name, value in codes.items():
            if value >= table.size:
                raise ValueError(
                    f"{sample.where}.phase_codes.{name} = {value} does not fit the volume's "
                    f"{grey.dtype} values"
                )
            table[value] = PHASE_NAMES.index(name)
        phases = grey.map_blocks(lambda block: table[block], dtype=np.uint8)
        attrs = {"phase_codes": dict(zip(PHASE_NAMES, range(len(PHASE_NAMES)), strict=True))}
        return _Work(
            outputs=[
                _Output("sample", da.ones(grey.shape, dtype=bool, chunks=grey.chunks), "volume"),
                _Output("phases", phases, "volume", {**attrs, "source": str(sample.phases)}),
            ],
            extras={},
            detail=f"segmentation {sample.phases.name}, {' × '.join(map(str, grey.shape))} voxels",
        )

    return _Plan(
        "segment", sample, ("sample", "phases"), parameters, {"phases": sample.phases}, build
    )


def _plan_segment(campaign: Campaign, sample: Sample, group: zarr.Group) -> _Plan:
    if sample.phases is not None:
        return _plan_import(sample)
    parameters = {**campaign.stage_parameters("segment"), "voxel_size_um": sample.voxel_size_um}
    inputs = _upstream(group, sample, ("recon",), "segment")

    def build() -> _Work:
        recon = open_volume(group, sample.id, "recon")
        result = segment(
            recon.data,
            voxel_size_um=sample.voxel_size_um,
            sigma_voxels=parameters["denoise_sigma_voxels"],
            bins=parameters["histogram_bins"],
            thresholds=parameters["thresholds"],
            sei_max_um=parameters["sei_max_um"],
            graphite_min_radius_um=parameters["graphite_min_radius_um"],
        )
        t = result.thresholds
        inside = result.sample.sum()
        pores = ((result.phases == PORE) & result.sample).sum()
        attrs = {
            "phase_codes": dict(zip(PHASE_NAMES, range(len(PHASE_NAMES)), strict=True)),
            "thresholds_per_um": {"classes": list(t.classes), "cbd": t.cbd, "graphite": t.graphite},
        }
        classes = ", ".join(f"{v:.3f}" for v in t.classes)
        return _Work(
            outputs=[
                _Output("sample", result.sample, "volume"),
                _Output("phases", result.phases, "volume", attrs),
            ],
            extras={"pore_fraction": pores / da.maximum(inside, 1)},
            detail=f"grey classes at {classes} 1/µm, CBD above {t.cbd:.3f}",
        )

    return _Plan("segment", sample, ("sample", "phases"), parameters, dict(inputs), build)


def _plan_label(campaign: Campaign, sample: Sample, group: zarr.Group) -> _Plan:
    parameters = {**campaign.stage_parameters("label"), "voxel_size_um": sample.voxel_size_um}
    inputs = _upstream(group, sample, ("phases",), "label")

    def build() -> _Work:
        if parameters["split_touching"]:
            raise ValueError(
                "labelling.split_touching = true: splitting touching particles is not "
                "implemented in this version; set it to false"
            )
        phases = open_volume(group, sample.id, "phases").data
        found = label(
            phases == SILICON,
            connectivity=parameters["connectivity"],
            min_volume_voxels=parameters["min_volume_voxels"],
        )
        attrs = {"particles": int(found.count), "units": "label (0: none)"}
        return _Work(
            outputs=[_Output("particles", found.labels, "volume", attrs)],
            extras={},
            detail=f"{found.count} silicon particles of at least "
            f"{parameters['min_volume_voxels']} voxels",
        )

    return _Plan("label", sample, ("particles",), parameters, dict(inputs), build)


def _plan_measure(campaign: Campaign, sample: Sample, group: zarr.Group) -> _Plan:
    parameters = {**campaign.stage_parameters("measure"), "voxel_size_um": sample.voxel_size_um}
    inputs = _upstream(group, sample, ("phases", "particles", "sample"), "measure")

    def rows() -> pd.DataFrame:
        table = measure_gaps(
            open_volume(group, sample.id, "phases").data,
            open_volume(group, sample.id, "particles").data,
            voxel_size_um=sample.voxel_size_um,
            n_rays=parameters["n_rays"],
            max_ray_length_um=parameters["max_ray_length_um"],
            sample=open_volume(group, sample.id, "sample").data,
        )
        table.insert(0, "modality", "3d")
        table.insert(0, "cycles", sample.cycles)
        table.insert(0, "sample", sample.id)
        table["section_radius_um"] = np.nan  # 2D sections only
        table["section_gap_um"] = np.nan
        return table

    def build() -> _Work:
        return _Work(outputs=[], extras={}, table=rows)

    path = campaign.tables_dir / "samples" / f"{sample.id}.parquet"
    return _Plan("measure", sample, (), parameters, dict(inputs), build, table=path)


def _plan_sem(campaign: Campaign, sample: Sample, group: zarr.Group) -> _Plan:
    parameters = {
        **campaign.stage_parameters("sem"),
        "sem_pixel_size_um": sample.sem_pixel_size_um,
    }
    images = list(sample.sem)

    def rows() -> pd.DataFrame:
        analyse = dask.delayed(analyse_sem, pure=True)
        tables = dask.compute(
            *(
                analyse(
                    path,
                    pixel_size_um=parameters["sem_pixel_size_um"],
                    thresholds=parameters["thresholds"],
                    sigma_px=parameters["denoise_sigma_px"],
                    n_rays=parameters["n_rays_2d"],
                    max_ray_length_um=parameters["max_ray_length_um"],
                    min_area_px=parameters["min_area_px"],
                )
                for path in images
            )
        )
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "cycles", sample.cycles)
        table.insert(0, "sample", sample.id)
        return table

    def build() -> _Work:
        return _Work(outputs=[], extras={}, table=rows, detail=f"{len(images)} SEM images")

    path = campaign.tables_dir / "sections" / f"{sample.id}.parquet"
    return _Plan("sem", sample, (), parameters, {"sem": images}, build, table=path)


def convert_sections(sections: pd.DataFrame) -> pd.DataFrame:
    """SEM sections as particle-table rows: stereological (R, g) for every section.

    The size distribution is unfolded from all usable sections together (not
    on the image border, at least one valid ray): the particles are the same
    material in every sample, and pooling steadies the unfolding. Each
    section's R is then E[R | r] under it, and its gap follows from the
    in-plane gap (:mod:`debond.pipeline.stereology`).

    Parameters
    ----------
    sections : DataFrame
        Rows of the ``sem`` stage: ``sample, cycles, image, particle,
        section_radius_um, section_gap_um, gap_std_um, n_rays, touches_border,
        centroid_y_um, centroid_x_um``.

    Returns
    -------
    DataFrame
        :data:`PARTICLES_SCHEMA` columns, ``modality = "2d"``; ``radius_um``
        and ``gap_mean_um`` are NaN where a section has no gap.
    """
    usable = usable_sections(sections)
    if not usable.any():
        return pd.DataFrame(columns=PARTICLES_SCHEMA.names)
    distribution = unfold_radii(sections.loc[usable, "section_radius_um"].to_numpy())
    r = sections["section_radius_um"].to_numpy()
    g2 = sections["section_gap_um"].to_numpy()
    ok = np.isfinite(g2)
    radius = np.full(r.shape, np.nan)
    gap = np.full(r.shape, np.nan)
    radius[ok], gap[ok] = sections_to_spheres(r[ok], g2[ok], distribution)
    return pd.DataFrame(
        {
            "sample": sections["sample"],
            "cycles": sections["cycles"],
            "modality": "2d",
            "particle": sections["particle"],
            "radius_um": radius,
            "gap_mean_um": gap,
            "gap_std_um": sections["gap_std_um"],
            "n_rays": sections["n_rays"],
            "touches_border": sections["touches_border"].astype(bool),
            "centroid_z_um": np.nan,
            "centroid_y_um": sections["centroid_y_um"],
            "centroid_x_um": sections["centroid_x_um"],
            "section_radius_um": r,
            "section_gap_um": g2,
        }
    )


def particle_table(campaign: Campaign) -> Path | None:
    """Gather the samples' 3D gap tables and converted SEM sections into
    ``tables/particles.parquet``.

    Returns
    -------
    Path or None
        The table written, or None when nothing has been measured.
    """
    parts = [
        read_table(path, PARTICLES_SCHEMA)
        for sample in campaign.samples
        if (path := campaign.tables_dir / "samples" / f"{sample.id}.parquet").is_file()
    ]
    sections = [
        pd.read_parquet(path)
        for sample in campaign.samples
        if (path := campaign.tables_dir / "sections" / f"{sample.id}.parquet").is_file()
    ]
    if sections:
        parts.append(convert_sections(pd.concat(sections, ignore_index=True)))
    parts = [part for part in parts if len(part)]
    if not parts:
        return None
    rows = pd.concat(parts, ignore_index=True)
    return write_table(rows, campaign.tables_dir / "particles.parquet", PARTICLES_SCHEMA)


_PLANNERS: dict[str, Callable[[Campaign, Sample, zarr.Group], _Plan]] = {
    "ingest": _plan_ingest,
    "prep": _plan_prep,
    "recon": _plan_recon,
    "segment": _plan_segment,
    "label": _plan_label,
    "measure": _plan_measure,
    "sem": _plan_sem,
}


# ----------------------------------------------------------------- running


def _table_state(plan: _Plan) -> Status:
    """A table is current when its metadata holds the digest this run would record."""
    assert plan.table is not None
    recorded = read_metadata(plan.table)
    if recorded is None:
        return Status.MISSING
    try:
        expected = digest(plan.stage, plan.parameters, plan.inputs)
    except IncompleteArray:
        return Status.STALE
    return Status.CURRENT if recorded.get(DIGEST_KEY) == expected else Status.STALE


def _state(group: zarr.Group, plan: _Plan) -> Status:
    """The least finished of the plan's outputs."""
    if plan.table is not None:
        return _table_state(plan)
    order = [Status.MISSING, Status.INCOMPLETE, Status.STALE, Status.CURRENT]
    states = [
        status(find_array(group, plan.sample.id, name), plan.stage, plan.parameters, plan.inputs)
        for name in plan.outputs
    ]
    return min(states, key=order.index)


def _submit(group: zarr.Group, plan: _Plan, work: _Work) -> tuple[list[PendingWrite], list[Any]]:
    """Create the outputs (provenance, no marker) and the tasks that write them.

    Returns the pending writes and the collections to compute: one write
    task per output, then the extras. They are computed as one list by
    ``Client.compute``, not wrapped in a single ``dask.delayed``: a delayed
    wrapper around a peer-to-peer rechunk loses the shuffle's barrier task
    (the scheduler cancels it for "lost dependencies").
    """
    pending = [
        prepare_write(
            group,
            plan.sample.id,
            output.name,
            output.data,
            voxel_size_um=plan.sample.voxel_size_um,
            stage=plan.stage,
            parameters=plan.parameters,
            inputs=plan.inputs,
            purpose=output.purpose,
            attrs=output.attrs,
            overwrite=True,
        )
        for output in work.outputs
    ]
    return pending, [p.task for p in pending] + list(work.extras.values())


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)


def _decide(group: zarr.Group, plan: _Plan, force: bool) -> str | None:
    """Why the plan's outputs must be (re)made, or None when they are current."""
    state = _state(group, plan)
    if state is Status.CURRENT and not force:
        return None
    return "forced" if force else state.value


def _skipped(plan: _Plan, echo: Echo) -> Outcome:
    """Say that the plan's outputs are current, and record it."""
    echo(f"{plan.stage:<7} {plan.sample.id:<10} skipped: current")
    return Outcome(plan.stage, plan.sample.id, "skipped", detail="current")


def _build(plan: _Plan) -> _Work:
    """The plan's graph; bad input raises :class:`RunError` naming the stage and sample."""
    try:
        return plan.build()
    except (IngestError, StoreError, ValueError, KeyError, OSError) as error:
        raise RunError(f"{plan.stage} of {plan.sample.where}: {_describe(error)}") from error


def _porosity_note(plan: _Plan, extras: Mapping[str, float]) -> str:
    """A warning when the segmented pore fraction is far from a known porosity."""
    expected = plan.parameters.get("porosity")
    if expected is None or "pore_fraction" not in extras:
        return ""
    off = abs(extras["pore_fraction"] - expected)
    if off <= POROSITY_TOLERANCE:
        return ""
    return (
        f"; WARNING: pore fraction {extras['pore_fraction']:.3f} is {off:.3f} "
        f"from segmentation.porosity = {expected}: check the thresholds"
    )


def _execute(
    client: Client, group: zarr.Group, plan: _Plan, work: _Work, reason: str, echo: Echo
) -> Outcome:
    """Create one stage's outputs, compute their writes on the cluster, mark them complete."""
    if work.table is not None:
        return _run_table(plan, work, reason, echo)
    pending, collections = _submit(group, plan, work)
    note = f"; {work.detail}" if work.detail else ""
    echo(f"{plan.stage:<7} {plan.sample.id:<10} running (output {reason}{note})")
    started = time.perf_counter()
    futures = client.compute(collections)
    wait(futures)
    seconds = time.perf_counter() - started
    broken = [future for future in futures if future.status != "finished"]
    if broken:
        client.cancel(futures)
        try:
            broken[0].result()
        except Exception as error:  # any failure of the sample's graph on a worker
            why = str(error) or type(error).__name__
        else:  # pragma: no cover - cancelled by someone else
            why = f"task {broken[0].status}"
        echo(f"{plan.stage:<7} {plan.sample.id:<10} FAILED after {seconds:.1f} s: {why}")
        return Outcome(plan.stage, plan.sample.id, "failed", seconds, why)
    values = [np.asarray(f.result()).item() for f in futures[len(pending) :]]
    extras = dict(zip(work.extras, values, strict=True))
    for write in pending[:-1]:
        write.finish()
    pending[-1].finish(extras)
    found = "".join(f"; {key} {value:.4g}" for key, value in extras.items())
    echo(
        f"{plan.stage:<7} {plan.sample.id:<10} done in {seconds:.1f} s"
        f"{found}{_porosity_note(plan, extras)}"
    )
    return Outcome(plan.stage, plan.sample.id, "done", seconds, work.detail)


@dataclass
class _Chain:
    """The stages one sample needs in a run, in order (its 3D stages, or its SEM stage).

    ``first`` is the first stage with work, already built by :func:`_prepare`;
    the stages before it were current.
    """

    sample: Sample
    stages: list[str]
    skipped: list[Outcome] = field(default_factory=list)
    first: tuple[_Plan, _Work, str] | None = None


def _chains(campaign: Campaign, stages: Sequence[str]) -> list[_Chain]:
    """Every sample's chains of the chosen stages: the 3D ones, and the SEM one apart."""
    chains = []
    for sample in campaign.samples:
        three_d = [
            stage
            for stage in stages
            if stage != "sem" and not (stage in RAW_STAGES and sample.txm is None)
        ]
        if three_d:
            chains.append(_Chain(sample, three_d))
        if "sem" in stages and sample.sem:
            chains.append(_Chain(sample, ["sem"]))
    return chains


def _prepare(
    campaign: Campaign, group: zarr.Group, chains: list[_Chain], force: bool, echo: Echo
) -> None:
    """Skip each chain's current stages and build its first stage with work.

    Every chain is prepared before anything is created in the store, so bad
    input (a broken raw file, a missing upstream output) stops the whole run
    before it starts.

    Raises
    ------
    RunError
        Bad input, for every chain that has some.
    """
    problems: list[str] = []
    for chain in chains:
        try:
            for stage in chain.stages:
                plan = _PLANNERS[stage](campaign, chain.sample, group)
                reason = _decide(group, plan, force)
                if reason is None:
                    chain.skipped.append(_skipped(plan, echo))
                    continue
                chain.first = (plan, _build(plan), reason)
                break
        except RunError as error:
            problems.append(str(error))
    if problems:
        skipped = [outcome for chain in chains for outcome in chain.skipped]
        raise RunError("bad input; nothing was run:\n  " + "\n  ".join(problems), skipped)


def _run_chain(
    campaign: Campaign,
    client: Client,
    group: zarr.Group,
    chain: _Chain,
    force: bool,
    echo: Echo,
) -> list[Outcome]:
    """Run a prepared chain's stages one after the other; a failure blocks the rest."""
    outcomes = list(chain.skipped)
    if chain.first is None:
        return outcomes
    failed = False
    for stage in chain.stages[len(chain.skipped) :]:
        if failed:
            outcomes.append(
                Outcome(stage, chain.sample.id, "blocked", detail="an earlier stage failed")
            )
            continue
        try:
            if stage == chain.first[0].stage:
                plan, work, why = chain.first
            else:
                plan = _PLANNERS[stage](campaign, chain.sample, group)
                reason = _decide(group, plan, force)
                if reason is None:
                    outcomes.append(_skipped(plan, echo))
                    continue
                work, why = _build(plan), reason
            outcome = _execute(client, group, plan, work, why, echo)
        except Exception as error:  # bad input found late, or the store refused a write
            detail = str(error) if isinstance(error, RunError) else _describe(error)
            echo(f"{stage:<7} {chain.sample.id:<10} FAILED: {detail}")
            outcome = Outcome(stage, chain.sample.id, "failed", detail=detail)
        outcomes.append(outcome)
        failed = outcome.state == "failed"
    return outcomes


def _run_table(plan: _Plan, work: _Work, reason: str, echo: Echo) -> Outcome:
    """A table stage of one sample: compute its rows on the cluster, write them with the digest."""
    assert plan.table is not None and work.table is not None
    echo(f"{plan.stage:<7} {plan.sample.id:<10} running (output {reason})")
    started = time.perf_counter()
    try:
        rows = work.table()
        stamp = digest(plan.stage, plan.parameters, plan.inputs)
        write_table(rows, plan.table, PARTICLES_SCHEMA, metadata={DIGEST_KEY: stamp})
    except Exception as error:  # any failure of the sample's computation
        seconds = time.perf_counter() - started
        reason = str(error) or type(error).__name__
        echo(f"{plan.stage:<7} {plan.sample.id:<10} FAILED after {seconds:.1f} s: {reason}")
        return Outcome(plan.stage, plan.sample.id, "failed", seconds, reason)
    seconds = time.perf_counter() - started
    valid = int((rows["n_rays"] > 0).sum()) if len(rows) else 0
    what = "sections" if plan.stage == "sem" else "particles"
    detail = f"{len(rows)} {what}, {valid} with a gap"
    echo(f"{plan.stage:<7} {plan.sample.id:<10} done in {seconds:.1f} s; {detail}")
    return Outcome(plan.stage, plan.sample.id, "done", seconds, detail)


def run_campaign(
    campaign: Campaign,
    client: Client,
    *,
    stages: Sequence[str] | None = None,
    force: bool = False,
    echo: Echo = print,
) -> list[Outcome]:
    """Run stages for every sample of a campaign on a Dask cluster, resumably.

    Each sample's 3D stages run in order, and its SEM stage beside them; all
    samples run at once on the cluster (at most :data:`CHAINS_IN_FLIGHT`
    chains of stages at a time), so a sample reconstructs while another is
    measured. The run waits for every sample only at the end, to gather the
    particle table.

    Parameters
    ----------
    campaign : Campaign
        From :func:`debond.campaign.load_campaign`.
    client : distributed.Client
        Where the graphs run (see :func:`debond.cluster.cluster`).
    stages : sequence of str, optional
        Stages to run (:func:`parse_stages`); default every available stage.
    force : bool
        Recompute outputs even when they are current.
    echo : callable
        Receives one line per stage and sample (progress); called from the
        threads that run the samples, one line at a time.

    Returns
    -------
    list of Outcome
        One per stage and sample, in stage order, then sample order.

    Raises
    ------
    RunError
        Missing raw inputs, or bad input found while preparing the run
        (nothing is run or created), or stages that failed for some samples
        (the other outputs are complete; the message lists the failures).
    """
    chosen = parse_stages(None if stages is None else list(stages))
    # The embedded scheduler logs every peer-to-peer rechunk at WARNING level.
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    campaign.check_inputs()
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    group = open_store(campaign.store_location, mode="a")
    for sample in campaign.samples:
        set_sample_attrs(
            group, sample.id, {"cycles": sample.cycles, "voxel_size_um": sample.voxel_size_um}
        )
    chains = _chains(campaign, chosen)
    _prepare(campaign, group, chains, force, say)
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(CHAINS_IN_FLIGHT, thread_name_prefix="debond-sample") as pool:
        running = [
            pool.submit(_run_chain, campaign, client, group, chain, force, say) for chain in chains
        ]
        for future in running:
            outcomes.extend(future.result())
    order = {sample.id: i for i, sample in enumerate(campaign.samples)}
    outcomes.sort(key=lambda o: (STAGE_ORDER.index(o.stage), order[o.sample]))
    if {"measure", "sem"} & set(chosen):
        gathered = particle_table(campaign)
        if gathered is not None:
            echo(f"particle table: {gathered}")
    failed = [o for o in outcomes if o.state == "failed"]
    if failed:
        lines = [f"{o.stage} of {o.sample}: {o.detail}" for o in failed]
        raise RunError(
            f"{len(lines)} stage(s) failed; every other output is complete:\n  "
            + "\n  ".join(lines),
            outcomes,
        )
    return outcomes
