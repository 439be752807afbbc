"""Parquet tables with explicit schemas (DESIGN.md, "Tables").

Tables are written atomically (a temporary file in the same folder, then a
rename), so a reader never sees half a table, and validated on read with
errors that name the file and the column.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from debond.storage.provenance import IncompleteArray, InputLike, Status, digest

#: particles.parquet: one row per measured silicon particle or 2D section.
PARTICLES_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.string()),
        pa.field("cycles", pa.int64()),
        pa.field("modality", pa.string()),  # "3d" | "2d"
        pa.field("particle", pa.int64()),
        pa.field("radius_um", pa.float64()),
        pa.field("gap_mean_um", pa.float64()),
        pa.field("gap_std_um", pa.float64()),
        pa.field("n_rays", pa.int64()),
        pa.field("touches_border", pa.bool_()),
        pa.field("centroid_z_um", pa.float64()),
        pa.field("centroid_y_um", pa.float64()),
        pa.field("centroid_x_um", pa.float64()),
        pa.field("section_radius_um", pa.float64()),
        pa.field("section_gap_um", pa.float64()),
        # Not measured (gap NaN, geometry kept): above the size prior's largest radius;
        # a box from one face of the volume (or sample) to the opposite one; too few
        # valid rays. Tables written before these columns read them as false; SEM
        # sections (2D) are false.
        pa.field("oversized", pa.bool_(), metadata={"default": "false"}),
        pa.field("spans_box", pa.bool_(), metadata={"default": "false"}),
        pa.field("few_rays", pa.bool_(), metadata={"default": "false"}),
    ]
)

#: Flags of rows that were not measured: their gap is NaN and they are never fitted.
NOT_MEASURED = ("oversized", "spans_box", "few_rays")

#: Columns a particle table must have to be fitted.
PARTICLES_REQUIRED = ("cycles", "radius_um", "gap_mean_um")

#: truth/particles.parquet of a synthetic campaign: the drawn silicon particles.
TRUTH_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.string()),
        pa.field("cycles", pa.int64()),
        pa.field("particle", pa.int64()),
        pa.field("radius_um", pa.float64()),
        pa.field("gap_um", pa.float64()),
        pa.field("sei_um", pa.float64()),
        pa.field("last_cycle", pa.int64()),  # K: disconnected after it (or the sample's cycles)
        pa.field("centroid_z_um", pa.float64()),
        pa.field("centroid_y_um", pa.float64()),
        pa.field("centroid_x_um", pa.float64()),
        pa.field("touches_border", pa.bool_()),
    ]
)

#: truth/sections.parquet: silicon particles cut by synthetic SEM sections.
SECTIONS_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.string()),
        pa.field("cycles", pa.int64()),
        pa.field("image", pa.string()),
        pa.field("particle", pa.int64()),
        pa.field("radius_um", pa.float64()),
        pa.field("gap_um", pa.float64()),
        pa.field("section_radius_um", pa.float64()),
        pa.field("section_gap_um", pa.float64()),
        pa.field("centroid_y_um", pa.float64()),
        pa.field("centroid_x_um", pa.float64()),
    ]
)

#: tables/bootstrap.parquet: one row per bootstrap replicate of a fit.
BOOTSTRAP_SCHEMA = pa.schema(
    [
        pa.field("replicate", pa.int64()),
        pa.field("alpha0", pa.float64()),
        pa.field("kappa0", pa.float64()),  # µm
        pa.field("delta0", pa.float64()),  # µm
        pa.field("zeta0", pa.float64()),  # 1/µm
        pa.field("cost", pa.float64()),
        pa.field("converged", pa.bool_()),
    ]
)

MODALITIES = ("3d", "2d")


class TableError(ValueError):
    """A table does not match its schema."""


def check_particles(table: pd.DataFrame, source: str = "particle table") -> pd.DataFrame:
    """Validate a particle table and return it with its columns in schema types.

    Parameters
    ----------
    table : DataFrame
        Columns from :data:`PARTICLES_SCHEMA`; ``cycles``, ``radius_um`` and
        ``gap_mean_um`` are required.
    source : str
        Where the table came from (a file name), used in error messages.

    Returns
    -------
    DataFrame
        A copy with known columns cast to their schema types.

    Raises
    ------
    TableError
        (a ``ValueError``) naming the column and the offending value: unknown
        or missing columns, an empty table, negative or non-finite radii,
        negative gaps, negative or non-integer cycles, unknown modalities. A
        NaN gap is accepted only on rows with ``n_rays == 0`` or a
        :data:`NOT_MEASURED` flag (nothing measured).

    Notes
    -----
    The :data:`NOT_MEASURED` flags are added as False where a table (an older
    one, or SEM rows) lacks them, and missing values in them read as False.
    """
    known = set(PARTICLES_SCHEMA.names)
    unknown = [c for c in table.columns if c not in known]
    if unknown:
        raise TableError(
            f"{source}: unknown column {unknown[0]!r}; expected columns from "
            f"{', '.join(PARTICLES_SCHEMA.names)}"
        )
    missing = [c for c in PARTICLES_REQUIRED if c not in table.columns]
    if missing:
        raise TableError(f"{source}: missing column {missing[0]!r}")
    if len(table) == 0:
        raise TableError(f"{source}: the table is empty; at least one particle row is needed")

    out = table.copy()
    for flag in NOT_MEASURED:
        out[flag] = _flag(out, flag)
    not_measured = np.logical_or.reduce([out[flag].to_numpy() for flag in NOT_MEASURED])
    cycles = pd.to_numeric(out["cycles"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(cycles) | (cycles < 0) | (cycles != np.round(cycles))
    if bad.any():
        raise TableError(
            f"{source}: column 'cycles' must hold integers >= 0; got {out['cycles'][bad].iloc[0]!r}"
        )
    out["cycles"] = cycles.astype(np.int64)
    for column in ("radius_um", "gap_mean_um"):
        values = pd.to_numeric(out[column], errors="coerce").to_numpy(dtype=float)
        bad = values < 0
        if column == "radius_um":
            bad |= ~np.isfinite(values)
        else:
            measured = out["n_rays"].to_numpy() > 0 if "n_rays" in out else np.ones(len(out), bool)
            measured &= ~not_measured
            bad |= np.isinf(values) | (np.isnan(values) & measured)
        if bad.any():
            raise TableError(
                f"{source}: column {column!r} must hold finite values >= 0 µm; "
                f"got {out[column][bad].iloc[0]!r} (row {int(np.flatnonzero(bad)[0])})"
            )
        out[column] = values
    if "modality" in out:
        odd = ~out["modality"].isin(MODALITIES)
        if odd.any():
            raise TableError(
                f"{source}: column 'modality' must be one of {MODALITIES}; "
                f"got {out['modality'][odd].iloc[0]!r}"
            )
    return out


def _flag(table: pd.DataFrame, name: str) -> NDArray[np.bool_]:
    """Column ``name`` as bool, missing values (and a missing column) False."""
    if name not in table:
        return np.zeros(len(table), bool)
    column = table[name]
    return np.asarray(column.astype(object).where(column.notna(), False).astype(bool))


def three_d_rows(table: pd.DataFrame) -> NDArray[np.bool_]:
    """Rows of modality ``"3d"``; a table without ``modality`` is all 3D rows.

    Examples
    --------
    >>> three_d_rows(pd.DataFrame({"modality": ["3d", "2d"]})).tolist()
    [True, False]
    >>> three_d_rows(pd.DataFrame({"radius_um": [0.5]})).tolist()
    [True]
    """
    if "modality" not in table:
        return np.ones(len(table), dtype=bool)
    return np.asarray(table["modality"].to_numpy() == "3d", dtype=bool)


def usable_rows(table: pd.DataFrame) -> NDArray[np.bool_]:
    """Rows measured and whole: at least one valid ray, off the image's border, and no
    :data:`NOT_MEASURED` flag.

    Parameters
    ----------
    table : DataFrame
        Particle or section rows; ``n_rays``, ``touches_border`` and each
        :data:`NOT_MEASURED` flag are optional (a table without them has
        every row usable; a missing flag value counts as False).

    Returns
    -------
    (len(table),) ndarray of bool
    """
    usable = np.ones(len(table), dtype=bool)
    if "n_rays" in table:
        usable &= table["n_rays"].to_numpy() > 0
    for flag in ("touches_border", *NOT_MEASURED):
        usable &= ~_flag(table, flag)
    return usable


def write_table(
    table: pd.DataFrame,
    path: str | os.PathLike[str],
    schema: pa.Schema | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a DataFrame to Parquet atomically.

    Parameters
    ----------
    table : DataFrame
    path : path
        Destination ``.parquet`` file; its folder is created.
    schema : pyarrow.Schema, optional
        Restricted to the columns present, it fixes their types.
    metadata : mapping of str to str, optional
        Stored in the file's key-value metadata (e.g. the provenance digest
        of the stage that made it; see :func:`read_metadata`).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if schema is not None:
        # The schema's types for its columns; pyarrow's own reading of the others
        # (pandas' string and nullable dtypes included).
        for name in schema.names:
            if name in arrow.column_names:
                index = arrow.column_names.index(name)
                arrow = arrow.set_column(index, name, arrow[name].cast(schema.field(name).type))
    if metadata:
        merged = dict(arrow.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        arrow = arrow.replace_schema_metadata(merged)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        pq.write_table(arrow, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The key-value metadata written with :func:`write_table`; None if no readable file.

    Reads the footer only. Pandas' own entry (``"pandas"``) is left out.
    """
    try:
        raw = pq.read_schema(Path(path)).metadata or {}
    except (FileNotFoundError, pa.ArrowInvalid, OSError):
        return None
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"pandas"}


def read_table(path: str | os.PathLike[str], schema: pa.Schema) -> pd.DataFrame:
    """Read a Parquet table and check it against its schema.

    Every column of ``schema`` must be present (or have a ``default`` in its
    field metadata, used for files written before it existed) with a type
    that casts safely to the schema's (an int column where floats are expected is fine, a
    string where numbers are expected is not); extra columns are kept.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    TableError
        Naming the file and the column: unreadable file, missing column,
        wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise TableError(f"{path}: not a readable Parquet file ({error})") from error
    for field in schema:
        default = (field.metadata or {}).get(b"default")
        if field.name not in arrow.column_names and default is not None:
            # a column added to the schema later: older files read with its default
            value = pa.scalar(default.decode(), pa.string()).cast(field.type)
            arrow = arrow.append_column(field, pa.array([value.as_py()] * len(arrow), field.type))
            continue
        if field.name not in arrow.column_names:
            raise TableError(
                f"{path}: missing column {field.name!r} ({field.type}); "
                f"has {', '.join(arrow.column_names)}"
            )
        found = arrow.schema.field(field.name).type
        if found != field.type:
            try:
                arrow = arrow.set_column(
                    arrow.column_names.index(field.name),
                    field.name,
                    arrow[field.name].cast(field.type, safe=True),
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise TableError(
                    f"{path}: column {field.name!r} has type {found}; expected {field.type}"
                ) from error
    return arrow.to_pandas()


def read_particles(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a particle table (``particles.parquet`` or ``.csv``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"particle table {path} does not exist")
    if path.suffix == ".csv":
        table = pd.read_csv(path)
    else:
        try:
            table = pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as error:
            raise TableError(f"{path}: not a readable Parquet file ({error})") from error
    return check_particles(table, source=str(path))


#: tables/sections/<sample>.parquet: one row per silicon section of the ``sem``
#: stage (in-plane sizes and gaps, before the stereological conversion).
SEM_TABLE_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.string()),
        pa.field("cycles", pa.int64()),
        pa.field("image", pa.string()),
        pa.field("particle", pa.int64()),
        pa.field("centroid_y_um", pa.float64()),
        pa.field("centroid_x_um", pa.float64()),
        pa.field("section_radius_um", pa.float64()),
        pa.field("section_gap_um", pa.float64()),
        pa.field("gap_std_um", pa.float64()),
        pa.field("n_rays", pa.int64()),
        pa.field("touches_border", pa.bool_()),
    ]
)

#: Key of a stage table's Parquet metadata that holds its provenance digest.
DIGEST_KEY = "debond:digest"


def table_status(
    path: str | os.PathLike[str],
    stage: str,
    parameters: Mapping[str, Any],
    inputs: Mapping[str, InputLike],
) -> Status:
    """Whether a stage's table is current: the same status as a stored array's.

    Parameters
    ----------
    path : path-like
        The table (``tables/samples/<id>.parquet``).
    stage, parameters, inputs
        What the stage would record now (:func:`debond.storage.provenance.digest`).

    Returns
    -------
    Status
        MISSING (no readable table), STALE (another digest, or an input that is
        not complete), or CURRENT. A table is written whole (atomically), so it
        is never INCOMPLETE.
    """
    recorded = read_metadata(path)
    if recorded is None:
        return Status.MISSING
    try:
        expected = digest(stage, parameters, inputs)
    except IncompleteArray:
        return Status.STALE
    return Status.CURRENT if recorded.get(DIGEST_KEY) == expected else Status.STALE
