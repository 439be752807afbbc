"""`debond report`: a self-contained page whose figures a real browser loads.

The campaign tests run the small synthetic campaign once; the figure
functions of the image-quality section are checked on small arrays.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from debond.campaign import load_campaign
from debond.cli import app
from debond.cluster import cluster
from debond.report import (
    QUALITY_FLAGS,
    Orthoslices,
    flag_counts,
    flag_warning,
    grey_histogram,
    plot_grey_histogram,
    plot_orthoslices,
    plot_particle_radii,
    read_orthoslices,
)
from debond.runner import run_campaign
from debond.storage import open_store, open_volume, write_volume
from debond.synth import write_campaign

FIT_FIGURES = ("slices", "gap_vs_radius", "sensitivity", "bootstrap", "sizes")
QUALITY_FIGURES = ("histogram", "sizes", "slices")


@pytest.fixture(scope="module")
def campaign_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic campaign, run (all 3D stages) but not fitted."""
    folder = tmp_path_factory.mktemp("report") / "small"
    write_campaign(folder, "small", seed=1)
    with cluster(workers=2) as client:
        run_campaign(load_campaign(folder / "campaign.toml"), client, echo=lambda line: None)
    return folder / "campaign.toml"


def _sample_ids(campaign_file: Path) -> list[str]:
    return [s.id for s in load_campaign(campaign_file, check_files=False).samples]


def _quality_figures(campaign_file: Path) -> list[str]:
    return [f"quality-{s}-{kind}" for s in _sample_ids(campaign_file) for kind in QUALITY_FIGURES]


def _figures_loaded(page: Path) -> str | None:
    """``data-figures-loaded`` of the page rendered by headless Chromium (None: no Chromium)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'data-figures-loaded="([^"]*)"', dom)
    return found.group(1) if found else ""


def _assert_embedded(page: str, folder: Path, names: list[str]) -> None:
    assert page.count('src="data:image/png;base64,') == len(names)
    assert page.count("<figure id=") == len(names)
    for name in names:
        assert f'<figure id="{name}">' in page
    assert not re.search(r'src="(?!data:)', page), "the page must not depend on other files"
    for sample, kind in (n.split("-")[1:] for n in names if n.startswith("quality-")):
        assert (folder / "figures" / "quality" / sample / f"{kind}.png").is_file()


def test_the_report_needs_a_run_first(tmp_path: Path) -> None:
    """Nothing run: no store, or a store without phases; a clear error, no page."""
    (tmp_path / "campaign.toml").write_text(
        '[campaign]\nname = "idle"\nstore = "store.zarr"\n'
        '[[sample]]\nid = "c00"\ncycles = 0\ntxm = "raw/c00.h5"\nvoxel_size_um = 0.06\n'
    )
    for expected in ("store.zarr does not exist; run `debond run", "no sample of"):
        result = CliRunner().invoke(app, ["report", str(tmp_path / "campaign.toml")])
        assert result.exit_code == 2
        assert expected in result.output
        assert "run `debond run" in result.output
        assert not (tmp_path / "report.html").exists()
        open_store(tmp_path / "store.zarr", mode="a")


@pytest.mark.distributed
def test_before_a_fit_the_report_shows_the_images(campaign_file: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(campaign_file)])
    assert result.exit_code == 0, result.output
    assert f"no fit yet: an image-only report (run `debond fit {campaign_file}`)" in result.output
    folder = campaign_file.parent
    page = (folder / "report.html").read_text()
    assert "No fit exists yet" in page
    assert page.index("No fit exists yet") < page.index("<h2>Samples</h2>")
    assert f"<code>debond fit {campaign_file}</code>" in page
    assert "Fitted parameters" not in page
    assert "<h2>Samples</h2>" in page and "Image quality" in page
    names = _quality_figures(campaign_file)
    _assert_embedded(page, folder, names)
    for flag in ("measured", "used by the fit", *QUALITY_FLAGS.values()):
        assert f"<th>{flag}</th>" in page
    # The synthetic campaign records the grey-class thresholds and a size prior.
    assert "class boundaries" in page or "dashed: the thresholds" in page
    assert "shaded: the size prior" in page
    assert "Planes through the largest particle used by the fit (R = " in page
    loaded = _figures_loaded(folder / "report.html")
    if loaded is None:
        pytest.skip("no Chromium to render the page (Debian package chromium; .ci/run installs it)")
    assert loaded == f"{len(names)}/{len(names)}"


@pytest.mark.distributed
def test_a_sample_without_a_reconstruction_says_so(campaign_file: Path, tmp_path: Path) -> None:
    """A sample with phases but no recon (its own segmentation): a note, no histogram."""
    folder = tmp_path / "copy"
    shutil.copytree(campaign_file.parent, folder)
    first = _sample_ids(campaign_file)[0]
    campaign = load_campaign(folder / "campaign.toml", check_files=False)
    store = zarr.open_group(str(campaign.store_location), mode="r+")
    del store[f"samples/{first}/recon"]
    result = CliRunner().invoke(app, ["report", str(folder / "campaign.toml")])
    assert result.exit_code == 0, result.output
    page = (folder / "report.html").read_text()
    assert "no reconstruction is stored for this sample" in page
    assert f'<figure id="quality-{first}-histogram">' not in page
    assert f'<figure id="quality-{first}-slices">' in page


@pytest.mark.distributed
def test_a_real_segmentation_is_reported_without_a_reconstruction(tmp_path: Path) -> None:
    """electrode.tiff (DEBOND_REAL_DATA, an NMC cathode), 96³ of it, brought as phases."""
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "electrode.tiff").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no electrode.tiff")
    volume = np.asarray(tifffile.imread(Path(folder) / "electrode.tiff"))[:96, :96, :96]
    tifffile.imwrite(tmp_path / "electrode.tif", volume)
    (tmp_path / "campaign.toml").write_text(
        '[campaign]\nname = "electrode"\nstore = "store.zarr"\n'
        "[material]\nsilicon_radius_um = [1.0, 8.0]\n"
        '[[sample]]\nid = "nmc"\ncycles = 0\nphases = "electrode.tif"\n'
        "phase_codes = {pore = 0, silicon = 85, cbd = 170}\nvoxel_size_um = 0.4\n"
    )
    with cluster(workers=2) as client:
        run_campaign(load_campaign(tmp_path / "campaign.toml"), client, echo=lambda line: None)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "campaign.toml")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "no reconstruction is stored for this sample (it brought its own segmentation" in page
    names = ["quality-nmc-sizes", "quality-nmc-slices"]
    _assert_embedded(page, tmp_path, names)
    rows = pd.read_parquet(tmp_path / "tables" / "campaign" / "samples" / "nmc.parquet")
    counts = flag_counts(rows)
    assert counts["particles"] == len(rows) > 0
    cells = [counts[n] for n in ("particles", "measured", "usable", *QUALITY_FLAGS)]
    assert "".join(f"<td>{c}</td>" for c in cells) in page
    assert "shaded: the size prior 1–8 µm" in page


@pytest.mark.distributed
def test_the_report_embeds_every_figure_and_the_parameter_table(campaign_file: Path) -> None:
    fitted = CliRunner().invoke(app, ["fit", str(campaign_file), "--bootstrap", "30"])
    assert fitted.exit_code == 0, fitted.output
    result = CliRunner().invoke(app, ["report", str(campaign_file)])
    assert result.exit_code == 0, result.output
    folder = campaign_file.parent
    page = (folder / "report.html").read_text()
    names = [*FIT_FIGURES, *_quality_figures(campaign_file)]
    _assert_embedded(page, folder, names)
    for name in FIT_FIGURES:
        assert (folder / "figures" / f"{name}.png").is_file()
        assert (folder / "figures" / f"{name}.pdf").is_file()
    assert "No fit exists yet" not in page
    for label in ("α0", "κ0", "δ0", "ζ0", "E/η", "1/h", "v_SEI", "nm/h", "true (synthetic)"):
        assert label in page
    recorded = json.loads((folder / "tables" / campaign_file.stem / "fit.json").read_text())
    population = recorded["capacity_population"]
    assert f"The capacity term sums over {population['source']}: " in page
    # the image-derived caveat beside the parameters, not in the warning banner
    assert recorded["caveats"] and html.escape(recorded["caveats"][0]) in page
    # the surface-placement uncertainties the intervals hold, per kind, in µm
    assert set(recorded["surface"]) == {"silicon", "cbd"}
    assert "Intervals hold the surface placement: silicon ±" in page
    assert "should not be read as a result" not in page or recorded["warnings"]
    loaded = _figures_loaded(folder / "report.html")
    if loaded is None:
        pytest.skip("no Chromium to render the page (Debian package chromium; .ci/run installs it)")
    assert loaded == f"{len(names)}/{len(names)}"


# ------------------------------------------------------------ the figure functions


@pytest.mark.parametrize("chunks", [(2, 5, 7), (5, 5, 5), (1, 9, 9)])
def test_the_grey_histogram_counts_the_masked_voxels_as_numpy_does(
    chunks: tuple[int, int, int],
) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(0.3, 0.1, (6, 9, 9)).astype(np.float32)
    mask = rng.random(volume.shape) < 0.6
    counts, edges = grey_histogram(
        da.from_array(volume, chunks=chunks), da.from_array(mask, chunks=(3, 3, 3)), bins=32
    )
    inside = volume[mask]
    expected, expected_edges = np.histogram(inside, 32, range=(inside.min(), inside.max()))
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_allclose(edges, expected_edges, rtol=1e-6)
    whole, _ = grey_histogram(da.from_array(volume, chunks=chunks), bins=32)
    assert whole.sum() == volume.size


def test_the_grey_histogram_of_an_empty_mask_is_empty() -> None:
    volume = da.ones((4, 4, 4), chunks=2)
    counts, edges = grey_histogram(volume, da.zeros((4, 4, 4), dtype=bool, chunks=2), bins=8)
    assert counts.sum() == 0 and edges.size == 9
    with pytest.raises(ValueError, match="mask shape"):
        grey_histogram(volume, da.zeros((4, 4, 3), dtype=bool))


def _legend(figure: object) -> list[str]:
    return [t.get_text() for t in figure.legends[0].get_texts()]  # type: ignore[attr-defined]


def test_the_histogram_draws_the_keys_that_are_present() -> None:
    counts, edges = np.array([0, 10, 400, 30, 0, 5]), np.linspace(0.0, 0.6, 7)
    thresholds = {"classes": [0.1, 0.2, 0.3, 0.4], "cbd": 0.35, "graphite": 0.15}
    levels = {"silicon": 0.32, "cbd": 0.5, "odd": "n/a"}
    labels = _legend(plot_grey_histogram(counts, edges, thresholds, levels, "c03"))
    assert "class boundaries: 0.1, 0.2, 0.3, 0.4" in labels
    assert "cbd threshold: 0.35" in labels and "graphite threshold: 0.15" in labels
    assert "silicon level: 0.32" in labels and "cbd level: 0.5" in labels
    assert not any("odd" in label for label in labels)
    # Today's segmentation: thresholds only; a new one may add levels; or neither.
    assert _legend(plot_grey_histogram(counts, edges, {"cbd": 0.35})) == ["cbd threshold: 0.35"]
    assert not plot_grey_histogram(np.zeros(6), edges).legends
    # A line outside the grey levels counted (an air threshold below the mask's) stays in view.
    low, high = plot_grey_histogram(counts, edges, {"classes": [-0.05, 0.2]}).axes[0].get_xlim()
    assert low < -0.05 and high > 0.6


def _rows(**flags: list[bool]) -> pd.DataFrame:
    n = len(next(iter(flags.values())))
    rows = pd.DataFrame({"radius_um": np.linspace(0.2, 1.5, n), "n_rays": 40, "gap_mean_um": 0.1})
    for name, values in flags.items():
        rows[name] = values
    not_measured = rows.filter(["oversized", "spans_box", "few_rays"]).any(axis=1)
    rows.loc[not_measured, "gap_mean_um"] = np.nan
    return rows


def test_flag_counts_and_the_warning_line() -> None:
    fine = _rows(touches_border=[True, False, False, False])
    counts = flag_counts(fine)
    assert counts == {
        "particles": 4,
        "measured": 4,
        "usable": 3,
        "flagged": 1,
        "touches_border": 1,
        "oversized": 0,
        "spans_box": 0,
        "few_rays": 0,
    }
    assert flag_warning(counts) == ""
    oversized = flag_counts(_rows(oversized=[True, True, True, False]))
    assert oversized["measured"] == 1 and oversized["oversized"] == 3
    assert flag_warning(oversized).startswith(
        "Most particles are flagged (3 of 4), commonest flag: oversized (3); "
    )
    none = flag_counts(_rows(few_rays=[True, True], touches_border=[True, True]))
    assert flag_warning(none).startswith(
        "No particle is measured (2 found), commonest flag: few rays (2); "
    )
    empty = flag_counts(_rows(touches_border=[]))
    assert "No silicon particle" in flag_warning(empty)


def test_the_size_figure_draws_the_prior_and_an_empty_sample() -> None:
    rows = _rows(touches_border=[False, True, False])
    labels = _legend(plot_particle_radii(rows, (0.1, 2.0), "c03"))
    assert labels == ["size prior 0.1–2 µm", "all 3D particles (3)", "used by the fit (2)"]
    figure = plot_particle_radii(rows.iloc[:0], None)
    assert "no 3D particle" in [t.get_text() for t in figure.axes[0].texts]
    assert figure.axes[0].get_xlabel() == "equivalent radius R (µm)"


def test_the_planes_figure_is_in_micrometres_with_or_without_grey() -> None:
    coords = {"z": np.arange(4) * 0.5, "y": np.arange(6) * 0.5, "x": np.arange(8) * 0.5}
    phases = {"z": np.zeros((6, 8), np.uint8), "y": np.ones((4, 8), np.uint8)}
    phases["x"] = np.full((4, 6), 3, np.uint8)
    grey = {a: p.astype(float) for a, p in phases.items()}
    index = {"z": 2, "y": 3, "x": 4}
    with_grey = plot_orthoslices(Orthoslices(coords, index, phases, grey), "c03")
    assert len(with_grey.axes) == 6
    assert [ax.get_xlabel() for ax in with_grey.axes[3:]] == ["x (µm)", "x (µm)", "y (µm)"]
    assert [ax.get_ylabel() for ax in with_grey.axes[3:]] == ["y (µm)", "z (µm)", "z (µm)"]
    assert with_grey.axes[0].get_xlim() == (-0.25, 3.75)
    phases_only = plot_orthoslices(Orthoslices(coords, index, phases, None))
    assert len(phases_only.axes) == 3
    assert phases_only.axes[0].get_title() == "phases, z = 1.00 µm"


def test_the_planes_read_only_the_chunks_they_cross(tmp_path: Path) -> None:
    """A chunk that no plane crosses is never read: here it is unreadable, and no matter."""
    store = open_store(tmp_path / "store.zarr", mode="a")
    volume = (np.arange(12**3) % 5).reshape(12, 12, 12).astype(np.uint8)
    write_volume(store, "s", "phases", volume, voxel_size_um=0.5, stage="segment", chunks=(4, 4, 4))
    corner = tmp_path / "store.zarr" / "samples" / "s" / "phases" / "0" / "c" / "2" / "2" / "2"
    assert corner.is_file(), "the chunk layout changed: name another chunk file"
    corner.write_bytes(b"not a chunk")
    with pytest.raises(ValueError, match="checksum"):  # the chunk's checksum does not match
        open_volume(store, "s", "phases").compute()
    slices = read_orthoslices(store, "s")  # through voxel (6, 6, 6): chunks (1, ·, ·) …
    assert slices.index == {"z": 6, "y": 6, "x": 6} and slices.grey is None
    np.testing.assert_array_equal(slices.phases["z"], volume[6])
    np.testing.assert_array_equal(slices.phases["y"], volume[:, 6])
    np.testing.assert_array_equal(slices.phases["x"], volume[:, :, 6])
    through = read_orthoslices(store, "s", (0.9, 0.4, 2.4))  # nearest voxel centres
    assert through.index == {"z": 2, "y": 1, "x": 5}
    np.testing.assert_array_equal(through.phases["x"], volume[:, :, 5])
