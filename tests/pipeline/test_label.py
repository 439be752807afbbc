"""Block-wise labelling against scipy.ndimage.label on the whole volume, over chunkings."""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cc3d
import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask.callbacks import Callback
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from debond.pipeline.label import (
    CONNECTIVITIES,
    Labels,
    StoredMask,
    label,
    label_kernel,
    label_particles,
    label_stored,
)
from debond.pipeline.segment import SILICON

RANK = {6: 1, 18: 2, 26: 3}  # generate_binary_structure(3, rank) per connectivity


def reference(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """scipy.ndimage.label of the whole volume with the matching structuring element."""
    structure = ndimage.generate_binary_structure(3, RANK[connectivity])
    labels, n = ndimage.label(mask, structure)
    return labels, int(n)


def reference_kept(mask: np.ndarray, connectivity: int, min_volume: int) -> np.ndarray:
    """scipy's labels with components under ``min_volume`` voxels dropped and the rest
    renumbered in scipy's order (what ``label(min_volume_voxels=…)`` returns)."""
    expected, n = reference(mask, connectivity)
    keep = np.bincount(expected.ravel(), minlength=n + 1) >= min_volume
    keep[0] = False
    table = np.zeros(n + 1, np.int32)
    table[keep] = np.arange(1, keep.sum() + 1)
    return table[expected]


def assert_same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> None:
    """``a`` and ``b`` have the same background and their nonzero labels correspond one
    to one (a bijection), whatever the numbers."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shapes differ: {a.shape} and {b.shape}"
    background = (a == 0) != (b == 0)
    assert not background.any(), (
        f"background differs at {int(background.sum())} voxels, "
        f"first at {tuple(int(i) for i in np.argwhere(background)[0])}"
    )
    foreground = a != 0
    values = {"a": a[foreground].astype(np.int64), "b": b[foreground].astype(np.int64)}
    for one, other in (("a", "b"), ("b", "a")):
        # Each label of `one` must meet a single label of `other`: min == max over it.
        size = int(values[one].max(initial=0)) + 1
        low = np.full(size, np.iinfo(np.int64).max)
        high = np.full(size, -1)
        np.minimum.at(low, values[one], values[other])
        np.maximum.at(high, values[one], values[other])
        split = np.flatnonzero((high >= 0) & (low != high))
        assert not len(split), (
            f"labels {split[:5].tolist()} of {one} are split in {other} "
            f"({len(split)} labels in all)"
        )


def direct_touches_border(labels: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: label i + 1 has a voxel on one of the six outer faces."""
    touches = np.zeros(n + 1, bool)
    for axis in range(3):
        for index in (0, -1):
            touches[np.take(labels, index, axis=axis).ravel()] = True
    return touches[1:]


def check_against_scipy(mask: np.ndarray, chunks: Any, connectivity: int) -> Labels:
    """label() on a chunked mask equals scipy up to renumbering, and exactly (the
    documented order), with volumes and border flags from scipy's labels."""
    expected, n = reference(mask, connectivity)
    result = label(da.from_array(mask, chunks=chunks), connectivity=connectivity)
    got = result.labels.compute()
    assert got.dtype == np.int32
    assert_same_up_to_renumbering(got, expected)
    np.testing.assert_array_equal(got, expected)  # numbered by first appearance in C order
    assert result.count == n
    np.testing.assert_array_equal(
        result.volumes, np.bincount(expected.ravel(), minlength=n + 1)[1:]
    )
    assert result.volumes.dtype == np.int64
    np.testing.assert_array_equal(result.touches_border, direct_touches_border(expected, n))
    return result


# ------------------------------------------------------------------ volumes


def blobs(shape: tuple[int, int, int] = (12, 13, 14), seed: int = 0) -> np.ndarray:
    """Thresholded Gaussian-smoothed noise: irregular particles of a few voxels' size."""
    noise = np.random.default_rng(seed).normal(size=shape)
    return ndimage.gaussian_filter(noise, 1.2) > 0.12


def spheres(shape: tuple[int, int, int] = (12, 13, 14)) -> np.ndarray:
    """Spheres: two overlapping, one cut by the border, small ones of a voxel or seven."""
    z, y, x = np.indices(shape)
    mask = np.zeros(shape, bool)
    for cz, cy, cx, r in [
        (3, 3, 3, 2.5),
        (6, 5, 4, 2.2),  # overlaps the first
        (8, 9, 10, 3.0),
        (0, 12, 1, 2.5),  # cut by three faces
        (10, 2, 11, 1.0),  # 7 voxels
        (2, 10, 7, 0.5),  # 1 voxel
        (10, 11, 2, 1.5),
    ]:
        mask |= (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r**2
    return mask


def spiral(shape: tuple[int, int, int] = (12, 13, 14)) -> np.ndarray:
    """A one-voxel square spiral with one-voxel gaps between its turns, climbing one
    plane every side: a single 6-connected path that crosses many blocks many times."""
    mask = np.zeros(shape, bool)
    z, y, x = 0, shape[1] // 2, shape[2] // 2
    mask[z, y, x] = True
    directions = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    length, turn = 2, 0
    while True:
        dy, dx = directions[turn % 4]
        for _ in range(length):
            y, x = y + dy, x + dx
            if not (0 <= y < shape[1] and 0 <= x < shape[2]):
                return mask
            mask[z, y, x] = True
        if z + 1 < shape[0]:
            z += 1
            mask[z, y, x] = True
        turn += 1
        if turn % 2 == 0:
            length += 2


def combs(shape: tuple[int, int, int] = (12, 13, 14)) -> np.ndarray:
    """Pairs of interleaved combs (teeth one voxel apart, never touching) two planes
    thick, every fourth plane, and single voxels in the empty planes between them that
    touch them only through edges or corners."""
    mask = np.zeros(shape, bool)
    _, ny, nx = shape
    for z0 in range(0, shape[0] - 1, 4):
        planes = slice(z0, z0 + 2)
        mask[planes, 0, :] = True  # spine of comb A
        mask[planes, ny - 1, :] = True  # spine of comb B
        for x in range(0, nx, 4):
            mask[planes, 0 : ny - 2, x] = True  # teeth of A, stopping short of B's spine
        for x in range(2, nx, 4):
            mask[planes, 2:ny, x] = True  # teeth of B
    for z, y, x in [(2, 1, 1), (3, 5, 3), (6, 6, 13), (7, 12, 7), (10, 3, 5)]:
        if z < shape[0] and y < ny and x < nx:
            mask[z, y, x] = True
    return mask


def diagonal_lines(shape: tuple[int, int, int] = (12, 13, 14)) -> np.ndarray:
    """One-voxel lines along a body diagonal (connected only under 26), a face diagonal
    (18 and 26) and an anti-diagonal, far apart."""
    mask = np.zeros(shape, bool)
    for i in range(8):
        mask[i, i, i] = True  # (+1, +1, +1) steps: corners only
        mask[i, 12 - i, 13 - (i % 2)] = True  # (+1, -1, ±1): corners only
        mask[i + 2, 1, 11 - i] = True  # (+1, 0, -1): edges
    return mask


def sparse_noise(shape: tuple[int, int, int] = (12, 13, 14), seed: int = 1) -> np.ndarray:
    """25 % random voxels: mostly diagonal contacts, across every block edge and corner."""
    return np.random.default_rng(seed).random(shape) < 0.25


VOLUMES: dict[str, Callable[[], np.ndarray]] = {
    "blobs": blobs,
    "spheres": spheres,
    "spiral": spiral,
    "combs": combs,
    "diagonals": diagonal_lines,
    "noise": sparse_noise,
}

CHUNKINGS = [
    (12, 13, 14),  # one block
    (4, 4, 4),
    (3, 5, 2),
    (2, 2, 2),  # smaller than the particles
    (1, 13, 14),  # slabs one voxel thick
    ((5, 1, 6), (2, 9, 2), (7, 3, 4)),  # uneven, with a one-voxel chunk
]


def chunk_id(chunks: Any) -> str:
    return "x".join("-".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in chunks)


# ---------------------------------------------------------------- the helper


def test_assert_same_up_to_renumbering_accepts_a_relabelling_and_rejects_the_rest() -> None:
    expected, n = reference(blobs(), 6)
    assert n > 5
    permutation = np.concatenate([[0], np.random.default_rng(2).permutation(n) + 100])
    assert_same_up_to_renumbering(permutation[expected], expected)
    merged = expected.copy()
    merged[merged == 2] = 1  # two particles given one label
    with pytest.raises(AssertionError, match="split"):
        assert_same_up_to_renumbering(merged, expected)
    with pytest.raises(AssertionError, match="split"):
        assert_same_up_to_renumbering(expected, merged)
    grown = expected.copy()
    grown[np.unravel_index(np.flatnonzero(expected == 0)[0], expected.shape)] = 1
    with pytest.raises(AssertionError, match="background differs at 1 voxels"):
        assert_same_up_to_renumbering(grown, expected)
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_same_up_to_renumbering(expected[1:], expected)


# ------------------------------------------------------------------- kernel


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
@pytest.mark.parametrize("name", list(VOLUMES))
def test_label_kernel_equals_scipy(name: str, connectivity: int) -> None:
    mask = VOLUMES[name]()
    expected, n = reference(mask, connectivity)
    labels, count = label_kernel(mask, connectivity)
    assert labels.dtype == np.int32 and count == n
    np.testing.assert_array_equal(labels, expected)
    labels01, count01 = label_kernel(mask.astype(np.uint8), connectivity)  # integers 0/1
    assert count01 == n
    np.testing.assert_array_equal(labels01, expected)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_label_kernel_on_blocks_one_voxel_thick(connectivity: int) -> None:
    # cc3d 4.1 fails on some such blocks with connectivity 26; the kernel must not.
    rng = np.random.default_rng(3)
    for shape in [(1, 1, 3), (1, 3, 1), (3, 1, 1), (1, 3, 3), (1, 1, 7), (2, 1, 5), (1, 1, 1)]:
        for _ in range(20):
            mask = rng.random(shape) < 0.6
            labels, count = label_kernel(mask, connectivity)
            expected, n = reference(mask, connectivity)
            assert count == n
            np.testing.assert_array_equal(labels, expected)


def test_label_kernel_renumbers_when_cc3d_numbers_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel promises scipy's numbering (first appearance in C order); if a cc3d
    # version numbered otherwise, the kernel renumbers.
    original = cc3d.connected_components

    def reversed_numbering(data: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, int]:
        labels, n = original(data, **kwargs)
        return np.where(labels > 0, n + 1 - labels, 0).astype(labels.dtype), n

    monkeypatch.setattr(cc3d, "connected_components", reversed_numbering)
    mask = blobs()
    expected, n = reference(mask, 6)
    labels, count = label_kernel(mask)
    assert count == n > 2
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(label(da.from_array(mask, chunks=4)).labels.compute(), expected)


# -------------------------------------------------------- over chunkings


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=chunk_id)
@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
@pytest.mark.parametrize("name", list(VOLUMES))
def test_label_equals_scipy_over_chunkings(name: str, connectivity: int, chunks: Any) -> None:
    check_against_scipy(VOLUMES[name](), chunks, connectivity)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_label_with_one_voxel_chunks(connectivity: int) -> None:
    mask = sparse_noise((5, 6, 7), seed=4) | blobs((5, 6, 7), seed=5)
    check_against_scipy(mask, 1, connectivity)


@pytest.mark.parametrize(
    ("step", "counts"),
    [
        ((1, 1, 1), {6: 9, 18: 9, 26: 1}),  # corners only
        ((1, -1, 1), {6: 9, 18: 9, 26: 1}),
        ((1, 1, -1), {6: 9, 18: 9, 26: 1}),
        ((1, -1, -1), {6: 9, 18: 9, 26: 1}),
        ((1, 1, 0), {6: 9, 18: 1, 26: 1}),  # edges
        ((0, 1, -1), {6: 9, 18: 1, 26: 1}),
        ((1, 0, -1), {6: 9, 18: 1, 26: 1}),
    ],
    ids=str,
)
@pytest.mark.parametrize("chunks", [(1, 2, 3), (2, 2, 2), (3, 1, 2)], ids=chunk_id)
def test_one_voxel_diagonal_lines_across_block_corners_and_edges(
    step: tuple[int, int, int], counts: dict[int, int], chunks: tuple[int, int, int]
) -> None:
    mask = np.zeros((9, 9, 9), bool)
    start = [0 if s >= 0 else 8 for s in step]
    for i in range(9):
        mask[tuple(b + i * s if s else 4 for b, s in zip(start, step, strict=True))] = True
    for connectivity in CONNECTIVITIES:
        result = check_against_scipy(mask, chunks, connectivity)
        assert result.count == counts[connectivity]


def test_label_is_invariant_to_the_chunking_on_combs_and_spirals() -> None:
    mask = combs((9, 11, 25)) | np.roll(spiral((9, 11, 25)), 1, axis=0)
    results = [
        label(da.from_array(mask, chunks=chunks), connectivity=26).labels.compute()
        for chunks in [(9, 11, 25), (2, 3, 4), (4, 1, 7)]
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_label_equals_scipy_for_any_chunking(data: st.DataObject) -> None:
    shape = data.draw(st.tuples(*(st.integers(1, 9) for _ in range(3))), label="shape")
    chunks = tuple(data.draw(st.integers(1, n), label=f"chunk {i}") for i, n in enumerate(shape))
    connectivity = data.draw(st.sampled_from(CONNECTIVITIES), label="connectivity")
    density = data.draw(st.sampled_from([0.1, 0.3, 0.5, 0.8]), label="density")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    check_against_scipy(rng.random(shape) < density, chunks, connectivity)


def test_joined_blocks_equal_scipy_and_keep_whole_chunks() -> None:
    mask = blobs((20, 23, 26), seed=3) | spiral((20, 23, 26))
    expected, _ = reference(mask, 18)
    chunks = ((4,) * 5, (5, 5, 5, 5, 3), (7, 7, 7, 5))
    lazy = da.from_array(mask, chunks=chunks)
    for block_voxels in (1, 100, 1000, 10**6):
        result = label(lazy, connectivity=18, block_voxels=block_voxels)
        np.testing.assert_array_equal(result.labels.compute(), expected)
        edges = [set(np.cumsum(c)) for c in chunks]
        for axis, sizes in enumerate(result.labels.chunks):
            assert set(np.cumsum(sizes)) <= edges[axis]  # whole chunks, joined
            if block_voxels >= 1000:  # an edge of 10 or more: every axis joins chunks
                assert len(sizes) < len(chunks[axis])
        if block_voxels == 1:  # an edge of 1: nothing to join
            assert result.labels.chunks == chunks


def test_coarse_chunks_reach_the_edge_and_join_a_short_last_group() -> None:
    from debond.pipeline.label import coarse_chunks

    # edge 5 (cube root of 125): 2+2+2 reaches it, the last 2+1 is short and joins it
    assert coarse_chunks(((2, 2, 2, 2, 1), (9,), (1,) * 10), 125) == ((9,), (9,), (5, 5))
    assert coarse_chunks(((3, 3),), 1) == ((3, 3),)
    with pytest.raises(ValueError, match="block_voxels"):
        coarse_chunks(((3,),), 0)


# -------------------------------------------------- min volume, border, input


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
@pytest.mark.parametrize("minimum", [0, 1, 2, 8, 30, 10_000])
def test_min_volume_voxels_drops_small_labels_and_renumbers(
    connectivity: int, minimum: int
) -> None:
    mask = spheres() | blobs(seed=6)
    expected, n = reference(mask, connectivity)
    volumes = np.bincount(expected.ravel(), minlength=n + 1)
    keep = volumes >= minimum
    keep[0] = False
    table = np.zeros(n + 1, np.int32)
    table[keep] = np.arange(1, keep.sum() + 1)  # increasing old label = first appearance
    dropped = table[expected]
    result = label(
        da.from_array(mask, chunks=(3, 4, 5)), connectivity=connectivity, min_volume_voxels=minimum
    )
    got = result.labels.compute()
    assert_same_up_to_renumbering(got, dropped)
    np.testing.assert_array_equal(got, dropped)
    assert result.count == int(keep.sum())
    np.testing.assert_array_equal(result.volumes, volumes[keep])
    np.testing.assert_array_equal(
        result.touches_border, direct_touches_border(dropped, result.count)
    )
    assert result.volumes.shape == result.touches_border.shape == (result.count,)


def test_touches_border_marks_particles_on_each_outer_face() -> None:
    mask = np.zeros((10, 11, 12), bool)
    inside = (slice(4, 6), slice(4, 6), slice(4, 6))
    mask[inside] = True
    faces: list[tuple[Any, Any, Any]] = [
        (0, slice(1, 3), slice(1, 3)),
        (slice(7, 9), 10, slice(1, 3)),
        (slice(1, 3), slice(7, 9), 0),
        (9, slice(7, 9), slice(7, 9)),
        (slice(7, 9), 0, slice(7, 9)),
        (slice(7, 9), slice(1, 3), 11),
    ]
    for face in faces:
        mask[face] = True
    result = label(da.from_array(mask, chunks=(3, 4, 5)))
    assert result.count == 7
    inner = int(result.labels[4, 4, 4].compute())
    np.testing.assert_array_equal(result.touches_border, np.arange(1, 8) != inner)


def test_label_accepts_numpy_and_integer_masks() -> None:
    mask = blobs()
    expected, _ = reference(mask, 6)
    for value in (mask, mask.astype(np.uint8), mask.astype(np.int64)):
        result = label(value)  # NumPy: chunked in cubes (one block here)
        assert result.labels.chunks == ((12,), (13,), (14,))
        np.testing.assert_array_equal(result.labels.compute(), expected)
    lazy = label(da.from_array(mask.astype(np.uint16), chunks=5))
    np.testing.assert_array_equal(lazy.labels.compute(), expected)
    empty = label(np.zeros((3, 4, 5), bool))
    assert empty.count == 0 and empty.volumes.shape == empty.touches_border.shape == (0,)
    assert not empty.labels.compute().any()


def test_label_rejects_bad_input() -> None:
    mask = blobs()
    with pytest.raises(ValueError, match=r"mask must be 3-D \(z, y, x\).*got shape \(13, 14\)"):
        label(mask[0])
    with pytest.raises(
        ValueError, match=r"at least one voxel on each axis; got shape \(0, 13, 14\)"
    ):
        label(da.zeros((0, 13, 14), dtype=bool))
    unknown = da.from_array(mask, chunks=4)
    unknown = unknown[unknown.sum(axis=(1, 2)) >= 0]
    with pytest.raises(ValueError, match=r"known chunk sizes.*compute_chunk_sizes\(\)"):
        label(unknown)
    with pytest.raises(TypeError, match="mask must be boolean .*got dtype float64.*phases == 85"):
        label(mask.astype(float))
    phases = (mask * np.uint8(170)).astype(np.uint8)
    with pytest.raises(ValueError, match="only 0 and 1; found values from 0 to 170.*phases == 85"):
        label(phases)  # NumPy: checked at once
    with pytest.raises(ValueError, match="only 0 and 1; found values from 0 to 170"):
        label(da.from_array(phases, chunks=4))  # Dask: checked in the first reduction
    with pytest.raises(ValueError, match=r"connectivity must be 6 \(faces\), 18 .* 26 .*got 8"):
        label(mask, connectivity=8)
    for bad in (True, 6.0, "6"):
        with pytest.raises(ValueError, match=f"connectivity must be .*got {bad!r}"):
            label(mask, connectivity=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_volume_voxels must be an integer .* ≥ 0; got -1"):
        label(mask, min_volume_voxels=-1)
    with pytest.raises(TypeError, match="min_volume_voxels must be an integer .*; got 2.5"):
        label(mask, min_volume_voxels=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connectivity must be"):
        label_kernel(mask, connectivity=4)
    with pytest.raises(ValueError, match=r"mask must be 3-D \(z, y, x\); got shape \(13, 14\)"):
        label_kernel(mask[0])
    with pytest.raises(ValueError, match="only 0 and 1; found values from -1 to 1"):
        label_kernel(mask.astype(np.int8) - 1 + mask)


# ----------------------------------------------------------------- laziness


def sphere_block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """One block of a sphere and a lattice of small bars, from its location alone."""
    assert block_info is not None
    (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    z, y, x = np.mgrid[z0:z1, y0:y1, x0:x1]
    big = ((z - 9) ** 2 + (y - 10) ** 2 + (x - 11) ** 2) <= 49
    small = (z % 6 == 2) & (y % 7 == 3) & (x % 5 < 2)
    return big | small


def lazy_spheres(shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> da.Array:
    """The mask of :func:`sphere_block`, generated block by block: no task holds it all."""
    return da.map_blocks(
        sphere_block,
        chunks=da.core.normalize_chunks(chunks, shape),
        dtype=bool,
        meta=np.empty((0, 0, 0), bool),
    )


def test_label_runs_cc3d_once_per_block_and_returns_lazy_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shape, chunks = (20, 22, 24), (6, 7, 8)
    mask = lazy_spheres(shape, chunks)
    computes: list[int] = []
    counting = Callback(start=lambda dsk: computes.append(len(dsk)))
    calls: list[tuple[int, ...]] = []
    connected_components = cc3d.connected_components

    def counted(block: np.ndarray, **options: Any) -> Any:
        calls.append(block.shape)
        return connected_components(block, **options)

    monkeypatch.setattr(cc3d, "connected_components", counted)
    with dask.config.set(scheduler="threads"), counting:
        result = label(mask, connectivity=18, min_volume_voxels=3)
        assert len(computes) == 2  # the block labels persisted, then the reductions
        assert isinstance(result.labels, da.Array)
        assert result.labels.chunks == mask.chunks and result.labels.dtype == np.int32
        got = result.labels.compute()
        assert len(computes) == 3
    assert len(calls) == mask.npartitions  # one cc3d pass per block, none for the labels
    np.testing.assert_array_equal(got, reference_kept(mask.compute(scheduler="sync"), 18, 3))

    # The graph of `labels`: the kept block labels, one lookup task per block and the two
    # tables, each a single key that every block's task refers to; the mask is not
    # computed again, and no task holds anything of the volume's size.
    graph = dict(result.labels.__dask_graph__())
    assert len(graph) == 2 * mask.npartitions + 2
    tables = [key for key in graph if isinstance(key, str) and key.startswith("label-")]
    assert len(tables) == 2
    ours = [key for key in graph if isinstance(key, tuple) and key[0] == result.labels.name]
    assert len(ours) == mask.npartitions
    assert all(set(tables) <= set(graph[key].dependencies) for key in ours)
    assert max(len(pickle.dumps(task)) for task in graph.values()) < mask.size // 4


@pytest.mark.distributed
def test_label_on_scheduler_and_worker_processes(scheduler: str) -> None:
    distributed = pytest.importorskip("distributed")
    mask = sparse_noise((16, 17, 18), seed=8) | spheres((16, 17, 18))
    expected, n = reference(mask, 18)
    with distributed.Client(scheduler) as client:
        assert len(client.scheduler_info()["workers"]) == 2  # ready when yielded
        result = label(da.from_array(mask, chunks=(5, 6, 7)), connectivity=18, min_volume_voxels=2)
        got = result.labels.compute()
    volumes = np.bincount(expected.ravel())
    keep = volumes >= 2
    keep[0] = False
    table = np.zeros(n + 1, np.int32)
    table[keep] = np.arange(1, keep.sum() + 1)
    np.testing.assert_array_equal(got, table[expected])
    np.testing.assert_array_equal(result.volumes, volumes[keep])


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def electrode() -> np.ndarray:
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "electrode.tiff").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no electrode.tiff")
    tifffile = pytest.importorskip("tifffile")
    volume = tifffile.imread(Path(folder) / "electrode.tiff")
    assert volume.shape == (256, 256, 256) and volume.dtype == np.uint8
    return np.asarray(volume)


@pytest.mark.parametrize("chunks", [(64, 64, 64), (37, 100, 256)], ids=chunk_id)
@pytest.mark.parametrize("phase", [85, 170], ids=["active", "cbd"])
def test_electrode_phases_equal_scipy(electrode: np.ndarray, phase: int, chunks: Any) -> None:
    result = check_against_scipy(electrode == phase, chunks, 6)
    assert result.count == {85: 121, 170: 18132}[phase]


def test_electrode_small_particles_dropped(electrode: np.ndarray) -> None:
    mask = electrode == 170
    result = label(
        da.from_array(mask, chunks=(37, 100, 256)), connectivity=26, min_volume_voxels=20
    )
    expected = reference_kept(mask, 26, 20)
    np.testing.assert_array_equal(result.labels.compute(), expected)
    np.testing.assert_array_equal(result.volumes, np.bincount(expected.ravel())[1:])
    assert 0 < result.count < reference(mask, 26)[1]


# ------------------------------------------------------- touching particles


def balls(shape: tuple[int, int, int], centres_radii: list[tuple[Any, float]]) -> np.ndarray:
    """Union of balls (centre in voxels, radius in voxels) on a grid of ``shape``."""
    z, y, x = np.indices(shape).astype(float)
    mask = np.zeros(shape, bool)
    for (cz, cy, cx), r in centres_radii:
        mask |= (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    return mask


def ball_voxels(r: float, offset: tuple[float, float, float] = (0.3, 0.2, 0.1)) -> int:
    """Voxels of one digitised ball of radius ``r``."""
    n = 2 * int(r) + 5
    return int(
        balls((n, n, n), [((n // 2 + offset[0], n // 2 + offset[1], n // 2 + offset[2]), r)]).sum()
    )


def split(mask: np.ndarray, chunks: Any = 8, lo: float = 4.0, **kw: Any) -> Labels:
    """label() with a size prior of (lo, 50) voxels at a voxel of 0.5 µm."""
    return label(
        da.from_array(mask, chunks=chunks),
        radius_range_um=(lo * 0.5, 25.0),
        voxel_size_um=0.5,
        **kw,
    )


@pytest.mark.parametrize(
    "radii", [(10.0, 6.0), (9.0, 9.0), (11.0, 7.0, 5.0)], ids=["10-6", "9-9", "11-7-5"]
)
def test_touching_spheres_are_split_with_their_volumes(radii: tuple[float, ...]) -> None:
    # spheres in a row, each touching the next (centres r_i + r_j apart)
    centres = [3.3 + radii[0]]
    for a, b in itertools.pairwise(radii):
        centres.append(centres[-1] + a + b)
    side = int(2 * max(radii)) + 7
    shape = (side, side, int(centres[-1] + radii[-1]) + 5)
    mask = balls(
        shape,
        [((side / 2 - 0.3, side / 2 + 0.2, c), r) for c, r in zip(centres, radii, strict=True)],
    )
    assert reference(mask, 6)[1] == 1  # one connected component
    result = split(mask)
    assert result.count == len(radii) and result.components == 1 and result.split == 1
    labels = result.labels.compute()
    # piece i is the one holding the centre of sphere i
    for c, r in zip(centres, radii, strict=True):
        piece = labels[int(side / 2 - 0.3), int(side / 2 + 0.2), int(c)]
        volume = int((labels == piece).sum())
        assert volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.06), (r, volume)
        assert volume == pytest.approx(ball_voxels(r), rel=0.04), (r, volume)
    np.testing.assert_array_equal(np.bincount(labels.ravel())[1:], result.volumes)


def ellipsoid(semi: tuple[float, float, float], seed: int) -> np.ndarray:
    """A voxelised ellipsoid of semi-axes ``semi`` at a random orientation."""
    from scipy.spatial.transform import Rotation

    n = int(2 * max(semi)) + 6
    grid = np.indices((n, n, n)).reshape(3, -1).astype(float) - (n - 1) / 2 - 0.3
    p = Rotation.random(random_state=seed).as_matrix() @ grid
    inside = sum((p[a] / semi[a]) ** 2 for a in range(3)) <= 1
    return inside.reshape(n, n, n)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("semi", [(15, 10, 10), (9, 6, 6), (12, 10, 8)], ids=str)
def test_an_ellipsoid_of_aspect_1_5_stays_one(semi: tuple[float, ...], seed: int) -> None:
    mask = ellipsoid(semi, seed)  # type: ignore[arg-type]
    result = split(mask, lo=min(semi) / 2)
    assert result.count == 1 and result.split == 0


@pytest.mark.parametrize("depth", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("r", [8, 12])
def test_a_cracked_sphere_stays_one(r: int, depth: float) -> None:
    n = 2 * r + 7
    mask = balls((n, n, n), [((n / 2 - 0.2, n / 2 + 0.1, n / 2 + 0.3), r)])
    c = int(n / 2)
    mask[c, : c - r + round(depth * r), :] = False  # a crack one voxel thick from the surface
    assert reference(mask, 6)[1] == 1
    result = split(mask, lo=r / 2)
    assert result.count == 1 and result.volumes[0] == mask.sum()


def enclosed_specks(mask: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`mask` less `count` single voxels at least 3 voxels inside it (noise of another
    phase enclosed in a particle), drawn with `seed`."""
    inner = np.flatnonzero(ndimage.binary_erosion(mask, iterations=3))
    holes = np.random.default_rng(seed).choice(inner, size=count, replace=False)
    out = mask.copy()
    out.ravel()[holes] = False
    return out


@pytest.mark.parametrize("seed", range(4))
def test_a_sphere_with_enclosed_specks_stays_one(seed: int) -> None:
    # a digital-twin sphere of 14 voxels was cut in three by 23 such voxels: around
    # them the distance transform fell from 13.4 to 7.7 and made three maxima
    r = 14.0
    n = int(2 * r) + 7
    whole = balls((n, n, n), [((n / 2 - 0.2, n / 2 + 0.1, n / 2 + 0.3), r)])
    mask = enclosed_specks(whole, 25, seed)
    assert reference(mask, 6)[1] == 1
    result = split(mask, lo=1.7)
    assert result.count == 1 and result.volumes[0] == mask.sum()


def test_touching_spheres_with_enclosed_specks_are_still_split() -> None:
    side = 27
    whole = balls((side, side, 48), [((13.2, 13.7, 14.0), 10.0), ((13.2, 13.7, 31.0), 8.0)])
    mask = enclosed_specks(whole, 20, 0)
    assert reference(mask, 6)[1] == 1  # one connected component
    result = split(mask, lo=1.7)
    assert result.count == 2 and result.split == 1


def test_an_isolated_sphere_and_small_particles_stay_whole() -> None:
    mask = balls((30, 30, 40), [((14.7, 15.2, 14.9), 10.0), ((5, 5, 34), 2.0), ((25, 25, 35), 1.5)])
    result = split(mask)
    expected, n = reference(mask, 6)
    assert result.count == n == 3 and result.split == 0
    np.testing.assert_array_equal(result.labels.compute(), expected)


def test_split_is_the_same_for_any_chunking() -> None:
    rng = np.random.default_rng(4)
    spheres_ = [
        ((rng.uniform(8, 40), rng.uniform(8, 40), rng.uniform(8, 40)), rng.uniform(4, 9))
        for _ in range(14)
    ]
    mask = balls((48, 48, 48), spheres_)
    results = [split(mask, chunks=c, lo=3.0) for c in (48, 16, (7, 13, 48), (5, 48, 11))]
    first = results[0].labels.compute()
    assert results[0].split > 0 and results[0].count > results[0].components  # type: ignore[operator]
    for other in results[1:]:
        assert other.count == results[0].count
        np.testing.assert_array_equal(other.labels.compute(), first)  # the same numbers too
        np.testing.assert_array_equal(other.volumes, results[0].volumes)
        np.testing.assert_array_equal(other.touches_border, results[0].touches_border)
    # numbered by first appearance in C order, border flags from the labels
    values, index = np.unique(first.ravel(), return_index=True)
    assert (np.diff(index[values > 0]) > 0).all()
    np.testing.assert_array_equal(
        results[0].touches_border, direct_touches_border(first, results[0].count)
    )


def test_split_without_a_prior_or_switched_off_is_plain_labelling() -> None:
    mask = balls((24, 24, 36), [((12, 12, 9), 8.0), ((12, 12, 25), 8.0)])
    expected, _ = reference(mask, 6)
    for kw in ({}, {"split_touching": False, "radius_range_um": (1.0, 5.0), "voxel_size_um": 0.5}):
        result = label(mask, **kw)  # type: ignore[arg-type]
        assert result.count == 1 and result.components is None
        np.testing.assert_array_equal(result.labels.compute(), expected)
    assert split(mask).count == 2


def test_split_rejects_bad_priors() -> None:
    mask = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="radius_range_um"):
        label(mask, radius_range_um=(2.0, 1.0), voxel_size_um=1.0)
    with pytest.raises(ValueError, match="radius_range_um"):
        label(mask, radius_range_um=(0.0, 1.0), voxel_size_um=1.0)
    with pytest.raises(ValueError, match="voxel_size_um"):
        label(mask, radius_range_um=(1.0, 2.0))
    with pytest.raises(ValueError, match="max_split_voxels"):
        label(mask, max_split_voxels=0)
    with pytest.raises(TypeError, match="split_touching"):
        label(mask, split_touching="yes")  # type: ignore[arg-type]


def test_a_component_over_max_split_voxels_is_left_whole() -> None:
    mask = balls((24, 24, 36), [((12, 12, 9), 8.0), ((12, 12, 25), 8.0)])
    assert split(mask, max_split_voxels=1000).count == 1
    assert split(mask, max_split_voxels=24 * 24 * 36).count == 2


def test_split_computes_three_times_and_returns_lazy_labels() -> None:
    mask = balls((24, 24, 36), [((12, 12, 9), 8.0), ((12, 12, 24), 8.0), ((4, 4, 33), 2.0)])
    computes: list[int] = []
    counting = Callback(start=lambda dsk: computes.append(len(dsk)))
    with dask.config.set(scheduler="threads"), counting:
        result = split(mask, chunks=(7, 9, 11))
        # the block labels persisted, the reductions, then the pieces' statistics
        assert len(computes) == 3
        assert isinstance(result.labels, da.Array) and result.labels.dtype == np.int32
        got = result.labels.compute()
        assert len(computes) == 4
    assert result.count == 3 and result.components == 2 and result.split == 1
    np.testing.assert_array_equal(np.bincount(got.ravel())[1:], result.volumes)


def test_split_batches_hold_at_most_max_split_voxels() -> None:
    from debond.pipeline.label import _batches

    boxes = np.array([[0, 4, 0, 4, 0, 4]] * 5 + [[0, 10, 0, 10, 0, 10]], np.int64)  # 64, 1000
    batches = _batches(np.arange(6), boxes, 200)
    assert batches == [[0, 1, 2], [3, 4], [5]]  # a box over the budget goes alone


@pytest.mark.distributed
def test_split_on_scheduler_and_worker_processes(scheduler: str) -> None:
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(4)
    mask = balls(
        (40, 40, 40),
        [(tuple(rng.uniform(6, 34, 3)), rng.uniform(4, 8)) for _ in range(10)],
    )
    expected = split(mask, chunks=40, lo=3.0)
    with distributed.Client(scheduler) as client:
        client.wait_for_workers(2, timeout=60)
        result = split(mask, chunks=(9, 13, 40), lo=3.0)
        got = result.labels.compute()
    assert result.count == expected.count and result.split > 0
    np.testing.assert_array_equal(got, expected.labels.compute())


# ------------------------------------------------------------- from the store


def stored(tmp_path: Path, volume: np.ndarray, chunks: Any) -> zarr.Array:
    """``volume`` as a zarr array on disk, in ``chunks``."""
    return zarr.create_array(tmp_path / f"stored-{chunk_id(chunks)}", data=volume, chunks=chunks)


def touching_balls(seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return balls(
        (48, 48, 48),
        [(tuple(rng.uniform(8, 40, 3)), rng.uniform(4, 9)) for _ in range(14)],
    )


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize(
    ("chunks", "block_voxels"), [((16, 16, 16), None), ((7, 13, 48), 20**3)], ids=["16", "joined"]
)
@pytest.mark.parametrize("prior", [True, False], ids=["split", "whole"])
def test_labels_from_the_store_are_the_labels_of_the_array(
    tmp_path: Path, connectivity: int, chunks: Any, block_voxels: int | None, prior: bool
) -> None:
    """The stored path gives label()'s result on the same mask, numbers included,
    whatever the stored chunks and blocks; the phases are read as their silicon."""
    mask = touching_balls()
    mask[0, 0, :5] = True  # a particle on the border, five voxels
    phases = np.where(mask, SILICON, 1).astype(np.uint8)
    keywords: dict[str, Any] = {"connectivity": connectivity, "min_volume_voxels": 3}
    if prior:
        keywords |= {"radius_range_um": (1.5, 25.0), "voxel_size_um": 0.5}
    expected = label(da.from_array(mask, chunks=48), **keywords)
    scratch = zarr.open_group(tmp_path / "scratch", mode="w")
    got = label_stored(
        StoredMask(stored(tmp_path, phases, chunks), SILICON),
        scratch,
        block_voxels=block_voxels,
        **keywords,
    )
    labels = got.labels.compute()
    np.testing.assert_array_equal(labels, expected.labels.compute())
    assert (got.count, got.components, got.split) == (
        expected.count,
        expected.components,
        expected.split,
    )
    np.testing.assert_array_equal(got.volumes, expected.volumes)
    np.testing.assert_array_equal(got.touches_border, expected.touches_border)
    if prior:
        assert got.split > 0 and "pieces" in scratch
    else:  # plain labelling: scipy's, small ones dropped
        np.testing.assert_array_equal(labels, reference_kept(mask, connectivity, 3))
    if block_voxels is None:
        assert got.labels.chunks == da.core.normalize_chunks(chunks, mask.shape)


def test_labels_from_the_store_are_tasks_that_read_the_store(tmp_path: Path) -> None:
    """The final labels' graph is one task per block with no dependencies (each reads
    its own box, so none holds another's result); the pieces wait in the scratch."""
    mask = touching_balls(seed=5)
    scratch = zarr.open_group(tmp_path / "scratch", mode="w")
    got = label_stored(
        StoredMask(stored(tmp_path, mask, (16, 16, 16)), True),
        scratch,
        radius_range_um=(1.5, 25.0),
        voxel_size_um=0.5,
    )
    graph = got.labels.dask
    assert len(dict(graph)) == got.labels.npartitions == 27
    assert not any(graph.dependencies.values())
    assert got.split > 0
    held = scratch["pieces"]
    assert isinstance(held, zarr.Array)
    pieces = np.asarray(held[:])
    assert 0 < int((pieces > 0).sum()) < got.volumes.sum()  # only the split components
    np.testing.assert_array_equal(np.bincount(got.labels.compute().ravel())[1:], got.volumes)


def test_a_mask_changed_in_the_store_is_reported(tmp_path: Path) -> None:
    mask = touching_balls(seed=6)
    array = stored(tmp_path, mask, (16, 16, 16))
    got = label_stored(StoredMask(array, True), zarr.open_group(tmp_path / "scratch", mode="w"))
    array[0, 0, 0] = array[0, 0, 2] = True  # two new components in the first block
    array[0, 0, 1] = False
    with pytest.raises(RuntimeError, match="changed"):
        got.labels.compute()


def test_stored_phases_need_a_scratch_and_a_3d_array(tmp_path: Path) -> None:
    phases = stored(tmp_path, np.zeros((4, 4, 4), np.uint8), (4, 4, 4))
    with pytest.raises(ValueError, match="scratch"):
        label_particles(phases, voxel_size_um=0.5)
    flat = zarr.create_array(tmp_path / "flat", data=np.zeros((4, 4), bool), chunks=(2, 2))
    with pytest.raises(ValueError, match="3-D"):
        label_stored(StoredMask(flat, True), zarr.open_group(tmp_path / "scratch", mode="w"))


@pytest.mark.distributed
def test_labels_from_the_store_on_scheduler_and_worker_processes(
    tmp_path: Path, scheduler: str
) -> None:
    distributed = pytest.importorskip("distributed")
    mask = touching_balls(seed=7)
    expected = split(mask, chunks=48, lo=3.0)
    with distributed.Client(scheduler) as client:
        client.wait_for_workers(2, timeout=60)
        got = label_stored(
            StoredMask(stored(tmp_path, mask, (9, 13, 48)), True),
            zarr.open_group(tmp_path / "scratch", mode="w"),
            radius_range_um=(1.5, 25.0),
            voxel_size_um=0.5,
        )
        labels = got.labels.compute()
    assert got.count == expected.count and got.split > 0
    np.testing.assert_array_equal(labels, expected.labels.compute())
