"""Parquet tables: schema, atomic writes, validation on read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from debond.storage.tables import (
    NOT_MEASURED,
    PARTICLES_SCHEMA,
    TableError,
    read_metadata,
    read_particles,
    read_table,
    usable_rows,
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
    pd.testing.assert_frame_equal(back[_table().columns], _table(), check_dtype=False)
    assert not back[list(NOT_MEASURED)].to_numpy().any()  # flags absent: read as False
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


def _flagged() -> pd.DataFrame:
    """3D rows, one clean and one per flag (not measured: gap NaN, rays kept or 0), and
    an SEM row without the flag columns' values (NaN after a concat)."""
    rows = pd.DataFrame(
        {
            "sample": ["c01"] * 5,
            "cycles": [1] * 5,
            "modality": ["3d"] * 5,
            "particle": [1, 2, 3, 4, 5],
            "radius_um": [0.4, 3.5, 1.0, 0.6, 0.5],
            "gap_mean_um": [0.1, np.nan, np.nan, np.nan, 0.2],
            "n_rays": [256, 0, 0, 30, 200],
            "touches_border": [False, False, True, False, True],
            "oversized": [False, True, False, False, False],
            "spans_box": [False, False, True, False, False],
            "few_rays": [False, False, False, True, False],
        }
    )
    section = pd.DataFrame(
        {
            "sample": ["c01"],
            "cycles": [1],
            "modality": ["2d"],
            "particle": [1],
            "radius_um": [0.5],
            "gap_mean_um": [0.05],
            "n_rays": [64],
            "touches_border": [False],
        }
    )
    return pd.concat([rows, section], ignore_index=True)


def test_usable_rows_excludes_every_flag() -> None:
    table = _flagged()
    assert usable_rows(table).tolist() == [True, False, False, False, False, True]
    for flag in NOT_MEASURED:
        only = table.assign(**{f: False for f in NOT_MEASURED if f != flag}, n_rays=1)
        only["touches_border"] = False
        assert usable_rows(only).tolist() == (~only[flag].fillna(False).astype(bool)).tolist()


def test_flagged_rows_may_have_nan_gaps_with_rays(tmp_path: Path) -> None:
    path = write_table(_flagged(), tmp_path / "particles.parquet", PARTICLES_SCHEMA)
    back = read_particles(path)
    assert back["few_rays"].tolist() == [False, False, False, True, False, False]
    assert back.loc[5, ["oversized", "spans_box", "few_rays"]].tolist() == [False] * 3
    # a NaN gap on a row with valid rays and no flag is still an error
    bad = _flagged().assign(few_rays=False)
    write_table(bad, tmp_path / "bad.parquet", PARTICLES_SCHEMA)
    with pytest.raises(TableError, match=r"gap_mean_um.*nan.*row 3"):
        read_particles(tmp_path / "bad.parquet")


def test_read_table_fills_flags_missing_from_older_tables(tmp_path: Path) -> None:
    old = _table().assign(
        gap_std_um=0.01,
        n_rays=256,
        touches_border=False,
        centroid_z_um=1.0,
        centroid_y_um=2.0,
        centroid_x_um=3.0,
        section_radius_um=np.nan,
        section_gap_um=np.nan,
    )
    path = write_table(old, tmp_path / "old.parquet")  # as written before the flags
    back = read_table(path, PARTICLES_SCHEMA)
    for flag in NOT_MEASURED:
        assert back[flag].dtype == bool and not back[flag].any()
    assert usable_rows(back).all()
    with pytest.raises(TableError, match="missing column 'n_rays'"):
        read_table(
            write_table(old.drop(columns="n_rays"), tmp_path / "o.parquet"), PARTICLES_SCHEMA
        )
