"""Provenance, completion markers and resumption, including a writer killed mid-way."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import debond.storage
from debond import __version__
from debond.storage import (
    IncompleteArray,
    MetadataError,
    Status,
    changes,
    create_volume,
    digest,
    file_identity,
    identify,
    is_current,
    make_provenance,
    mark_complete,
    open_store,
    open_volume,
    read_provenance,
    record,
    status,
    volume_status,
    write_volume,
)
from debond.storage.provenance import PACKAGE_VERSION

PARAMETERS = {"algorithm": "sirt", "iterations": 1000}


def _write(store: zarr.Group | str, name: str = "recon", **kwargs: object) -> zarr.Array:
    arguments: dict[str, object] = {"stage": "recon", "parameters": PARAMETERS, "inputs": None}
    arguments |= kwargs
    return write_volume(
        store,
        "c01",
        name,
        np.ones((3, 4, 5), np.float32),
        voxel_size_um=0.03,
        overwrite=True,
        **arguments,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ digests


def test_digest_changes_with_stage_parameters_inputs_and_version() -> None:
    base = digest("recon", PARAMETERS, {"seed": {"value": 1}}, "0.1.0")
    assert len(base) == 64 and int(base, 16) >= 0
    assert base == digest(
        "recon", dict(reversed(PARAMETERS.items())), {"seed": {"value": 1}}, "0.1.0"
    )
    others = [
        digest("segment", PARAMETERS, {"seed": {"value": 1}}, "0.1.0"),
        digest("recon", PARAMETERS | {"iterations": 999}, {"seed": {"value": 1}}, "0.1.0"),
        digest("recon", PARAMETERS | {"extra": None}, {"seed": {"value": 1}}, "0.1.0"),
        digest("recon", PARAMETERS, {"seed": {"value": 2}}, "0.1.0"),
        digest("recon", PARAMETERS, {"other": {"value": 1}}, "0.1.0"),
        digest("recon", PARAMETERS, {"seed": {"value": 1}}, "0.2.0"),
    ]
    assert len({base, *others}) == 1 + len(others)
    assert digest("recon", PARAMETERS, None) == digest("recon", PARAMETERS, {}, __version__)


def test_parameters_are_recorded_in_canonical_json() -> None:
    numpy_style = {"sigma": np.float64(1.5), "size": (np.int64(7), 7), "mask": np.array([True])}
    plain = {"sigma": 1.5, "size": [7, 7], "mask": [True]}
    assert digest("prep", numpy_style, None) == digest("prep", plain, None)
    assert make_provenance("prep", numpy_style, None).parameters == plain


@pytest.mark.parametrize(
    ("parameters", "error", "match"),
    [
        ({"classes": {1, 2}}, TypeError, r"parameters\['classes'\] cannot be recorded .*set"),
        ({"window": {"size": float("nan")}}, ValueError, r"parameters\['window'\]\['size'\] .*nan"),
        ({"edges": [0.0, float("inf")]}, ValueError, r"parameters\['edges'\]\[1\] must be finite"),
        ({"codes": {1: "pore"}}, TypeError, r"parameters\['codes'\]: keys must be strings"),
    ],
)
def test_unrecordable_parameters_are_named(
    parameters: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        digest("segment", parameters, None)


def test_a_stage_needs_a_name() -> None:
    with pytest.raises(ValueError, match="stage must be a non-empty string; got ''"):
        digest("", {}, None)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=50, deadline=None)
@given(parameters=st.dictionaries(st.text(max_size=5), json_values, max_size=4), seed=st.randoms())
def test_digest_ignores_key_order(parameters: dict[str, object], seed: object) -> None:
    keys = list(parameters)
    seed.shuffle(keys)  # type: ignore[attr-defined]
    shuffled = {key: parameters[key] for key in keys}
    assert digest("s", parameters, None, "1") == digest("s", shuffled, None, "1")


# ------------------------------------------------------------------ input identities


def test_file_identity_sees_content_size_and_time_but_not_location(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "c01.h5"
    raw.parent.mkdir()
    content = bytes(range(256)) * 9000  # 2.2 MiB: the ends hash skips the middle
    raw.write_bytes(content)
    first = file_identity(raw)
    assert first["kind"] == "file" and first["size"] == len(content)
    assert first["name"] == "c01.h5" and first["path"] == str(raw)
    before = digest("ingest", {}, {"txm": raw})

    moved = tmp_path / "elsewhere" / "c01.h5"
    moved.parent.mkdir()
    shutil.copy2(raw, moved)  # same content and mtime, other folder
    assert digest("ingest", {}, {"txm": moved}) == before

    stat = raw.stat()
    raw.write_bytes(b"X" + content[1:])  # same size, first byte changed
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    assert file_identity(raw)["sha256_ends"] != first["sha256_ends"]
    assert digest("ingest", {}, {"txm": raw}) != before

    shutil.copy2(moved, raw)
    assert digest("ingest", {}, {"txm": raw}) == before
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert digest("ingest", {}, {"txm": raw}) != before


def test_folders_and_lists_of_files_are_identified(tmp_path: Path) -> None:
    stack = tmp_path / "c01_tiffs"
    stack.mkdir()
    for i in range(3):
        (stack / f"p{i:03d}.tif").write_bytes(bytes([i]) * 10)
    folder = file_identity(stack)
    assert (folder["kind"], folder["files"], folder["size"]) == ("directory", 3, 30)
    before = digest("ingest", {}, {"txm": stack})
    (stack / "p003.tif").write_bytes(b"new")
    assert digest("ingest", {}, {"txm": stack}) != before

    images = sorted(stack.glob("*.tif"))
    identities = identify({"sem": images})
    assert identities["sem"]["kind"] == "files"
    assert [item["name"] for item in identities["sem"]["items"]] == [p.name for p in images]


def test_fsspec_urls_are_identified() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/debond-inputs/c01.h5", b"abc" * 10)
    try:
        identity = file_identity("memory:///debond-inputs/c01.h5")
        assert identity["size"] == 30 and identity["name"] == "c01.h5"
        with pytest.raises(FileNotFoundError, match=r"input 'txm': memory://.*missing.h5"):
            identify({"txm": "memory:///debond-inputs/missing.h5"})
    finally:
        fs.rm("/debond-inputs", recursive=True)


def test_missing_inputs_and_odd_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"input 'txm': file .*c09.h5 does not exist"):
        identify({"txm": tmp_path / "c09.h5"})
    with pytest.raises(TypeError, match=r"input 'n': expected a path, .*got int"):
        identify({"n": 3})  # type: ignore[dict-item]


def test_array_inputs_chain_provenance(tmp_path: Path) -> None:
    store = open_store(tmp_path / "c.zarr", "a")
    recon = _write(store)
    inputs = {"recon": recon}
    identity = identify(inputs)["recon"]
    recorded = read_provenance(recon)
    assert recorded is not None
    assert identity == {"kind": "array", "path": "samples/c01/recon/0", "digest": recorded.digest}
    phases = _write(store, "phases", stage="segment", parameters={"classes": 5}, inputs=inputs)
    assert status(phases, "segment", {"classes": 5}, inputs) is Status.CURRENT
    # upstream redone with other parameters: downstream is stale
    recon = _write(store, parameters=PARAMETERS | {"iterations": 10})
    assert status(phases, "segment", {"classes": 5}, {"recon": recon}) is Status.STALE
    assert changes(phases, "segment", {"classes": 5}, {"recon": recon}) == [
        "inputs['recon']: changed"
    ]
    # upstream incomplete: it cannot be an input, and downstream is not current
    create_volume(
        store, "c01", "recon", (1, 1, 1), "uint8", voxel_size_um=1, stage="r", overwrite=True
    )
    with pytest.raises(
        IncompleteArray, match=r"input 'recon': array 'samples/c01/recon/0' .*not complete"
    ):
        identify({"recon": store["samples/c01/recon/0"]})
    assert (
        status(phases, "segment", {"classes": 5}, {"recon": store["samples/c01/recon/0"]})
        is Status.STALE
    )


# ------------------------------------------------------------------ status


def test_status_goes_missing_incomplete_current_stale(tmp_path: Path) -> None:
    location = tmp_path / "c.zarr"
    target = location / "samples" / "c01" / "recon"
    assert status(target, "recon", PARAMETERS, None) is Status.MISSING
    assert volume_status(location, "c01", "recon", "recon", PARAMETERS, None) is Status.MISSING
    array = create_volume(
        location,
        "c01",
        "recon",
        (2, 2, 2),
        "float32",
        voxel_size_um=1,
        stage="recon",
        parameters=PARAMETERS,
    )
    array[...] = 1
    assert status(array, "recon", PARAMETERS, None) is Status.INCOMPLETE
    marker = mark_complete(array)
    assert marker["digest"] == digest("recon", PARAMETERS, None)
    assert status(str(target), "recon", PARAMETERS, None) is Status.CURRENT
    assert is_current(target, "recon", PARAMETERS, None)
    assert volume_status(location, "c01", "recon", "recon", PARAMETERS, None) is Status.CURRENT
    changed = PARAMETERS | {"iterations": 500}
    assert status(array, "recon", changed, None) is Status.STALE
    assert not is_current(array, "recon", changed, None)
    assert changes(array, "recon", changed, None) == ["parameters['iterations']: 1000 -> 500"]
    assert status(array, "recon", PARAMETERS, None, version="9.9.9") is Status.STALE
    assert changes(array, "segment", PARAMETERS, None, version="9.9.9") == [
        "stage: 'recon' -> 'segment'",
        f"version: {__version__} -> 9.9.9",
    ]
    assert status(array, "recon", PARAMETERS, {"seed": {"value": 1}}) is Status.STALE
    assert changes(array, "recon", PARAMETERS, None) == []


def test_record_clears_the_marker_in_the_same_write(tmp_path: Path) -> None:
    array = _write(str(tmp_path / "c.zarr"))
    array.attrs["note"] = "kept"
    assert status(array, "recon", PARAMETERS, None) is Status.CURRENT
    record(array, make_provenance("recon", PARAMETERS, None))  # a rewrite with the same digest
    fresh = zarr.open_array(array.store_path, mode="r")
    assert "complete" not in fresh.attrs and fresh.attrs["note"] == "kept"
    assert status(array, "recon", PARAMETERS, None) is Status.INCOMPLETE
    provenance = read_provenance(array)
    assert provenance is not None and provenance.stage == "recon"
    assert provenance.version == __version__ and provenance.created.endswith("+00:00")


def test_overwriting_clears_the_marker_before_anything_else(tmp_path: Path) -> None:
    array = _write(str(tmp_path / "c.zarr"))
    create_volume(
        tmp_path / "c.zarr",
        "c01",
        "recon",
        (3, 4, 5),
        "float32",
        voxel_size_um=0.03,
        stage="recon",
        parameters=PARAMETERS,
        overwrite=True,
    )
    assert status(array, "recon", PARAMETERS, None) is Status.INCOMPLETE
    assert (
        status(tmp_path / "c.zarr/samples/c01/recon", "recon", PARAMETERS, None)
        is Status.INCOMPLETE
    )


def test_a_marker_needs_provenance(tmp_path: Path) -> None:
    array = create_volume(tmp_path / "c.zarr", "c01", "raw", (1, 1, 1), "uint8", voxel_size_um=1)
    with pytest.raises(MetadataError, match=r"'samples/c01/raw/0' .*has no provenance"):
        mark_complete(array)
    array.attrs["provenance"] = {"stage": "x"}
    with pytest.raises(MetadataError, match=r"provenance field 'parameters' must be a dict"):
        read_provenance(array)


# ------------------------------------------------------------------ a killed writer

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from debond.storage import create_volume, mark_complete

    location, depth, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    array = create_volume(
        location, "c01", "recon", (depth, 64, 64), "uint16", voxel_size_um=0.03,
        chunks=(1, 64, 64), stage="recon", parameters={"iterations": 10}, overwrite=True,
    )
    for z in range(depth):
        array[z] = np.full((64, 64), z + 1, dtype=np.uint16)
        print(z, flush=True)
        if z == pause:
            sys.stdin.readline()  # held here until the test kills it: mid-way, every time
    mark_complete(array)
    print("complete", flush=True)
    """
)


def test_a_writer_killed_mid_way_leaves_an_incomplete_array_that_a_rerun_redoes(
    tmp_path: Path,
) -> None:
    location = str(tmp_path / "campaign.zarr")
    parameters = {"iterations": 10}
    depth = 200
    complete = np.repeat(np.arange(1, depth + 1, dtype=np.uint16), 64 * 64).reshape(depth, 64, 64)
    # a complete earlier result with the very same provenance: the rewrite must not
    # be mistaken for it
    write_volume(
        location,
        "c01",
        "recon",
        complete,
        voxel_size_um=0.03,
        stage="recon",
        parameters=parameters,
        chunks=(1, 64, 64),
    )
    assert volume_status(location, "c01", "recon", "recon", parameters, None) is Status.CURRENT

    pause = 20
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, location, str(depth), str(pause)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as writer:
        assert writer.stdout is not None and writer.stderr is not None
        written = -1
        try:
            # the writer prints each slice it wrote, then waits after slice `pause`
            while written < pause:
                line = writer.stdout.readline()
                assert line, f"the writer stopped early: {writer.stderr.read()}"
                written = int(line)
        finally:
            writer.send_signal(signal.SIGKILL)  # mid-way, as a node failure would
            writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    assert volume_status(location, "c01", "recon", "recon", parameters, None) is Status.INCOMPLETE
    with pytest.raises(IncompleteArray, match="samples/c01/recon .* not complete"):
        open_volume(location, "c01", "recon")
    partial = open_volume(location, "c01", "recon", allow_incomplete=True).values
    assert (partial[: written + 1] == complete[: written + 1]).all()  # its chunks are there
    assert (partial[-1] == 0).all()  # the old data is gone, the rest never came

    write_volume(
        location,
        "c01",
        "recon",
        complete,
        voxel_size_um=0.03,
        stage="recon",
        parameters=parameters,
        overwrite=True,
    )
    assert volume_status(location, "c01", "recon", "recon", parameters, None) is Status.CURRENT
    np.testing.assert_array_equal(open_volume(location, "c01", "recon").values, complete)


# ------------------------------------------------------------------ the version


def test_the_version_comes_from_the_package_metadata() -> None:
    assert PACKAGE_VERSION == importlib.metadata.version("debond") == __version__
    assert make_provenance("recon", {}, None).version == PACKAGE_VERSION


def test_storage_imports_nothing_above_itself() -> None:
    """storage sits at the bottom (DESIGN.md, "Layout"): no ``debond`` module but
    ``debond.storage.*``, not even ``from debond import __version__``."""
    folder = Path(debond.storage.__file__).parent
    upward = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            upward += [
                f"{path.name}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] == "debond" and not name.startswith("debond.storage")
            ]
    assert upward == []
