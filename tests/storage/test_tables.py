"""Parquet tables: schema, atomic writes, validation on read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from debond.storage.tables import (
    PARTICLES_SCHEMA,
    TableError,
    read_metadata,
    read_particles,
    write_table,
)


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample": ["c01", "c01"],
            "cycles": [1, 1],
            "modality": ["3d", "2d"],
            "particle": [1, 2],
            "radius_um": [0.4, 1.2],
            "gap_mean_um": [0.1, 0.3],
        }
    )


def test_round_trip_keeps_values_and_schema_types(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_table(_table(), tmp_path / "t" / "particles.parquet", PARTICLES_SCHEMA)
    schema = pq.read_schema(path)
    assert str(schema.field("cycles").type) == "int64"
    assert str(schema.field("radius_um").type) == "double"
    back = read_particles(path)
    pd.testing.assert_frame_equal(back, _table(), check_dtype=False)
    assert [p.name for p in path.parent.iterdir()] == ["particles.parquet"]


def test_a_failed_write_leaves_the_old_table_and_no_debris(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_table(_table(), tmp_path / "particles.parquet", PARTICLES_SCHEMA)
    broken = _table().assign(cycles=["one", "two"])  # not convertible to int64
    with pytest.raises(Exception):  # noqa: B017 - pyarrow raises its own types
        write_table(broken, path, PARTICLES_SCHEMA)
    assert read_particles(path)["cycles"].tolist() == [1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["particles.parquet"]


def test_reading_names_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.parquet"
    write_table(_table().assign(radius_um=[0.4, -1.0]), path)
    with pytest.raises(TableError, match=r"bad\.parquet.*radius_um.*-1"):
        read_particles(path)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(TableError, match="garbage.parquet"):
        read_particles(garbage)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_particles(tmp_path / "missing.parquet")


def test_read_table_checks_columns_and_types_against_the_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from debond.storage.tables import BOOTSTRAP_SCHEMA, read_table

    good = pd.DataFrame(
        {
            "replicate": [0, 1],
            "alpha0": [0.8, 0.9],
            "kappa0": [0.0, 0.01],
            "delta0": [0.1, 0.12],
            "zeta0": [1, 2],
            "cost": [3.0, 4.0],
            "converged": [True, False],
        }
    )  # zeta0 as integers: casts safely to float64
    path = write_table(good, tmp_path / "bootstrap.parquet")
    back = read_table(path, BOOTSTRAP_SCHEMA)
    assert back["zeta0"].dtype == "float64"
    write_table(good.drop(columns="cost"), tmp_path / "missing.parquet")
    with pytest.raises(TableError, match=r"missing.parquet.*missing column 'cost'"):
        read_table(tmp_path / "missing.parquet", BOOTSTRAP_SCHEMA)
    write_table(good.assign(alpha0=["a", "b"]), tmp_path / "typed.parquet")
    with pytest.raises(TableError, match=r"typed.parquet.*'alpha0'.*string.*double"):
        read_table(tmp_path / "typed.parquet", BOOTSTRAP_SCHEMA)


def test_metadata_travels_with_the_table(tmp_path: Path) -> None:
    table = pd.DataFrame({"cycles": [1, 3], "radius_um": [0.5, 0.7], "gap_mean_um": [0.1, 0.2]})
    path = write_table(table, tmp_path / "t.parquet", metadata={"debond:digest": "abc"})
    assert read_metadata(path) == {"debond:digest": "abc"}
    assert read_metadata(tmp_path / "missing.parquet") is None
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert read_metadata(tmp_path / "bad.parquet") is None
    assert read_metadata(write_table(table, tmp_path / "plain.parquet")) == {}
