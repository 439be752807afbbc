"""Chunk-type dispatch with NumPy chunks (CuPy's side is the gpu-marked tests' and
benchmarks/gpu_check.sh's)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage

from debond.pipeline import arrays


def test_numpy_chunks_get_numpy_and_scipy() -> None:
    chunk = np.zeros((3, 3))
    assert arrays.array_module(chunk) is np
    assert arrays.ndimage_module(chunk) is scipy.ndimage
    assert not arrays.is_cupy(chunk) and arrays.to_numpy(chunk) is chunk


def test_meta_follows_the_input_through_a_graph() -> None:
    """A kernel's meta is built from its input's, so the graph is the same on both kinds."""
    volume = da.zeros((8, 8, 8), chunks=4, dtype=np.float32)
    meta = arrays.meta_like(volume, np.uint8)
    assert type(meta) is np.ndarray and meta.shape == (0, 0, 0) and meta.dtype == np.uint8
    labelled = volume.map_blocks(lambda b: (b > 0).astype(np.uint8), meta=meta)
    assert type(labelled._meta) is np.ndarray and labelled.dtype == np.uint8
    assert arrays.meta_like(volume, np.float32, ndim=2).shape == (0, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not arrays.cuda_available(), reason="no CuPy with a CUDA device")
def test_cupy_chunks_get_cupy_and_cupyx() -> None:
    import cupy
    import cupyx.scipy.ndimage

    chunk = cupy.zeros((3, 3))
    assert arrays.array_module(chunk) is cupy
    assert arrays.ndimage_module(chunk) is cupyx.scipy.ndimage
    assert type(arrays.meta_like(da.from_array(chunk), np.uint8)) is cupy.ndarray
    assert type(arrays.to_numpy(chunk)) is np.ndarray
