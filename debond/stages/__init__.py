"""The stages of ``debond run``, declared once (:class:`~debond.stages.base.Stage`).

One module per stage holds its campaign section (``Parameters``), its
planner and its ``STAGE`` entry; :data:`REGISTRY` lists them in run order.
Adding a stage is one module and one entry here.

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

from debond.stages import ingest, label, measure, prep, recon, segment, sem
from debond.stages.base import (
    Output,
    Plan,
    Registry,
    Stage,
    StageError,
    TableOutput,
    Work,
    kernel_keywords,
)

__all__ = [
    "REGISTRY",
    "Output",
    "Plan",
    "Registry",
    "Stage",
    "StageError",
    "TableOutput",
    "Work",
    "kernel_keywords",
    "stage_table",
]

#: Every stage of ``debond run``, in the order they run.
REGISTRY = Registry(
    [
        ingest.STAGE,
        prep.STAGE,
        recon.STAGE,
        segment.STAGE,
        label.STAGE,
        measure.STAGE,
        sem.STAGE,
    ]
)


def stage_table(registry: Registry = REGISTRY) -> str:
    """The stages as a Markdown table: name (and section), kernel, what it reads and writes.

    The README's stage table is this table (a test checks it).
    """
    lines = ["| stage and `[section]` | kernel | reads → writes |", "|---|---|---|"]
    for stage in registry:
        kernel = f"{stage.kernel.__module__}.{stage.kernel.__name__}"
        lines.append(f"| `{stage.name}` | `{kernel}` | {stage.summary} |")
    return "\n".join(lines)
