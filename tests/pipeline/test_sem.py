"""SEM cross-sections: pixel size, phases and in-plane gaps; phantoms and the synthetic truth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from debond.model import PAPER_PARAMETERS, Material
from debond.pipeline.ingest import IngestError
from debond.pipeline.segment import CBD, GRAPHITE, PORE, SEI, SILICON
from debond.pipeline.sem import (
    SECTION_COLUMNS,
    SemThresholds,
    analyse_sem,
    circle_directions,
    flat_histogram,
    read_sem,
    section_gaps,
    sem_phases,
    sem_thresholds,
)
from debond.synth import PRESETS, SEM_INTENSITY, write_sem

PIXEL_UM = PRESETS["small"].sem_pixel_size_um  # 0.03
FULL_SCALE = 65535.0  # the synthetic images are uint16 of intensity × 65535
#: Phases in the order of the levels of SemThresholds.
LEVEL_PHASES = (SEI, GRAPHITE, PORE, SILICON, CBD)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """Four more sections, 768² (the demo preset's SEM images), after 0, 1, 3 and 10 cycles:
    the small campaign's images hold only five silicon sections between them."""
    folder = tmp_path_factory.mktemp("sem")
    frames = [
        write_sem(
            folder / f"d{cycles:02d}.tif",
            np.random.default_rng([11, cycles]),
            cycles,
            PRESETS["demo"],
            PAPER_PARAMETERS,
            Material(),
        )[0]
        for cycles in (0, 1, 3, 10)
    ]
    return folder, pd.concat(frames, ignore_index=True)


def _images(small_campaign: Path, larger: tuple[Path, pd.DataFrame]) -> list[Path]:
    return sorted((small_campaign / "sem").glob("*.tif")) + sorted(larger[0].glob("*.tif"))


def _truth(small_campaign: Path, larger: tuple[Path, pd.DataFrame]) -> pd.DataFrame:
    sections = pd.read_parquet(small_campaign / "truth" / "sections.parquet")
    return pd.concat([sections, larger[1]], ignore_index=True)


def match(found: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """True sections of one image with their nearest detected section (centroid within the
    true section radius, else not found); also the number of detected sections off the
    image edge and how many of those match no true section."""
    rows = []
    for _, true in truth.iterrows():
        row = {"true_radius_px": true.section_radius_um / PIXEL_UM}
        row["true_gap_px"] = true.section_gap_um / PIXEL_UM
        if len(found):
            distance = np.hypot(
                found.centroid_y_um - true.centroid_y_um, found.centroid_x_um - true.centroid_x_um
            ).to_numpy()
            nearest = int(np.argmin(distance))
            if distance[nearest] <= true.section_radius_um:
                hit = found.iloc[nearest]
                row["radius_px"] = hit.section_radius_um / PIXEL_UM
                row["gap_px"] = hit.section_gap_um / PIXEL_UM
                row["touches_border"] = bool(hit.touches_border)
        rows.append(row)
    inner = found[~found.touches_border]
    unmatched = 0
    for _, hit in inner.iterrows():
        distance = np.hypot(
            truth.centroid_y_um - hit.centroid_y_um, truth.centroid_x_um - hit.centroid_x_um
        )
        unmatched += int(not (distance <= truth.section_radius_um).any())
    table = pd.DataFrame(
        rows, columns=["true_radius_px", "true_gap_px", "radius_px", "gap_px", "touches_border"]
    )
    return table, len(inner), unmatched


@pytest.fixture(scope="module")
def matched(
    small_campaign: Path, larger: tuple[Path, pd.DataFrame]
) -> tuple[pd.DataFrame, int, int]:
    """analyse_sem on every synthetic image, matched to the true sections."""
    truth = _truth(small_campaign, larger)
    tables, detected, unmatched = [], 0, 0
    for path in _images(small_campaign, larger):
        found = analyse_sem(path)
        assert list(found.columns) == ["image", *SECTION_COLUMNS]
        assert (found.image == path.name).all()
        table, n, bad = match(found, truth[truth.image == path.name])
        tables.append(table.assign(image=path.name))
        detected += n
        unmatched += bad
    return pd.concat(tables, ignore_index=True), detected, unmatched


# ------------------------------------------------------------------ phantoms


def phantom(
    radius: float,
    sei: float,
    gap: float,
    *,
    shape: tuple[int, int] = (128, 128),
    centre: tuple[float, float] = (63.3, 64.6),
    coat: float = 16.0,
    noise: float = 0.01,
) -> np.ndarray:
    """A silicon disc of ``radius`` pixels, an SEI ring of ``sei``, epoxy up to ``gap`` from
    the silicon, a CBD ring of ``coat``, a graphite disc in a corner, in epoxy; SEM
    intensities, 4 × 4 supersampled edges, a Gaussian blur of 1 pixel and noise."""
    sub = 4
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    y = (np.arange(shape[0])[:, None] + offsets).ravel()
    x = (np.arange(shape[1])[:, None] + offsets).ravel()
    r = np.hypot(y[:, None] - centre[0], x[None, :] - centre[1])
    codes = np.full(r.shape, PORE)
    codes[np.hypot(y[:, None] - 22.0, x[None, :] - 22.0) < 16.0] = GRAPHITE
    codes[(r >= radius + gap) & (r < radius + gap + coat)] = CBD
    codes[(r >= radius) & (r < radius + min(sei, gap))] = SEI
    codes[r < radius] = SILICON
    table = np.zeros(5)
    for code, value in SEM_INTENSITY.items():
        table[code] = value
    image = table[codes].reshape(shape[0], sub, shape[1], sub).mean(axis=(1, 3))
    rng = np.random.default_rng(0)
    return ndimage.gaussian_filter(image, 1.0) + rng.normal(0.0, noise, shape)


@pytest.mark.parametrize(
    ("radius", "sei", "gap"),
    [
        (14.3, 4.0, 9.0),  # SEI, then epoxy, then CBD
        (20.0, 0.0, 0.0),  # CBD on the silicon (before cycling)
        (9.2, 12.0, 14.0),  # thick SEI: its own grey level
        (12.7, 0.0, 5.0),  # epoxy only
    ],
)
def test_phantom_radius_and_gap(radius: float, sei: float, gap: float) -> None:
    phases, used = sem_phases(phantom(radius, sei, gap))
    for phase, level in zip(LEVEL_PHASES, used.levels, strict=True):
        if math.isfinite(level) and phase in (PORE, SILICON, CBD, GRAPHITE):
            assert level == pytest.approx(SEM_INTENSITY[phase], abs=0.02)
    assert np.count_nonzero(phases == GRAPHITE) > 0.9 * math.pi * 16.0**2
    if sei >= 3:
        ring = math.pi * ((radius + sei) ** 2 - radius**2)
        assert np.count_nonzero(phases == SEI) == pytest.approx(ring, rel=0.25)
    table = section_gaps(phases, pixel_size_um=PIXEL_UM, max_ray_length_um=1.0)
    assert len(table) == 1
    row = table.iloc[0]
    assert row.section_radius_um / PIXEL_UM == pytest.approx(radius, abs=0.5)
    assert row.section_gap_um / PIXEL_UM == pytest.approx(gap, abs=0.5)
    assert row.n_rays == 64
    assert (row.centroid_y_um / PIXEL_UM, row.centroid_x_um / PIXEL_UM) == pytest.approx(
        (63.3, 64.6), abs=0.2
    )
    assert not row.touches_border


def test_phantom_sei_against_the_cbd_is_within_a_pixel() -> None:
    """Where SEI touches the CBD (no epoxy between) the CBD edge is placed at the
    epoxy–CBD half-height, inside the blurred SEI–CBD edge: the gap comes out up to
    about one pixel wide (+0.8 here; the synthetic campaigns always keep epoxy there)."""
    phases, _ = sem_phases(phantom(10.5, 6.0, 6.0))
    row = section_gaps(phases, pixel_size_um=PIXEL_UM).iloc[0]
    assert row.section_radius_um / PIXEL_UM == pytest.approx(10.5, abs=0.5)
    assert row.section_gap_um / PIXEL_UM == pytest.approx(6.0, abs=1.0)


def test_given_thresholds_measure_a_particle_too_small_for_its_own_level() -> None:
    """A 5.5-pixel section has too few flat pixels for a silicon level of its own; the
    class boundaries of a larger field (here the true midpoints) measure it."""
    image = phantom(5.5, 0.0, 3.0)
    phases, used = sem_phases(image)
    assert math.isnan(used.levels[3]) and not (phases == SILICON).any()
    s = SEM_INTENSITY
    given = (
        (s[SEI] + s[GRAPHITE]) / 2,
        (s[GRAPHITE] + s[PORE]) / 2,
        (s[PORE] + s[SILICON]) / 2,
        (s[SILICON] + s[CBD]) / 2,
    )
    phases, used = sem_phases(image, thresholds=given)
    assert used.classes == pytest.approx(given)
    assert used.levels[3] == pytest.approx(s[SILICON], abs=0.02)
    row = section_gaps(phases, pixel_size_um=PIXEL_UM).iloc[0]
    assert row.section_radius_um / PIXEL_UM == pytest.approx(5.5, abs=0.5)
    assert row.section_gap_um / PIXEL_UM == pytest.approx(3.0, abs=0.5)


# ---------------------------------------------------------- synthetic truth


def test_pixel_size_from_the_tiff_tags(small_campaign: Path) -> None:
    paths = sorted((small_campaign / "sem").glob("*.tif"))
    assert len(paths) == 4
    for path in paths:
        image, pixel = read_sem(path)
        assert pixel == pytest.approx(PIXEL_UM, rel=1e-9)
        assert image.dtype == np.float32 and image.shape == PRESETS["small"].sem_shape
        assert read_sem(path, 0.021)[1] == 0.021  # the argument wins


def test_levels_of_every_synthetic_image(
    small_campaign: Path, larger: tuple[Path, pd.DataFrame]
) -> None:
    """The histogram's modes land on the right phases in every image, including those
    without SEI (before cycling), graphite or silicon (small fields), where five-class
    multi-Otsu shifts the classes by a phase."""
    truth = _truth(small_campaign, larger)
    for path in _images(small_campaign, larger):
        image, _ = read_sem(path)
        _, used = sem_phases(image)
        levels = [v / FULL_SCALE for v in used.levels]
        for phase, level in zip(LEVEL_PHASES[2:], levels[2:], strict=True):
            if math.isfinite(level):
                assert level == pytest.approx(SEM_INTENSITY[phase], abs=0.02), path
        if math.isnan(levels[0]):  # no dark level (no SEI, no graphite)
            assert math.isnan(levels[1]), path
        elif levels[0] == levels[1]:  # one dark level: SEI's or graphite's
            assert any(abs(levels[0] - SEM_INTENSITY[p]) < 0.02 for p in (SEI, GRAPHITE)), path
        else:
            assert levels[:2] == pytest.approx(
                [SEM_INTENSITY[SEI], SEM_INTENSITY[GRAPHITE]], abs=0.02
            )
        for phase in (PORE, CBD):
            assert math.isfinite(used.levels[LEVEL_PHASES.index(phase)]), path
        here = truth[truth.image == path.name]
        if (here.section_radius_um > 10 * PIXEL_UM).any():
            assert math.isfinite(used.levels[3]), path
        t0, t1, t2, t3 = (t / FULL_SCALE for t in used.classes)
        assert t0 <= t1 < SEM_INTENSITY[PORE] < t2 <= t3 < SEM_INTENSITY[CBD]


def test_sections_against_the_synthetic_truth(
    matched: tuple[pd.DataFrame, int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured on the 8 images (the seed-0 small campaign and 4 of 768²): 68 of 68 true
    sections above 3 pixels found; 60 of them off the image edge with a median relative
    radius error of 0.2 % and a gap MAE of 0.07 pixel (bias +0.03); 1 of 61 detected
    sections off the edge matches no true section."""
    table, detected, unmatched = matched
    large = table[table.true_radius_px > 3.0]
    found = large.radius_px.notna()
    inner = large[found & ~large.touches_border.fillna(False).astype(bool)]
    relative = (inner.radius_px - inner.true_radius_px) / inner.true_radius_px
    gap_error = inner.gap_px - inner.true_gap_px
    with capsys.disabled():
        print(
            f"\nSEM synthetic: {found.sum()}/{len(large)} true sections > 3 px found; "
            f"{len(inner)} off the edge: median |relative radius error| "
            f"{relative.abs().median():.4f}, gap MAE {gap_error.abs().mean():.3f} px "
            f"(bias {gap_error.mean():+.3f}); {unmatched}/{detected} detected sections "
            "off the edge match no true section"
        )
    assert len(large) >= 60
    assert found.mean() >= 0.95
    assert relative.abs().median() <= 0.02
    assert gap_error.notna().all()
    assert gap_error.abs().mean() <= 0.5
    assert unmatched <= 0.05 * detected


def test_pooled_thresholds_give_the_same_sections(small_campaign: Path) -> None:
    """One histogram over a campaign's images (a common range) gives all five levels, and
    thresholds from it measure each image as its own do."""
    paths = sorted((small_campaign / "sem").glob("*.tif"))
    denoised = [ndimage.gaussian_filter(read_sem(p)[0], 1.0, mode="nearest") for p in paths]
    value_range = (0.0, FULL_SCALE)
    counts = sum(flat_histogram(d, 256, value_range)[0] for d in denoised)
    edges = flat_histogram(denoised[0], 256, value_range)[1]
    pooled = sem_thresholds(counts, edges)
    expected = [SEM_INTENSITY[p] for p in LEVEL_PHASES]
    assert [v / FULL_SCALE for v in pooled.levels] == pytest.approx(expected, abs=0.02)
    for path in paths:
        own = analyse_sem(path)
        shared = analyse_sem(path, thresholds=pooled)
        assert len(shared) == len(own)
        assert shared.section_radius_um.to_numpy() == pytest.approx(
            own.section_radius_um.to_numpy(), abs=0.5 * PIXEL_UM
        )


# --------------------------------------------------------------- thresholds


def mixture(levels: dict[int, float], sizes: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(levels[p], 0.01, sizes[p]) for p in sizes])
    counts, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    return counts, edges


SIZES = {SEI: 800, GRAPHITE: 3000, PORE: 8000, SILICON: 900, CBD: 700}


def test_thresholds_with_five_levels() -> None:
    counts, edges = mixture(SEM_INTENSITY, SIZES)
    used = sem_thresholds(counts, edges)
    assert used.levels == pytest.approx([SEM_INTENSITY[p] for p in LEVEL_PHASES], abs=0.005)
    s = SEM_INTENSITY
    assert used.classes == pytest.approx(
        [
            (s[SEI] + s[GRAPHITE]) / 2,
            (s[GRAPHITE] + s[PORE]) / 2,
            (s[PORE] + s[SILICON]) / 2,
            (s[SILICON] + s[CBD]) / 2,
        ],
        abs=0.005,
    )
    assert used.cbd == pytest.approx((s[PORE] + s[CBD]) / 2, abs=0.005)


@pytest.mark.parametrize("missing", [SEI, GRAPHITE, SILICON, (SEI, GRAPHITE), (SEI, SILICON)])
def test_thresholds_with_missing_levels(missing: int | tuple[int, ...]) -> None:
    gone = missing if isinstance(missing, tuple) else (missing,)
    counts, edges = mixture(SEM_INTENSITY, {p: n for p, n in SIZES.items() if p not in gone})
    used = sem_thresholds(counts, edges)
    t0, t1, t2, t3 = used.classes
    s = SEM_INTENSITY
    assert used.levels[2] == pytest.approx(s[PORE], abs=0.005)
    assert used.levels[4] == pytest.approx(s[CBD], abs=0.005)
    if SILICON in gone:
        assert math.isnan(used.levels[3]) and t2 == t3
    else:
        assert s[PORE] < t2 < s[SILICON] < t3 < s[CBD]
    dark = [p for p in (SEI, GRAPHITE) if p not in gone]
    if len(dark) == 1:  # one dark level stands for SEI and graphite
        assert t0 == t1 and used.levels[0] == used.levels[1]
        assert used.levels[0] == pytest.approx(s[dark[0]], abs=0.005)
        assert s[dark[0]] < t1 < s[PORE]
    if not dark:
        assert t0 == t1 == edges[0] and math.isnan(used.levels[0])


def test_thresholds_reject_bad_input() -> None:
    counts, edges = mixture(SEM_INTENSITY, {PORE: 5000})
    with pytest.raises(ValueError, match="1 clear grey level.*thresholds"):
        sem_thresholds(counts, edges)
    with pytest.raises(ValueError, match="histogram"):
        sem_thresholds(counts, edges[:-1])
    for bad in [(0.1, 0.2, 0.3), (0.1, 0.3, 0.3, 0.5), (0.3, 0.2, 0.5, 0.7), (0, 0, 1, math.nan)]:
        with pytest.raises(ValueError, match="four finite grey values"):
            sem_thresholds(counts, edges, bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- gaps only


def rings(radius: float, gap: float, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    y, x = np.indices(shape)
    r = np.hypot(y - 31.7, x - 32.2)
    phases = np.full(shape, PORE, dtype=np.uint8)
    phases[(r >= radius + gap) & (r < radius + gap + 4)] = CBD
    phases[r < radius] = SILICON
    return phases


@pytest.mark.parametrize(("radius", "gap"), [(6.0, 0.0), (10.4, 3.0), (15.0, 7.5)])
def test_section_gaps_of_rings(radius: float, gap: float) -> None:
    table = section_gaps(rings(radius, gap), pixel_size_um=0.5, n_rays=90, max_ray_length_um=5.0)
    assert table.dtypes.to_dict() == {
        "particle": np.int64,
        "centroid_y_um": np.float64,
        "centroid_x_um": np.float64,
        "section_radius_um": np.float64,
        "section_gap_um": np.float64,
        "gap_std_um": np.float64,
        "n_rays": np.int64,
        "touches_border": np.bool_,
    }
    row = table.iloc[0]
    assert row.particle == 1 and row.n_rays == 90
    assert row.section_radius_um == pytest.approx(radius * 0.5, abs=0.5 * 0.5)
    assert row.section_gap_um == pytest.approx(gap * 0.5, abs=0.5 * 0.5)
    assert (row.centroid_y_um, row.centroid_x_um) == pytest.approx(
        (31.7 * 0.5, 32.2 * 0.5), abs=0.5
    )


def test_section_gaps_border_small_sections_and_blocked_rays() -> None:
    phases = rings(10.0, 3.0)
    phases[0:5, 0:5] = SILICON  # at the corner: touches the border
    phases[60:63, 2:5] = SILICON  # nine pixels: below min_area_px
    table = section_gaps(phases, pixel_size_um=1.0, min_area_px=12)
    assert table.touches_border.tolist() == [True, False]
    assert table.iloc[0].section_radius_um == pytest.approx(math.sqrt(25 / math.pi))
    assert len(section_gaps(phases, pixel_size_um=1.0, min_area_px=9)) == 3
    full = table.iloc[1].n_rays
    phases[:, 33:] = np.where(phases[:, 33:] == PORE, GRAPHITE, phases[:, 33:])  # half blocked
    blocked = section_gaps(phases, pixel_size_um=1.0).iloc[1]
    assert 0.3 * full < blocked.n_rays < 0.7 * full
    assert blocked.section_gap_um == pytest.approx(3.0, abs=0.5)


def test_section_gaps_without_silicon_or_cbd() -> None:
    empty = section_gaps(np.zeros((16, 16), np.uint8), pixel_size_um=0.1)
    assert list(empty.columns) == list(SECTION_COLUMNS) and empty.empty
    assert empty.n_rays.dtype == np.int64 and empty.touches_border.dtype == np.bool_
    no_cbd = rings(5.0, 3.0)
    no_cbd[no_cbd == CBD] = PORE
    row = section_gaps(no_cbd, pixel_size_um=0.1).iloc[0]
    assert row.n_rays == 0 and math.isnan(row.section_gap_um) and math.isnan(row.gap_std_um)


def test_circle_directions() -> None:
    d = circle_directions(8)
    assert d.shape == (8, 3) and (d[:, 0] == 0).all()
    assert np.linalg.norm(d, axis=1) == pytest.approx(np.ones(8))
    assert d[:, 1:].sum(axis=0) == pytest.approx([0.0, 0.0], abs=1e-12)
    angles = np.sort(np.arctan2(d[:, 1], d[:, 2]) % (2 * math.pi))
    assert np.diff(angles) == pytest.approx(np.full(7, math.pi / 4))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_rays"):
            circle_directions(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bad input


def write(path: Path, data: np.ndarray, **kwargs: object) -> Path:
    tifffile.imwrite(path, data, **kwargs)  # type: ignore[arg-type]
    return path


def test_read_sem_resolution_units(tmp_path: Path) -> None:
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    inch = write(
        tmp_path / "inch.tif", image, resolution=(25400 / 0.05, 25400 / 0.05), resolutionunit="INCH"
    )
    assert read_sem(inch)[1] == pytest.approx(0.05)
    cm = write(
        tmp_path / "cm.tif",
        image,
        resolution=(1e4 / 0.021, 1e4 / 0.021),
        resolutionunit="CENTIMETER",
    )
    data, pixel = read_sem(cm)
    assert pixel == pytest.approx(0.021) and (data == image).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no pixel size.*sem_pixel_size_um"),  # tifffile's default: unit none
        ({"resolution": (72, 72), "resolutionunit": "INCH"}, "no pixel size.*sem_pixel_size_um"),
        ({"resolution": (1e5, 2e5), "resolutionunit": "CENTIMETER"}, "non-square pixels"),
    ],
)
def test_read_sem_without_a_usable_pixel_size(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    path = write(tmp_path / "tagless.tif", np.zeros((8, 8), np.uint16), **kwargs)
    with pytest.raises(IngestError, match=message) as caught:
        read_sem(path)
    assert "tagless.tif" in str(caught.value) and caught.value.path == str(path)
    assert read_sem(path, pixel_size_um=0.02)[1] == 0.02


def test_read_sem_bad_files(tmp_path: Path) -> None:
    (tmp_path / "text.tif").write_text("not an image")
    cases = {
        tmp_path / "missing.tif": "no such file",
        tmp_path: "is a folder",
        tmp_path / "text.tif": "cannot be read as TIFF",
        write(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8)): r"2-D grey image",
        write(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32)): "NaN or infinite",
    }
    for path, message in cases.items():
        with pytest.raises(IngestError, match=message) as caught:
            read_sem(path, pixel_size_um=0.03)
        assert str(path) in str(caught.value)
    stack = tmp_path / "stack.tif"
    with tifffile.TiffWriter(stack) as tif:
        tif.write(np.zeros((8, 8), np.uint16))
        tif.write(np.zeros((8, 8), np.uint16))
    with pytest.raises(IngestError, match="holds 2 images.*one 2-D grey image"):
        read_sem(stack, pixel_size_um=0.03)
    for bad in (0, -0.1, math.nan, "x"):
        with pytest.raises(ValueError, match="pixel_size_um"):
            read_sem(stack, pixel_size_um=bad)  # type: ignore[arg-type]


def test_sem_phases_bad_input() -> None:
    image = phantom(14.3, 4.0, 9.0)
    cases = [
        ({"image": image[None]}, "2-D grey image"),
        ({"image": np.zeros((8, 8), bool)}, "real grey values"),
        ({"image": np.full((8, 8), np.inf)}, "finite"),
        ({"image": np.full((8, 8), 3.0)}, "single grey value"),
        ({"image": image, "sigma_px": -1}, "sigma_px"),
        ({"image": image, "silicon_min_radius_px": math.nan}, "silicon_min_radius_px"),
        ({"image": image, "graphite_min_radius_px": -2}, "graphite_min_radius_px"),
        ({"image": image, "bins": 8}, "bins"),
        ({"image": image, "thresholds": (0.5, 0.4, 0.6, 0.7)}, "four finite grey values"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            sem_phases(**kwargs)  # type: ignore[arg-type]


def test_section_gaps_bad_input() -> None:
    phases = rings(5.0, 2.0)
    with pytest.raises(ValueError, match="2-D"):
        section_gaps(phases[None], pixel_size_um=0.1)
    with pytest.raises(ValueError, match="integer phase codes"):
        section_gaps(phases.astype(float), pixel_size_um=0.1)
    for kwargs, name in [
        ({"pixel_size_um": 0.0}, "pixel_size_um"),
        ({"pixel_size_um": 0.1, "max_ray_length_um": -1.0}, "max_ray_length_um"),
        ({"pixel_size_um": 0.1, "n_rays": 0}, "n_rays"),
        ({"pixel_size_um": 0.1, "min_area_px": -1}, "min_area_px"),
        ({"pixel_size_um": 0.1, "min_area_px": 2.5}, "min_area_px"),
    ]:
        with pytest.raises(ValueError, match=name):
            section_gaps(phases, **kwargs)  # type: ignore[arg-type]


def test_analyse_sem_errors_name_the_file(tmp_path: Path) -> None:
    flat = write(tmp_path / "flat.tif", np.full((16, 16), 7, np.uint16))
    with pytest.raises(ValueError, match=r"flat\.tif: image holds a single grey value"):
        analyse_sem(flat, pixel_size_um=0.03)
    with pytest.raises(IngestError, match=r"flat\.tif: no pixel size"):
        analyse_sem(flat)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_ray'"):
        analyse_sem(flat, n_ray=8)
    image = (phantom(14.3, 4.0, 9.0) * 1000).astype(np.float32)
    path = write(tmp_path / "ok.tif", image)
    table = analyse_sem(path, pixel_size_um=0.03, n_rays=16, sigma_px=0.5)
    assert table.image.tolist() == ["ok.tif"] and table.n_rays.tolist() == [16]
    assert isinstance(sem_phases(image)[1], SemThresholds)
