"""Small helpers shared by the test modules (fixtures are in the conftest files)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import dask
import tomlkit


@contextlib.contextmanager
def raise_if_dask_computes() -> Iterator[None]:
    """Fail if anything computes a Dask graph inside the block.

    xarray.tests' helper of the same name; importing ``xarray.tests`` registers
    a pytest marker this project's strict configuration refuses.
    """

    def scheduler(dsk: object, keys: object, **kwargs: object) -> None:
        raise AssertionError("a Dask graph was computed where everything should stay lazy")

    with dask.config.set(scheduler=scheduler):
        yield


def one_sample_campaign(source: Path, target: Path) -> Path:
    """The small synthetic campaign's inputs with its first sample only (a quick run)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("store.zarr", "truth"))
    path = target / "campaign.toml"
    document = tomlkit.parse(path.read_text())
    del document["sample"][1:]  # type: ignore[union-attr]
    path.write_text(tomlkit.dumps(document))
    return path
