"""The stages of ``debond run``, declared once (:class:`~debond.stages.base.Stage`).

One module per stage holds its campaign section (``Parameters``) and its
planner; :data:`REGISTRY` declares each stage once, in run order, with its
kernel and what it reads and writes. Adding a stage is one module and one
entry here. The classes a stage module uses are in :mod:`debond.stages.base`.

======== ================================================================
stage    reads → writes
======== ================================================================
ingest   raw file (``txm``) → ``flats``, ``darks``, ``projections``
prep     ``projections``, ``flats``, ``darks`` → ``sinograms``
recon    ``sinograms`` → ``recon`` (attenuation, 1/µm)
segment  ``recon`` (or the sample's own segmentation) → ``sample``, ``phases``
label    ``phases`` → ``particles`` (int32 labels)
measure  ``phases``, ``particles``, ``sample`` → ``tables/samples/<id>.parquet``
sem      the SEM images → ``tables/sections/<id>.parquet``
======== ================================================================

>>> REGISTRY.names
('ingest', 'prep', 'recon', 'segment', 'label', 'measure', 'sem')
>>> REGISTRY.raw
('ingest', 'prep', 'recon')
"""

from __future__ import annotations

from debond.pipeline.ingest import read_projections
from debond.pipeline.label import label_particles
from debond.pipeline.measure import measure_gaps
from debond.pipeline.prep import prepare
from debond.pipeline.recon import reconstruct_sinograms
from debond.pipeline.segment import segment as segment_phases
from debond.pipeline.sem import analyse_sem
from debond.stages import ingest, label, measure, prep, recon, segment, sem
from debond.stages.base import Registry, Stage, TableOutput
from debond.storage.tables import PARTICLES_SCHEMA, SEM_TABLE_SCHEMA

__all__ = ["REGISTRY", "stage_table"]

#: Voxel size and size prior: what most kernels take from the sample and the campaign.
_GEOMETRY = ("voxel_size_um", "radius_range_um")

#: Every stage of ``debond run``, in the order they run; one entry per stage:
#: name (and section), its parameters, kernel, planner, what it reads → writes
#: and its memory model (peak bytes of a task, from its block's shape).
REGISTRY = Registry(
    [
        Stage(
            "ingest", ingest.Parameters, read_projections, ingest.plan,
            "raw file (`txm`) → `flats`, `darks`, `projections`",
            writes=("flats", "darks", "projections"), raw=True, memory=ingest.peak_bytes,
        ),
        Stage(
            "prep", prep.Parameters, prepare, prep.plan,
            "`projections`, `flats`, `darks` → `sinograms`",
            reads=("projections", "flats", "darks"), writes=("sinograms",), raw=True,
            memory=prep.peak_bytes,
        ),
        Stage(
            "recon", recon.Parameters, reconstruct_sinograms, recon.plan,
            "`sinograms` → `recon` (attenuation, 1/µm)",
            reads=("sinograms",), writes=("recon",), raw=True,
            supplied=("voxel_size_um", "rotation_centre_px"), memory=recon.peak_bytes,
            gpu=True,
        ),
        Stage(
            "segment", segment.Parameters, segment_phases, segment.plan,
            "`recon` (or the sample's own segmentation, `phases`) → `sample`, `phases`",
            reads=("recon",), writes=("sample", "phases"), supplied=_GEOMETRY,
            memory=segment.peak_bytes,
        ),
        Stage(
            "label", label.Parameters, label_particles, label.plan,
            "`phases` → `particles` (int32 labels)",
            reads=("phases",), writes=("particles",), supplied=_GEOMETRY,
            memory=label.peak_bytes,
        ),
        Stage(
            "measure", measure.Parameters, measure_gaps, measure.plan,
            "`phases`, `particles`, `sample` → `tables/samples/<id>.parquet`",
            reads=("phases", "particles", "sample"),
            table=TableOutput("samples", PARTICLES_SCHEMA, "particles"),
            supplied=(*_GEOMETRY, "sample"), memory=measure.peak_bytes,
        ),
        Stage(
            "sem", sem.Parameters, analyse_sem, sem.plan,
            "the SEM images → `tables/sections/<id>.parquet`",
            table=TableOutput("sections", SEM_TABLE_SCHEMA, "sections"),
            chain="sem", supplied=("pixel_size_um",), memory=sem.peak_bytes,
        ),
    ]
)  # fmt: skip


def stage_table(registry: Registry = REGISTRY) -> str:
    """The stages as a Markdown table: name (and section), kernel, what it reads and writes.

    The README's stage table is this table (a test checks it).
    """
    lines = ["| stage and `[section]` | kernel | reads → writes |", "|---|---|---|"]
    for stage in registry:
        kernel = f"{stage.kernel.__module__}.{stage.kernel.__name__}"
        lines.append(f"| `{stage.name}` | `{kernel}` | {stage.summary} |")
    return "\n".join(lines)
