"""`debond report`: a self-contained page whose figures a real browser loads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from debond.campaign import load_campaign
from debond.cli import app
from debond.cluster import cluster
from debond.runner import run_campaign
from debond.synth import write_campaign

pytestmark = pytest.mark.distributed
FIGURES = ("slices", "gap_vs_radius", "sensitivity", "bootstrap", "sizes")


@pytest.fixture(scope="module")
def campaign_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic campaign, run (all 3D stages) but not fitted."""
    folder = tmp_path_factory.mktemp("report") / "small"
    write_campaign(folder, "small", seed=1)
    with cluster(workers=2) as client:
        run_campaign(load_campaign(folder / "campaign.toml"), client, echo=lambda line: None)
    return folder / "campaign.toml"


def test_the_report_needs_a_fit_first(campaign_file: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(campaign_file)])
    assert result.exit_code == 2
    assert "fit.json does not exist; run `debond fit" in result.output


def test_the_report_embeds_every_figure_and_the_parameter_table(campaign_file: Path) -> None:
    fitted = CliRunner().invoke(app, ["fit", str(campaign_file), "--bootstrap", "30"])
    assert fitted.exit_code == 0, fitted.output
    result = CliRunner().invoke(app, ["report", str(campaign_file)])
    assert result.exit_code == 0, result.output
    page = (campaign_file.parent / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    for name in FIGURES:
        assert f'<figure id="{name}">' in page
        assert (campaign_file.parent / "figures" / f"{name}.png").is_file()
        assert (campaign_file.parent / "figures" / f"{name}.pdf").is_file()
    for label in ("α0", "κ0", "δ0", "ζ0", "E/η", "1/h", "v_SEI", "nm/h", "true (synthetic)"):
        assert label in page
    assert not re.search(r'src="(?!data:)', page), "the page must not depend on other files"
    recorded = json.loads((campaign_file.parent / "tables" / "fit.json").read_text())
    population = recorded["capacity_population"]
    assert f"The capacity term sums over {population['source']}: " in page

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium to render the page (Debian package chromium; .ci/run installs it)")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (campaign_file.parent / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f'data-figures-loaded="{len(FIGURES)}/{len(FIGURES)}"' in dom
