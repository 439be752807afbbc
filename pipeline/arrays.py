"""Chunk-type dispatch: one kernel for NumPy and CuPy chunks.

A kernel asks the chunk it was given for its array module
(:func:`array_module`) and its ``scipy.ndimage`` (:func:`ndimage_module`), so
that the same Dask graph runs on NumPy chunks on CPU workers and on CuPy
chunks on GPU workers; ``meta`` follows the input (:func:`meta_like`), as
dask-image does it. CuPy is optional: without it every chunk is NumPy.

Examples
--------
>>> import numpy as np
>>> x = np.ones((2, 3), np.float32)
>>> array_module(x).__name__, ndimage_module(x).__name__
('numpy', 'scipy.ndimage')
>>> meta_like(x, np.uint8).shape, meta_like(x, np.uint8).dtype
((0, 0), dtype('uint8'))
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import scipy.ndimage

try:  # an optional dependency (the "gpu" extra)
    import cupy
    import cupyx.scipy.ndimage as cupy_ndimage
except ImportError:  # pragma: no cover - depends on the machine
    cupy = None
    cupy_ndimage = None


def is_cupy(array: Any) -> bool:
    """Whether ``array`` is a CuPy array (False where CuPy is not installed)."""
    return cupy is not None and isinstance(array, cupy.ndarray)


def array_module(array: Any) -> ModuleType:
    """``cupy`` for a CuPy array, else ``numpy``."""
    return cupy if is_cupy(array) else np


def ndimage_module(array: Any) -> ModuleType:
    """``cupyx.scipy.ndimage`` for a CuPy array, else ``scipy.ndimage``."""
    return cupy_ndimage if is_cupy(array) else scipy.ndimage


def meta_like(array: Any, dtype: Any, ndim: int | None = None) -> Any:
    """An empty array of ``array``'s kind (NumPy or CuPy): a Dask ``meta``.

    Parameters
    ----------
    array : numpy.ndarray, cupy.ndarray or dask.array.Array
        A Dask array gives its own ``_meta``'s kind.
    dtype : dtype-like
    ndim : int, optional
        Default ``array.ndim``.
    """
    kind = getattr(array, "_meta", array)
    return array_module(kind).empty((0,) * (array.ndim if ndim is None else ndim), dtype=dtype)


def to_numpy(array: Any) -> np.ndarray[Any, Any]:
    """A NumPy copy of a CuPy array (the explicit device-to-host move); NumPy as is."""
    return array.get() if is_cupy(array) else np.asarray(array)


def cuda_available() -> bool:
    """Whether CuPy is installed and sees at least one CUDA device."""
    if cupy is None:
        return False
    try:
        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except cupy.cuda.runtime.CUDARuntimeError:
        return False
