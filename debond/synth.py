"""Synthetic campaigns with known ground truth (``debond synth``).

A campaign of samples imaged after 0, 1, 3 and 10 cycles. Each sample is an
electrode microstructure in a cylindrical pillar (like the paper's laser-milled
samples): silicon particles with log-normal radii, each with an SEI shell and
a gap to the carbon black-binder domain (CBD) drawn from :mod:`debond.model`
(stochastic disconnection included); large, weakly absorbing graphite
particles; a porous CBD network of blobs that bridges the particles and a CBD
coat around every silicon particle at its gap; epoxy-filled pores.

What a beamline would record is written as it would be: parallel-beam
projections computed with ASTRA, Beer–Lambert attenuation of a flat field
with Poisson counting noise, flats and darks, a rotation axis off the
detector centre by a sub-pixel amount, in Data Exchange HDF5 (like
``tooth.h5``). SEM cross-sections are planar sections of the same kind of
microstructure, rendered analytically, blurred and noisy, written as TIFF with
the pixel size. Cycling data follow the recipe and the model's retention of
the electrode's particles: those of the SEM images' slabs, larger on average
than the pillars', which hold only the particles that fit in them.

Everything is drawn from one seed; volumes are rendered and projected slab by
slab, so a volume larger than memory can be written.

Phase codes (DESIGN.md): 0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import astra
import h5py
import numpy as np
import pandas as pd
import tifffile
import zarr
from scipy import ndimage
from scipy.spatial import cKDTree

from debond.campaign_file import dump_campaign
from debond.model import PAPER_PARAMETERS, Material, Parameters, capacity_retention, gaps
from debond.model.disconnection import disconnection_probability
from debond.model.synthetic import RADIUS_LOG_SD, RADIUS_MEDIAN_UM, simulate_cycling
from debond.storage import create_volume, mark_complete, open_store, set_sample_attrs
from debond.storage.tables import SECTIONS_SCHEMA, TRUTH_SCHEMA, write_table

PORE, GRAPHITE, CBD, SILICON, SEI = 0, 1, 2, 3, 4
PHASE_NAMES = {PORE: "pore", GRAPHITE: "graphite", CBD: "cbd", SILICON: "silicon", SEI: "sei"}

#: X-ray attenuation of each phase, 1/µm. Graphite and epoxy-filled pores are
#: nearly alike, the copper-stained CBD is the brightest (as in the paper).
ATTENUATION_PER_UM = {PORE: 0.050, GRAPHITE: 0.060, CBD: 0.300, SILICON: 0.160, SEI: 0.090}
#: Backscatter intensity of each phase in SEM (0–1): copper-stained CBD
#: brightest, bismuth-stained epoxy in the pores, weakly scattering SEI dark.
SEM_INTENSITY = {PORE: 0.45, GRAPHITE: 0.20, CBD: 0.90, SILICON: 0.62, SEI: 0.10}

CYCLES = (0, 1, 3, 10)
ELECTRODE_MASS_MG = 2.0


#: Silicon particle radii drawn, µm: log-normal, cut to this range (and to the box).
SMALLEST_RADIUS_UM, LARGEST_RADIUS_UM = 0.1, 2.0


def grey_class_bounds(per_um: Mapping[int, float] | None = None) -> list[float]:
    """Midpoints between the attenuations of air | pore, graphite | SEI | silicon | CBD, 1/µm.

    The four grey-class boundaries of :func:`debond.pipeline.segment.segment`
    for these phantoms.

    Examples
    --------
    >>> [round(b, 3) for b in grey_class_bounds()]
    [0.025, 0.075, 0.125, 0.23]
    """
    a = {**ATTENUATION_PER_UM, **(per_um or {})}
    low, high = min(a[PORE], a[GRAPHITE]), max(a[PORE], a[GRAPHITE])
    return [low / 2, (high + a[SEI]) / 2, (a[SEI] + a[SILICON]) / 2, (a[SILICON] + a[CBD]) / 2]


#: Median filter written into synthetic campaign files (px); see ``_campaign_document``.
SYNTHETIC_MEDIAN_SIZE = 1


@dataclass(frozen=True)
class Preset:
    """Sizes of a synthetic campaign.

    Attributes
    ----------
    shape : (int, int, int)
        Volume (z, y, x) in voxels; the pillar's axis is z.
    voxel_size_um : float
        Voxel edge, µm.
    n_angles : int
        Projections over 180°.
    sem_images : int
        SEM images per sample.
    sem_shape : (int, int)
        SEM image (rows, columns), pixels.
    sem_pixel_size_um : float
    slab : int
        Detector rows (z slices) rendered and projected at a time.
    """

    shape: tuple[int, int, int]
    voxel_size_um: float
    n_angles: int
    sem_images: int
    sem_shape: tuple[int, int]
    sem_pixel_size_um: float
    slab: int = 16
    n_flats: int = 10
    n_darks: int = 10
    flat_counts: float = 20000.0
    dark_counts: float = 100.0
    silicon_fraction: float = 0.08
    graphite_fraction: float = 0.25
    cbd_blob_fraction: float = 0.06
    coat_um: float = 0.12
    axis_shift_px: float = 1.37


PRESETS = {
    "small": Preset((48, 64, 64), 0.06, 90, 1, (256, 256), 0.03),
    "demo": Preset((128, 160, 160), 0.06, 240, 2, (768, 768), 0.03),
    "large": Preset((512, 512, 512), 0.06, 360, 2, (1024, 1024), 0.03, slab=32),
}


@dataclass
class Microstructure:
    """Objects of one sample, positions in µm from the volume's corner (z, y, x).

    Silicon particle i has radius ``radius[i]``, SEI ``sei[i]`` and gap
    ``gap[i]`` (SEI included, so gap ≥ sei), disconnected after ``last_cycle[i]``.
    """

    box_um: tuple[float, float, float]
    silicon_centre: np.ndarray  # (N, 3)
    radius: np.ndarray  # (N,)
    sei: np.ndarray
    gap: np.ndarray
    last_cycle: np.ndarray
    graphite_centre: np.ndarray  # (M, 3)
    graphite_radius: np.ndarray
    blob_centre: np.ndarray  # (K, 3)
    blob_radius: np.ndarray
    coat_um: float
    pillar_radius_um: float | None  # None: no pillar (SEM slabs)

    @property
    def pillar_axis_yx(self) -> tuple[float, float]:
        return self.box_um[1] / 2.0, self.box_um[2] / 2.0


def _radii(rng: np.random.Generator, size: int, upper: float) -> np.ndarray:
    r = rng.lognormal(np.log(RADIUS_MEDIAN_UM), RADIUS_LOG_SD, size * 3)
    r = r[(r >= SMALLEST_RADIUS_UM) & (r <= upper)]
    return r[:size]


def _place(
    rng: np.random.Generator,
    box: np.ndarray,
    reach: np.ndarray,
    placed_centres: np.ndarray,
    placed_reach: np.ndarray,
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tries: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential addition of spheres of the given reaches (µm).

    Each candidate gets ``tries`` random positions; it is kept at the first
    that overlaps no sphere already placed and satisfies ``inside``.
    Returns (centres of the kept spheres, indices of the kept reaches).
    """
    centres = [c for c in placed_centres]
    reaches = list(placed_reach)
    kept, kept_index = [], []
    for index in np.argsort(-reach):  # large first: they are hardest to fit
        r = reach[index]
        candidates = rng.uniform(0.0, 1.0, (tries, 3)) * box
        ok = inside(candidates, np.full(tries, r))
        if centres:
            tree_c = np.asarray(centres)
            distance = np.linalg.norm(candidates[:, None, :] - tree_c[None, :, :], axis=2)
            ok &= np.all(distance >= r + np.asarray(reaches)[None, :], axis=1)
        hits = np.flatnonzero(ok)
        if hits.size:
            centres.append(candidates[hits[0]])
            reaches.append(r)
            kept.append(candidates[hits[0]])
            kept_index.append(index)
    return np.asarray(kept).reshape(-1, 3), np.asarray(kept_index, dtype=np.intp)


def imaged_history(
    radius_um: np.ndarray,
    n_cycles: int,
    parameters: Parameters,
    material: Material,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gap, SEI thickness and last active cycle K of particles imaged after n cycles.

    K = min(disconnection cycle, n) with disconnection at the end of cycle k
    with probability min(1, ζ0·d_k) (MODEL.md); the SEI grew δ0 per cycle up to K.
    """
    if n_cycles == 0:
        zero = np.zeros_like(radius_um)
        return zero, zero, np.zeros(radius_um.shape, dtype=np.int64)
    d = gaps(radius_um, n_cycles, parameters, material)
    drops = rng.random(d.shape) < disconnection_probability(d, parameters.zeta0)
    drops[-1] = True
    last = np.argmax(drops, axis=0)
    gap = d[last, np.arange(radius_um.size)]
    return gap, (last + 1) * float(parameters.delta0), last + 1


def draw_microstructure(
    rng: np.random.Generator,
    box_um: tuple[float, float, float],
    n_cycles: int,
    preset: Preset,
    parameters: Parameters = PAPER_PARAMETERS,
    material: Material | None = None,
    *,
    pillar: bool = True,
) -> Microstructure:
    """Draw the objects of one sample.

    Parameters
    ----------
    rng : numpy.random.Generator
    box_um : (float, float, float)
        Extent (z, y, x) in µm.
    n_cycles : int
        Cycles the sample went through (sets gaps and SEI).
    preset : Preset
        Volume fractions and CBD coat thickness.
    parameters, material
        The model that draws the gaps.
    pillar : bool
        Keep objects inside a cylinder along z of radius 0.45·min(y, x) extent.

    Returns
    -------
    Microstructure
    """
    material = material or Material()
    box = np.asarray(box_um, dtype=np.float64)
    pillar_radius = 0.45 * min(box[1], box[2]) if pillar else None
    axis = box[1:] / 2.0

    def inside(centres: np.ndarray, reach: np.ndarray) -> np.ndarray:
        ok = np.all((centres >= 0) & (centres <= box), axis=1)
        if pillar_radius is not None:
            ok &= np.linalg.norm(centres[:, 1:] - axis, axis=1) + 0.3 * reach <= pillar_radius
        return ok

    volume = float(np.prod(box)) * (0.785 if pillar else 1.0)
    upper = max(0.2, min(LARGEST_RADIUS_UM, box.min() / 5.0))
    mean_cube = np.exp(3 * np.log(RADIUS_MEDIAN_UM) + 4.5 * RADIUS_LOG_SD**2)
    wanted = max(3, int(preset.silicon_fraction * volume / (4.19 * mean_cube)) + 1)
    radius = _radii(rng, wanted, upper)
    gap, sei, last = imaged_history(radius, n_cycles, parameters, material, rng)
    reach = radius + gap + preset.coat_um
    centres, keep = _place(rng, box, reach, np.zeros((0, 3)), np.zeros(0), inside)
    radius, gap, sei, last, reach = radius[keep], gap[keep], sei[keep], last[keep], reach[keep]
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0]))
    centres, radius, gap, sei, last, reach = (
        a[order] for a in (centres, radius, gap, sei, last, reach)
    )

    graphite_r = rng.uniform(1.0, 2.0, 64) * min(1.0, box.min() / 8.0)
    wanted_g = int(preset.graphite_fraction * volume / (4.19 * np.mean(graphite_r**3))) + 1
    graphite_centres, g_keep = _place(rng, box, graphite_r[:wanted_g], centres, reach, inside)
    graphite_r = graphite_r[:wanted_g][g_keep]

    mean_blob_cube = (0.35**4 - 0.12**4) / (4 * (0.35 - 0.12))  # E[r³], r ~ U(0.12, 0.35)
    wanted_b = int(preset.cbd_blob_fraction * volume / (4.19 * mean_blob_cube)) + 1
    blob_r = rng.uniform(0.12, 0.35, wanted_b)
    blob_centres = rng.uniform(0.0, 1.0, (wanted_b, 3)) * box
    # Blobs stay out of the silicon particles' gaps (they may touch coats and
    # graphite: that is the bridging network).
    if centres.size:
        tree = cKDTree(centres)
        clear = np.ones(blob_r.size, dtype=bool)
        for j, near in enumerate(tree.query_ball_point(blob_centres, blob_r + reach.max())):
            if near:
                distance = np.linalg.norm(centres[near] - blob_centres[j], axis=1)
                clear[j] = not np.any(distance < blob_r[j] + radius[near] + gap[near])
        blob_centres, blob_r = blob_centres[clear], blob_r[clear]
    return Microstructure(
        box_um=tuple(box),  # type: ignore[arg-type]
        silicon_centre=centres,
        radius=radius,
        sei=sei,
        gap=gap,
        last_cycle=last,
        graphite_centre=graphite_centres,
        graphite_radius=graphite_r,
        blob_centre=blob_centres,
        blob_radius=blob_r,
        coat_um=preset.coat_um,
        pillar_radius_um=pillar_radius,
    )


def _paint(
    phases: np.ndarray,
    origin: np.ndarray,
    voxel: float,
    centres: np.ndarray,
    outer: np.ndarray,
    code: int | Callable[[np.ndarray, int], np.ndarray],
) -> None:
    """Paint spheres (centres, outer radii in µm) into a block at ``origin`` (µm).

    ``code`` is a phase code, or a function (distance to the centre in µm,
    object index) → phase codes for the voxels inside ``outer``.
    """
    shape = np.array(phases.shape)
    for i, (c, r) in enumerate(zip(centres, outer, strict=True)):
        low = np.maximum(np.floor((c - r - origin) / voxel).astype(int), 0)
        high = np.minimum(np.ceil((c + r - origin) / voxel).astype(int) + 1, shape)
        if np.any(high <= low):
            continue
        axes = [origin[a] + np.arange(low[a], high[a]) * voxel - c[a] for a in range(phases.ndim)]
        grid = np.meshgrid(*axes, indexing="ij", sparse=True)
        distance = np.sqrt(sum(g * g for g in grid))
        block = phases[tuple(slice(low[a], high[a]) for a in range(phases.ndim))]
        inside = distance <= r
        if callable(code):
            block[inside] = code(distance[inside], i)
        else:
            block[inside] = code


def render_phases(
    micro: Microstructure, z_start: int, z_stop: int, shape_yx: tuple[int, int], voxel: float
) -> np.ndarray:
    """Phase codes of voxel slices z_start … z_stop − 1, shape (z, y, x), uint8.

    Voxel centres sit at index·voxel µm (the store's coordinates). Painting order: CBD blobs,
    CBD coats, graphite, then every silicon particle's gap (pore), SEI and
    silicon, so each particle's surroundings are exactly its drawn gap.
    """
    phases = np.zeros((z_stop - z_start, *shape_yx), dtype=np.uint8)
    origin = np.array([z_start * voxel, 0.0, 0.0])
    _paint(phases, origin, voxel, micro.blob_centre, micro.blob_radius, CBD)
    coat = micro.radius + micro.gap + micro.coat_um
    _paint(phases, origin, voxel, micro.silicon_centre, coat, CBD)
    _paint(phases, origin, voxel, micro.graphite_centre, micro.graphite_radius, GRAPHITE)

    def shells(distance: np.ndarray, i: int) -> np.ndarray:
        out = np.full(distance.shape, PORE, dtype=np.uint8)
        out[distance <= micro.radius[i] + micro.sei[i]] = SEI
        out[distance <= micro.radius[i]] = SILICON
        return out

    _paint(phases, origin, voxel, micro.silicon_centre, micro.radius + micro.gap, shells)
    return phases


def pillar_mask(micro: Microstructure, shape_yx: tuple[int, int], voxel: float) -> np.ndarray:
    """Voxels (y, x) inside the pillar, bool; all True without a pillar."""
    if micro.pillar_radius_um is None:
        return np.ones(shape_yx, dtype=bool)
    y = np.arange(shape_yx[0]) * voxel - micro.pillar_axis_yx[0]
    x = np.arange(shape_yx[1]) * voxel - micro.pillar_axis_yx[1]
    return np.asarray(y[:, None] ** 2 + x[None, :] ** 2 <= micro.pillar_radius_um**2)


def attenuation(
    phases: np.ndarray, mask: np.ndarray, per_um: Mapping[int, float] | None = None
) -> np.ndarray:
    """Attenuation in 1/µm of phase codes; 0 (air) outside the pillar mask.

    ``per_um`` maps phase codes to attenuation (default :data:`ATTENUATION_PER_UM`).
    """
    values = {**ATTENUATION_PER_UM, **(per_um or {})}
    table = np.zeros(max(values) + 1, dtype=np.float32)
    for code, value in values.items():
        table[code] = value
    return np.where(mask, table[phases], np.float32(0.0))


def projection_geometry(n_angles: int, n_columns: int, axis_shift_px: float) -> dict[str, object]:
    """ASTRA parallel-beam geometry over [0, π) whose rotation axis projects to
    column (n_columns − 1)/2 + ``axis_shift_px``."""
    theta = np.linspace(0.0, np.pi, n_angles, endpoint=False)
    vectors = np.zeros((n_angles, 6))
    vectors[:, 0], vectors[:, 1] = np.sin(theta), -np.cos(theta)
    vectors[:, 4], vectors[:, 5] = np.cos(theta), np.sin(theta)
    vectors[:, 2:4] = -axis_shift_px * vectors[:, 4:6]
    geometry: dict[str, object] = astra.create_proj_geom("parallel_vec", n_columns, vectors)
    return geometry


def _project_slices(slices: np.ndarray, geometry: dict[str, object]) -> list[np.ndarray]:
    """Sinogram (angles, columns) of each (y, x) slice, with a projector of its own."""
    _, n_y, n_x = slices.shape
    volume = astra.create_vol_geom(n_y, n_x)
    projector = astra.create_projector("linear", geometry, volume)
    out = []
    try:
        for image in slices:
            sino_id, sino = astra.create_sino(np.ascontiguousarray(image, np.float32), projector)
            astra.data2d.delete(sino_id)
            out.append(sino)
    finally:
        astra.projector.delete(projector)
    return out


def project(slices: np.ndarray, geometry: dict[str, object]) -> np.ndarray:
    """Line integrals of (z, y, x) slices in voxel units, shape (angles, z, columns).

    The slices are shared among one thread per core (ASTRA's CPU projector
    runs without Python's lock); each slice's sinogram is the same as alone.
    """
    groups = np.array_split(slices, max(1, min(len(slices), os.cpu_count() or 1)))
    with ThreadPoolExecutor(len(groups)) as pool:
        parts = pool.map(_project_slices, groups, [geometry] * len(groups))
        out = [sino for part in parts for sino in part]
    return np.stack(out, axis=1).astype(np.float32)


def slabs(n: int, step: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive ranges of ``step`` covering 0 … n."""
    for start in range(0, n, step):
        yield start, min(start + step, n)


def write_txm(
    path: Path,
    micro: Microstructure,
    preset: Preset,
    rng: np.random.Generator,
    truth: zarr.Array | None = None,
    progress: Callable[[str], None] | None = None,
    attenuation_per_um: Mapping[int, float] | None = None,
) -> dict[str, float]:
    """Render, project and write one sample as Data Exchange HDF5, slab by slab.

    Writes ``exchange/data`` (angles, rows, columns; counts, float32),
    ``data_white``, ``data_dark`` and ``theta`` (degrees), plus the true phases
    into ``truth`` if given. Returns the geometry facts for the truth files.
    """
    n_z, n_y, n_x = preset.shape
    voxel = preset.voxel_size_um
    geometry = projection_geometry(preset.n_angles, n_x, preset.axis_shift_px)
    mask = pillar_mask(micro, (n_y, n_x), voxel)
    # Flat field with a smooth gain profile (a real beam is not uniform).
    gain = 1.0 + 0.05 * np.sin(np.linspace(0, 3 * np.pi, n_x))[None, :] * np.ones((n_z, 1))
    flat_mean = preset.flat_counts * gain
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("implements", data="exchange:measurement")
        exchange = f.create_group("exchange")
        exchange.create_dataset("title", data="tomography_raw_projections")
        data = exchange.create_dataset(
            "data",
            (preset.n_angles, n_z, n_x),
            dtype=np.float32,
            chunks=(1, min(n_z, preset.slab), n_x),
        )
        data.attrs.update(axes="theta:y:x", description="transmission", units="counts")
        white = rng.poisson(flat_mean, (preset.n_flats, n_z, n_x)).astype(np.float32)
        dark = rng.poisson(preset.dark_counts, (preset.n_darks, n_z, n_x)).astype(np.float32)
        exchange.create_dataset("data_white", data=white + preset.dark_counts).attrs.update(
            axes="theta_white:y:x", units="counts"
        )
        exchange.create_dataset("data_dark", data=dark).attrs.update(
            axes="theta_dark:y:x", units="counts"
        )
        exchange.create_dataset(
            "theta", data=np.linspace(0.0, 180.0, preset.n_angles, endpoint=False)
        ).attrs["units"] = "degrees"
        f.create_group("measurement/sample").create_dataset("name", data=path.stem)
        for z0, z1 in slabs(n_z, preset.slab):
            phases = render_phases(micro, z0, z1, (n_y, n_x), voxel)
            if truth is not None:
                truth[z0:z1] = phases
            mu = attenuation(phases, mask, attenuation_per_um)
            line = project(mu * np.float32(voxel), geometry)
            counts = rng.poisson(flat_mean[None, z0:z1, :] * np.exp(-line)).astype(np.float32)
            data[:, z0:z1, :] = counts + rng.poisson(preset.dark_counts, counts.shape)
            if progress is not None:
                progress(f"{path.name}: rows {z1}/{n_z}")
    return {"rotation_centre_px": (n_x - 1) / 2.0 + preset.axis_shift_px}


def section_geometry(
    radius: np.ndarray, gap: np.ndarray, height: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Section radius and in-plane gap of spheres cut at distance ``height`` from their centre.

    r = √(R² − h²) and g₂ = √((R + g)² − h²) − r (µm), for |h| < R.
    """
    section = np.sqrt(np.clip(radius**2 - height**2, 0.0, None))
    outer = np.sqrt(np.clip((radius + gap) ** 2 - height**2, 0.0, None))
    return section, outer - section


def write_sem(
    path: Path,
    rng: np.random.Generator,
    n_cycles: int,
    preset: Preset,
    parameters: Parameters,
    material: Material,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Render one SEM cross-section as a TIFF; return its true sections and the slab's radii.

    The section plane is the mid-plane of a thin slab of microstructure; each
    silicon particle it cuts shows a circle of its section radius, its SEI
    and gap as rings (in-plane widths from :func:`section_geometry`).

    Returns
    -------
    sections : DataFrame
        One row per silicon section: ``image, particle, radius_um, gap_um,
        section_radius_um, section_gap_um, centroid_y_um, centroid_x_um``.
    radius_um : (M,) ndarray
        Radii of every silicon particle of the slab, cut or not, µm.
    """
    rows, cols = preset.sem_shape
    pixel = preset.sem_pixel_size_um
    depth = 2 * (2.0 + 1.6 + preset.coat_um)  # reaches any sphere that can cut the plane
    micro = draw_microstructure(
        rng,
        (depth, (rows - 1) * pixel, (cols - 1) * pixel),
        n_cycles,
        preset,
        parameters,
        material,
        pillar=False,
    )
    # The section plane: the mid-plane of the slab, rendered as one pixel-thin slice.
    z_index = round(depth / 2.0 / pixel)
    phases = render_phases(micro, z_index, z_index + 1, (rows, cols), pixel)[0]
    intensity = np.zeros(phases.shape, dtype=np.float64)
    for code, value in SEM_INTENSITY.items():
        intensity[phases == code] = value
    image = ndimage.gaussian_filter(intensity, 1.0) + rng.normal(0.0, 0.04, phases.shape)
    image = np.clip(image * 65535, 0, 65535).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    per_cm = 1e4 / pixel
    tifffile.imwrite(
        path,
        image,
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
        metadata={"pixel_size_um": pixel, "phases": "pore 0, graphite 1, cbd 2, silicon 3, sei 4"},
    )
    plane_um = z_index * pixel
    height = micro.silicon_centre[:, 0] - plane_um
    cut = np.abs(height) < micro.radius
    section, in_plane = section_geometry(micro.radius[cut], micro.gap[cut], height[cut])
    sections = pd.DataFrame(
        {
            "image": path.name,
            "particle": np.flatnonzero(cut) + 1,
            "radius_um": micro.radius[cut],
            "gap_um": micro.gap[cut],
            "section_radius_um": section,
            "section_gap_um": in_plane,
            "centroid_y_um": micro.silicon_centre[cut, 1],
            "centroid_x_um": micro.silicon_centre[cut, 2],
        }
    )
    return sections, micro.radius


@dataclass
class SynthResult:
    """Where a synthetic campaign was written."""

    directory: Path
    campaign: Path
    samples: list[str] = field(default_factory=list)


def write_campaign(
    directory: str | os.PathLike[str],
    preset: str | Preset = "demo",
    seed: int = 0,
    *,
    parameters: Parameters = PAPER_PARAMETERS,
    material: Material | None = None,
    size: int | None = None,
    attenuation_per_um: Mapping[int, float] | None = None,
    progress: Callable[[str], None] | None = None,
    cycles: Sequence[int] = CYCLES,
) -> SynthResult:
    """Write a synthetic campaign with known ground truth into ``directory``.

    Parameters
    ----------
    directory : path
        Output folder: ``raw/<id>.h5``, ``sem/<id>_<k>.tif``,
        ``echem/cycling.csv``, ``campaign.toml`` and ``truth/``
        (``parameters.json``, ``particles.parquet``, ``sections.parquet``,
        ``phases.zarr`` with one (z, y, x) uint8 array per sample).
    preset : {"small", "demo", "large"} or Preset
    seed : int
        Everything is drawn from it: the same seed writes the same files.
    parameters, material
        The true model.
    size : int, optional
        Edge of a cubic volume in voxels (for the ``large`` preset: 512³ and up).
    attenuation_per_um : mapping, optional
        Phase code → X-ray attenuation in 1/µm, overriding
        :data:`ATTENUATION_PER_UM` (recorded in ``truth/parameters.json``).
    progress : callable, optional
        Receives progress lines.
    cycles : sequence of int
        One sample per entry, after that many cycles (default :data:`CYCLES`);
        the k-th sample is drawn from ``[seed, k]``.

    Returns
    -------
    SynthResult
    """
    material = material or Material()
    chosen = PRESETS[preset] if isinstance(preset, str) else preset
    if size is not None:
        chosen = Preset(**{**asdict(chosen), "shape": (size, size, size)})
    out = Path(directory)
    truth_dir = out / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    truth_store = open_store(truth_dir / "phases.zarr", mode="a")
    voxel = chosen.voxel_size_um
    box = tuple((n - 1) * voxel for n in chosen.shape)  # voxel centres 0 … (n − 1)·voxel
    particles, sections, samples = [], [], []
    electrode: list[np.ndarray] = []  # radii of the SEM slabs' particles
    rotation = {}
    for index, n_cycles in enumerate(cycles):
        sample = f"c{n_cycles:02d}"
        rng = np.random.default_rng([seed, index])
        micro = draw_microstructure(rng, box, n_cycles, chosen, parameters, material)  # type: ignore[arg-type]
        truth = create_volume(
            truth_store,
            sample,
            "phases",
            chosen.shape,
            np.uint8,
            voxel_size_um=voxel,
            chunks=(min(chosen.slab, chosen.shape[0]), *chosen.shape[1:]),
            attrs={"phase_codes": {name: code for code, name in PHASE_NAMES.items()}},
            stage="synth",
            parameters={"preset": asdict(chosen), "seed": seed, "cycles": n_cycles},
            overwrite=True,
        )
        set_sample_attrs(truth_store, sample, {"cycles": n_cycles})
        facts = write_txm(
            out / "raw" / f"{sample}.h5", micro, chosen, rng, truth, progress, attenuation_per_um
        )
        mark_complete(truth)
        rotation[sample] = facts["rotation_centre_px"]
        axis = np.array(micro.pillar_axis_yx)
        pillar_radius = micro.pillar_radius_um or np.inf
        reach = (
            np.linalg.norm(micro.silicon_centre[:, 1:] - axis, axis=1) + micro.radius + micro.gap
        )
        particles.append(
            pd.DataFrame(
                {
                    "sample": sample,
                    "cycles": n_cycles,
                    "particle": np.arange(1, micro.radius.size + 1),
                    "radius_um": micro.radius,
                    "gap_um": micro.gap,
                    "sei_um": micro.sei,
                    "last_cycle": micro.last_cycle,
                    "centroid_z_um": micro.silicon_centre[:, 0],
                    "centroid_y_um": micro.silicon_centre[:, 1],
                    "centroid_x_um": micro.silicon_centre[:, 2],
                    "touches_border": (reach > pillar_radius - voxel)
                    | (micro.silicon_centre[:, 0] - micro.radius - micro.gap < voxel)
                    | (micro.silicon_centre[:, 0] + micro.radius + micro.gap > box[0] - voxel),
                }
            )
        )
        for k in range(chosen.sem_images):
            frame, slab = write_sem(
                out / "sem" / f"{sample}_{k}.tif", rng, n_cycles, chosen, parameters, material
            )
            sections.append(frame.assign(sample=sample, cycles=n_cycles))
            electrode.append(slab)
        samples.append(sample)
        if progress is not None:
            progress(f"sample {sample}: {micro.radius.size} silicon particles, {n_cycles} cycles")

    # The electrode's population, whose capacity the cycling records: the SEM
    # slabs' particles (the pillars hold only the particles that fit in them,
    # fewer large ones); the pillars' where there is no SEM image.
    population = (
        np.concatenate(electrode) if electrode else pd.concat(particles)["radius_um"].to_numpy()
    )
    retention = capacity_retention(population, 20, parameters, material)
    cycling = simulate_cycling(retention, ELECTRODE_MASS_MG, seed=seed)
    (out / "echem").mkdir(exist_ok=True)
    cycling.to_csv(out / "echem" / "cycling.csv", index=False)

    write_table(
        pd.concat(particles, ignore_index=True), truth_dir / "particles.parquet", TRUTH_SCHEMA
    )
    write_table(
        pd.concat(sections, ignore_index=True), truth_dir / "sections.parquet", SECTIONS_SCHEMA
    )
    (truth_dir / "parameters.json").write_text(
        json.dumps(
            {
                "alpha0": float(parameters.alpha0),
                "kappa0": float(parameters.kappa0),
                "delta0": float(parameters.delta0),
                "zeta0": float(parameters.zeta0),
                "volumetric_expansion": material.volumetric_expansion,
                "half_cycle_hours": material.half_cycle_hours,
                "electrode_mass_mg": ELECTRODE_MASS_MG,
                "voxel_size_um": voxel,
                "rotation_centre_px": rotation,
                "attenuation_per_um": {
                    PHASE_NAMES[k]: v
                    for k, v in {**ATTENUATION_PER_UM, **(attenuation_per_um or {})}.items()
                },
                "sem_intensity": {PHASE_NAMES[k]: v for k, v in SEM_INTENSITY.items()},
                "seed": seed,
            },
            indent=2,
        )
        + "\n"
    )
    campaign = out / "campaign.toml"
    dump_campaign(_campaign_document(out.name or "synthetic", samples, chosen), campaign)
    return SynthResult(out, campaign, samples)


def _campaign_document(name: str, samples: list[str], preset: Preset) -> dict[str, object]:
    return {
        "campaign": {"name": name, "store": "store.zarr"},
        "material": {
            "volumetric_expansion": 2.8,
            "half_cycle_hours": 20.0,
            # The size prior: the radii the microstructure draws (draw_microstructure).
            "silicon_radius_um": [SMALLEST_RADIUS_UM, LARGEST_RADIUS_UM],
        },
        "sample": [
            {
                "id": sample,
                "cycles": int(sample[1:]),
                "txm": f"raw/{sample}.h5",
                "voxel_size_um": preset.voxel_size_um,
                "sem": [f"sem/{sample}_*.tif"],
                "sem_pixel_size_um": preset.sem_pixel_size_um,
            }
            for sample in samples
        ],
        "electrochemistry": {
            "cycling": "echem/cycling.csv",
            "electrode_mass_mg": ELECTRODE_MASS_MG,
        },
        # No median filter: it removes outliers (zingers, dead pixels) that these
        # Poisson-noise projections do not have, and at these 60 nm pixels even a
        # 3 × 3 median blurs the small particles (Pearson with the truth 0.93
        # against 0.96 without; silicon Dice of the best threshold 0.65 against
        # 0.88). FBP instead of 1000 SIRT
        # iterations: on a CPU these would take hours (0.07 s per iteration and
        # 160² slice), and on these projections FBP correlates better with the
        # truth than 200 SIRT iterations.
        "prep": {"median_size": SYNTHETIC_MEDIAN_SIZE},
        "recon": {"algorithm": "fbp"},
        # Smoothing costs more than the noise it removes (silicon Dice of the
        # best thresholds 0.85 -> 0.66 at 1 voxel, demo sample c00). The grey
        # classes are known here (a calibrated instrument's a priori values):
        # multi-Otsu splits pore from graphite instead where a sample has
        # little SEI, and graphite is then lost.
        "segment": {"sigma_voxels": 0.0, "thresholds": grey_class_bounds()},
    }
