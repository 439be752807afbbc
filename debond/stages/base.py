"""What a stage of ``debond run`` declares, and what its planning returns.

A :class:`Stage` is declared once, in its own module of :mod:`debond.stages`:
its name (also the name of its campaign section), its parameters (a
:class:`~debond.sections.Section` whose fields are the kernel's keyword
names and defaults), its kernel (the pipeline function those parameters
feed), the store arrays it reads and writes (or the table it writes), and
its planner. The registry (:class:`Registry`) is an ordered tuple of stages;
the runner, ``--only``, the "run stage X first" messages and the README's
stage table all read it.

A planner turns a stage, a campaign and a sample into a :class:`Plan`: the
stage's parameters and input identities (what the completion digest covers)
and a ``build`` callable that makes the lazy graph (:class:`Work`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import pandas as pd
import pyarrow as pa
import zarr

from debond.memory import PeakBytes
from debond.sections import Section
from debond.storage import find_array
from debond.storage.provenance import InputLike

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample

__all__ = [
    "Output",
    "Plan",
    "Registry",
    "Stage",
    "StageError",
    "TableOutput",
    "Work",
    "kernel_keywords",
]


class StageError(ValueError):
    """A stage cannot be planned or built for a sample; the message names both."""


@dataclass(frozen=True)
class Output:
    """One array a stage writes: the lazy data and how to store it.

    ``chunks`` is the stored chunk shape (default: the purpose's,
    :func:`debond.storage.default_chunks`).
    """

    name: str
    data: da.Array
    purpose: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    chunks: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Work:
    """The built graph of one stage of one sample.

    Attributes
    ----------
    outputs : list of Output
        Arrays written in this order; the last is the stage's result.
    extras : dict of str to 0-d dask array
        Scalars computed with the outputs and recorded as attributes of the
        last one (e.g. ``pore_fraction``). They are optimised apart from the
        writes: one that reduces an output's data fuses a copy of the data's
        last layer into its own tasks when that layer is blockwise, unless
        the data is a layer of its own (as the segmentation's phases are).
    detail : str
        One line on what was found (shown as the stage runs).
    table : callable, optional
        For a table stage: computes its rows (on the cluster).
    check : callable, optional
        Receives the computed extras and returns a warning ('' for none).
    describe : callable, optional
        For a table stage: one line on its rows (how many, how many flagged).
    then : callable, optional
        The next pass: built once these outputs are written and marked
        complete, so that its graph may read them from the store (the
        segmentation's phases read the stored sample mask). The stage's
        result, extras and check are then the last pass's.
    cleanup : callable, optional
        Called once this pass is over, done or not: removes what the stage
        kept in the store for it (the label stage's split pieces,
        :func:`debond.storage.scratch_group`).
    """

    outputs: list[Output]
    extras: dict[str, da.Array] = field(default_factory=dict)
    detail: str = ""
    table: Callable[[], pd.DataFrame] | None = None
    check: Callable[[Mapping[str, float]], str] | None = None
    describe: Callable[[pd.DataFrame], str] | None = None
    then: Callable[[], Work] | None = None
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Plan:
    """One stage of one sample before anything is built.

    Attributes
    ----------
    stage : Stage
    campaign : Campaign
    sample : Sample
    parameters : dict
        The stage section with the sample's own values (voxel size, …): what
        the provenance digest covers.
    inputs : dict
        Identities of what the stage reads (store arrays, raw files).
    build : callable
        Makes the lazy graph; validates its input first.
    """

    stage: Stage
    campaign: Campaign
    sample: Sample
    parameters: dict[str, Any]
    inputs: dict[str, InputLike]
    build: Callable[[], Work]

    @property
    def outputs(self) -> tuple[str, ...]:
        """The store arrays this plan writes."""
        return self.stage.writes

    @property
    def table(self) -> Path | None:
        """Where a table stage writes this sample's rows (None for array stages)."""
        t = self.stage.table
        return None if t is None else t.path(self.campaign.tables_dir, self.sample)


@dataclass(frozen=True)
class TableOutput:
    """The table a stage writes, one Parquet file per sample.

    Attributes
    ----------
    folder : str
        Its folder under ``tables/`` (``samples``: ``tables/samples/<id>.parquet``).
    schema : pyarrow.Schema
        Its columns and types.
    what : str
        What one row is, plural (``"particles"``), for progress lines.
    """

    folder: str
    schema: pa.Schema
    what: str

    def path(self, tables_dir: Path, sample: Sample) -> Path:
        """This sample's table: ``<tables_dir>/<folder>/<id>.parquet``."""
        return tables_dir / self.folder / f"{sample.id}.parquet"


Planner = Callable[["Stage", "Campaign", "Sample", zarr.Group], Plan]


@dataclass(frozen=True)
class Stage:
    """One stage of ``debond run``, declared once.

    Attributes
    ----------
    name : str
        The stage's name, also its campaign section (``[recon]``) and its
        word in ``--only``.
    parameters : type of Section
        Its campaign section: fields named and defaulted as the kernel's keywords.
    kernel : callable
        The pipeline function the parameters feed.
    plan : callable
        ``plan(stage, campaign, sample, group) -> Plan``.
    summary : str
        What it does, one line (README and ``debond params``).
    reads : tuple of str
        Store arrays it reads (``samples/<id>/<name>``).
    writes : tuple of str
        Store arrays it writes, in order; empty for a table stage.
    table : TableOutput, optional
        The table it writes instead of arrays.
    raw : bool
        It works from raw projections: samples that bring their own
        segmentation (``phases``) skip it.
    chain : {"3d", "sem"}
        Stages of one chain run in order for a sample; chains run side by side.
    supplied : tuple of str
        Kernel keywords the runner supplies rather than the section: the
        sample's (``voxel_size_um``, ``rotation_centre_px``, input arrays) and
        the campaign's size prior (``radius_range_um``, from ``[material]``).
    memory : callable, optional
        ``memory(block_shape, parameters) -> bytes``: the peak memory of one of
        its tasks (:meth:`peak_bytes`).
    gpu : bool
        Its kernel uses a GPU where the worker has one (ASTRA's CUDA
        algorithms): on a cluster whose workers advertise the ``GPU``
        resource its tasks run on those (:func:`debond.cluster.stage_resources`).
    """

    name: str
    parameters: type[Section]
    kernel: Callable[..., Any]
    plan: Planner
    summary: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    table: TableOutput | None = None
    raw: bool = False
    chain: Literal["3d", "sem"] = "3d"
    supplied: tuple[str, ...] = ()
    memory: PeakBytes | None = None
    gpu: bool = False

    def peak_bytes(self, block_shape: Sequence[int], parameters: Mapping[str, Any]) -> float:
        """Peak memory of one task of this stage, bytes.

        Parameters
        ----------
        block_shape : sequence of int
            The block one task works on, halo included; what a block is
            depends on the stage (its module's ``peak_bytes`` says).
        parameters : mapping
            The kernel's keywords (:meth:`arguments`).

        Raises
        ------
        NotImplementedError
            A stage that declares no memory model.
        """
        if self.memory is None:
            raise NotImplementedError(f"stage {self.name!r} declares no memory model")
        return float(self.memory(tuple(int(n) for n in block_shape), parameters))

    def arguments(self, campaign: Campaign, sample: Sample) -> dict[str, Any]:
        """The kernel's keywords for a sample: the section, with what the runner supplies.

        The supplied values are the sample's voxel size, rotation centre and
        SEM pixel size and the campaign's size prior, those named in
        :attr:`supplied` (input arrays, also named there, are passed apart).
        """
        known = {
            "voxel_size_um": sample.voxel_size_um,
            "rotation_centre_px": sample.rotation_centre_px,
            "pixel_size_um": sample.sem_pixel_size_um,
            "radius_range_um": campaign.size_prior_um,
        }
        supplied = {name: known[name] for name in self.supplied if name in known}
        return {**campaign.stage_parameters(self.name), **supplied}

    def __post_init__(self) -> None:
        if (self.table is None) == (not self.writes):
            raise ValueError(
                f"stage {self.name!r}: expected either store arrays in `writes` or a `table`"
            )


def kernel_keywords(stage: Stage) -> dict[str, Any]:
    """The kernel's keyword parameters with their defaults, less those the runner supplies.

    Keyword-only parameters without a default are included with
    ``inspect.Parameter.empty``.
    """
    signature = inspect.signature(stage.kernel)
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in stage.supplied
    }


class Registry(Sequence[Stage]):
    """The stages of ``debond run`` in the order they run.

    Everything that lists stages reads one registry: the campaign schema
    (one section per stage), ``--only``, the runner's order, the messages
    that name the stage producing a missing array, and the docs.

    Parameters
    ----------
    stages : sequence of Stage
        In run order; names unique, every array read by a stage written by
        an earlier one.

    Examples
    --------
    >>> from debond.stages import REGISTRY
    >>> REGISTRY.names
    ('ingest', 'prep', 'recon', 'segment', 'label', 'measure', 'sem')
    >>> REGISTRY.producer("sinograms").name
    'prep'
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        self._stages = tuple(stages)
        names = [s.name for s in self._stages]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(repeated)}")
        written: set[str] = set()
        for stage in self._stages:
            unknown = [name for name in stage.reads if name not in written]
            if unknown:
                raise ValueError(
                    f"stage {stage.name!r} reads {', '.join(unknown)}, "
                    "which no earlier stage writes"
                )
            written.update(stage.writes)

    def __getitem__(self, index: Any) -> Any:
        return self._stages[index]

    def __len__(self) -> int:
        return len(self._stages)

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._stages)

    @property
    def names(self) -> tuple[str, ...]:
        """Stage names in run order."""
        return tuple(s.name for s in self._stages)

    @property
    def raw(self) -> tuple[str, ...]:
        """Stages that start from raw projections (skipped by samples with ``phases``)."""
        return tuple(s.name for s in self._stages if s.raw)

    def get(self, name: str) -> Stage:
        """The stage called `name`; ``KeyError`` listing the stages there are."""
        for stage in self._stages:
            if stage.name == name:
                return stage
        raise KeyError(f"unknown stage {name!r}; expected one of {', '.join(self.names)}")

    def producer(self, array: str) -> Stage:
        """The stage that writes the store array `array`."""
        for stage in self._stages:
            if array in stage.writes:
                return stage
        raise KeyError(f"no stage writes {array!r}")

    def upstream(
        self, group: zarr.Group, stage: Stage, sample: Sample, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The store arrays a stage reads, by name; a clear error when one is missing.

        Raises
        ------
        StageError
            Naming the stage, the sample, the missing array and the stage to run first.
        """
        found: dict[str, Any] = {}
        for name in stage.reads if names is None else names:
            array = find_array(group, sample.id, name)
            if array is None:
                raise StageError(
                    f"{stage.name} of {sample.where}: samples/{sample.id}/{name} is not in the "
                    f"store; run the stage {self.producer(name).name!r} first"
                )
            found[name] = array
        return found
