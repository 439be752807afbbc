"""Small helpers shared by the test modules (fixtures are in the conftest files)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask


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
