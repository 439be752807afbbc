"""Synthetic campaigns checked against themselves and against references."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import astra
import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from debond.model import PAPER_PARAMETERS, Material, gaps, read_cycling, silicon_retention
from debond.storage import open_volume
from debond.synth import (
    CBD,
    PORE,
    PRESETS,
    SEI,
    SILICON,
    attenuation,
    draw_microstructure,
    pillar_mask,
    project,
    projection_geometry,
    render_phases,
    section_geometry,
    write_campaign,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    write_campaign(out, "small", seed=7)
    return out


def test_truth_gaps_follow_the_model(small: Path) -> None:
    truth = pd.read_parquet(small / "truth" / "particles.parquet")
    assert set(truth["sample"]) == {"c00", "c01", "c03", "c10"}
    for row in truth.itertuples():
        if row.cycles == 0:
            assert row.gap_um == 0 and row.sei_um == 0
            continue
        d = gaps(row.radius_um, row.cycles, PAPER_PARAMETERS, Material())
        assert 1 <= row.last_cycle <= row.cycles
        assert row.gap_um == pytest.approx(d[row.last_cycle - 1], abs=1e-12)
        assert row.sei_um == pytest.approx(row.last_cycle * PAPER_PARAMETERS.delta0)
        assert row.gap_um >= row.sei_um - 1e-12


def test_phases_around_each_particle_are_its_drawn_gap(small: Path) -> None:
    """Walking out from a particle's centre: silicon, SEI, pore (the gap), CBD coat."""
    truth = pd.read_parquet(small / "truth" / "particles.parquet")
    voxel = PRESETS["small"].voxel_size_um
    coat = PRESETS["small"].coat_um
    checked = 0
    for row in truth.itertuples():
        phases = open_volume(small / "truth" / "phases.zarr", row.sample, "phases").values
        centre = np.array([row.centroid_z_um, row.centroid_y_um, row.centroid_x_um])

        def at(
            distance: float,
            axis: int,
            sign: int,
            centre: np.ndarray = centre,
            phases: np.ndarray = phases,
        ) -> int:
            point = centre.copy()
            point[axis] += sign * distance
            index = np.round(point / voxel).astype(int)
            if np.any(index < 0) or np.any(index >= phases.shape):
                return -1
            return int(phases[tuple(index)])

        for axis in range(3):
            for sign in (-1, 1):
                assert at(0.0, axis, sign) in (SILICON, -1)
                if row.gap_um - row.sei_um > 3 * voxel:
                    mid = row.radius_um + (row.sei_um + row.gap_um) / 2
                    assert at(mid, axis, sign) in (PORE, -1)
                if row.sei_um > 3 * voxel:
                    assert at(row.radius_um + row.sei_um / 2, axis, sign) in (SEI, -1)
                found = at(row.radius_um + row.gap_um + coat / 2, axis, sign)
                assert found in (CBD, -1)
                checked += found == CBD
    assert checked > 0


def test_noise_free_projections_reconstruct_to_the_true_attenuation() -> None:
    """ASTRA's own SIRT on our noise-free projections recovers the attenuation."""
    preset = PRESETS["small"]
    rng = np.random.default_rng(3)
    box = tuple((n - 1) * preset.voxel_size_um for n in preset.shape)
    micro = draw_microstructure(rng, box, 3, preset)  # type: ignore[arg-type]
    n_y, n_x = preset.shape[1:]
    phases = render_phases(micro, 20, 22, (n_y, n_x), preset.voxel_size_um)
    mask = pillar_mask(micro, (n_y, n_x), preset.voxel_size_um)
    true = attenuation(phases, mask)[0]
    geometry = projection_geometry(preset.n_angles, n_x, preset.axis_shift_px)
    sino = project(true[None] * np.float32(preset.voxel_size_um), geometry)[:, 0, :]

    volume = astra.create_vol_geom(n_y, n_x)
    projector = astra.create_projector("linear", geometry, volume)
    sino_id = astra.data2d.create("-sino", geometry, sino)
    rec_id = astra.data2d.create("-vol", volume, 0.0)
    config = astra.astra_dict("SIRT")
    config.update(ProjectorId=projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id)
    algorithm = astra.algorithm.create(config)
    astra.algorithm.run(algorithm, 400)
    rec = astra.data2d.get(rec_id) / preset.voxel_size_um
    for item in (algorithm,):
        astra.algorithm.delete(item)
    astra.data2d.delete([sino_id, rec_id])
    astra.projector.delete(projector)

    inside = mask & (
        np.hypot(*np.meshgrid(np.arange(n_y) - n_y / 2, np.arange(n_x) - n_x / 2, indexing="ij"))
        < 0.4 * n_x
    )
    r = np.corrcoef(rec[inside], true[inside])[0, 1]
    assert r > 0.95
    assert np.median(np.abs(rec[inside] - true[inside])) < 0.1 * true[inside].max()


def test_hdf5_layout_matches_a_beamline_file(small: Path) -> None:
    reference = os.environ.get("DEBOND_REAL_DATA")
    expected = {"exchange/data", "exchange/data_white", "exchange/data_dark", "exchange/theta"}
    with h5py.File(small / "raw" / "c01.h5") as f:
        names: set[str] = set()
        f.visit(names.add)
        assert expected <= names
        data, white, dark = f["exchange/data"], f["exchange/data_white"], f["exchange/data_dark"]
        theta = f["exchange/theta"][:]
        assert data.dtype == white.dtype == dark.dtype == np.float32
        assert data.shape[1:] == white.shape[1:] == dark.shape[1:]
        assert theta.shape == (data.shape[0],) and f["exchange/theta"].attrs["units"] == "degrees"
        assert 0 <= theta.min() and theta.max() < 180
        assert data.attrs["axes"] == "theta:y:x"
        # Transmission through the pillar is below the flat field, above the dark.
        assert dark[:].mean() < data[:].mean() < white[:].mean()
        if reference:
            with h5py.File(Path(reference) / "tooth.h5") as tooth:
                for name in expected:
                    assert tooth[name].dtype == f[name].dtype, name
                    assert tooth[name].ndim == f[name].ndim, name
                    assert dict(tooth[name].attrs).get("units") == dict(f[name].attrs).get("units")


def test_sem_images_carry_pixel_size_and_sections_follow_geometry(small: Path) -> None:
    sections = pd.read_parquet(small / "truth" / "sections.parquet")
    assert len(sections) > 0
    assert np.all(sections["section_radius_um"] <= sections["radius_um"] + 1e-12)
    assert np.all(sections["section_gap_um"] >= sections["gap_um"] - 1e-12)
    with tifffile.TiffFile(small / "sem" / "c03_0.tif") as tif:
        page = tif.pages[0]
        per_cm = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        assert 1e4 * per_cm[1] / per_cm[0] == pytest.approx(PRESETS["small"].sem_pixel_size_um)
        assert page.asarray().dtype == np.uint16


def test_section_geometry_is_the_sphere_plane_cut() -> None:
    radius, gap = np.array([1.0, 1.0, 2.0]), np.array([0.2, 0.2, 0.5])
    height = np.array([0.0, 0.6, 1.5])
    section, in_plane = section_geometry(radius, gap, height)
    np.testing.assert_allclose(section, [1.0, 0.8, np.sqrt(4 - 2.25)])
    np.testing.assert_allclose(in_plane[0], 0.2)
    np.testing.assert_allclose(in_plane[1], np.sqrt(1.44 - 0.36) - 0.8)


def test_cycling_data_follow_the_recipe(small: Path) -> None:
    series = silicon_retention(read_cycling(small / "echem" / "cycling.csv"), 2.0)
    assert series["retention"].iloc[0] == 1.0
    assert series["retention"].iloc[-1] < 0.9
    parameters = json.loads((small / "truth" / "parameters.json").read_text())
    assert parameters["alpha0"] == PAPER_PARAMETERS.alpha0


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("truth/particles.parquet", "echem/cycling.csv"):
        h.update(
            pd.read_parquet(folder / name).to_csv().encode()
            if name.endswith("parquet")
            else (folder / name).read_bytes()
        )
    with h5py.File(folder / "raw" / "c03.h5") as f:
        h.update(f["exchange/data"][:].tobytes())
    return h.hexdigest()


def test_a_seed_writes_the_same_campaign(tmp_path: Path, small: Path) -> None:
    again = tmp_path / "again"
    write_campaign(again, "small", seed=7)
    assert _digest(again) == _digest(small)
    other = tmp_path / "other"
    write_campaign(other, "small", seed=8)
    assert _digest(other) != _digest(small)


def test_the_campaign_file_validates_and_finds_every_file(small: Path) -> None:
    from debond.campaign import load_campaign

    campaign = load_campaign(small / "campaign.toml")
    assert [s.cycles for s in campaign.samples] == [0, 1, 3, 10]
    for sample in campaign.samples:
        assert sample.txm is not None and sample.txm.is_file()
        assert sample.voxel_size_um == PRESETS["small"].voxel_size_um
        assert len(sample.sem) == PRESETS["small"].sem_images
    assert campaign.cycling is not None and campaign.cycling.is_file()


def test_attenuation_is_configurable_and_recorded(tmp_path: Path) -> None:
    """Raising the CBD attenuation darkens projections through a CBD-bearing sample."""
    base, brighter = tmp_path / "base", tmp_path / "cbd"
    write_campaign(base, "small", seed=5)
    write_campaign(brighter, "small", seed=5, attenuation_per_um={CBD: 0.9})
    recorded = json.loads((brighter / "truth" / "parameters.json").read_text())
    assert recorded["attenuation_per_um"]["cbd"] == 0.9
    with h5py.File(base / "raw" / "c01.h5") as a, h5py.File(brighter / "raw" / "c01.h5") as b:
        assert b["exchange/data"][:].mean() < a["exchange/data"][:].mean()
