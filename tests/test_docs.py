"""The documentation stays true: the generated parameter reference is current, and the
README points only at files of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from debond.cli import app
from debond.reference import REGENERATE, parameter_markdown
from debond.schema import parameter_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Markdown links and images: [text](target) and ![alt](target).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: Documents named in the text, in or out of links: `MODEL.md`, docs/parameters.md.
NAMED_DOCUMENT = re.compile(r"(?<![\w/.:-])((?:\.\./|\./)?[\w/.-]*\w\.md)\b")


def test_the_parameter_reference_is_current() -> None:
    committed = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    assert committed == parameter_markdown(), f"docs/parameters.md is stale: run `{REGENERATE}`"


def test_the_parameter_reference_holds_every_key() -> None:
    text = parameter_markdown()
    for p in parameter_table():
        assert re.search(rf"^\| `{re.escape(p.key)}` \|", text, re.MULTILINE), (p.section, p.key)


def test_params_markdown_prints_the_reference() -> None:
    result = CliRunner().invoke(app, ["params", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.output == parameter_markdown()


def relative_targets(text: str) -> list[str]:
    """Link targets that are paths (no URL, no in-page anchor), without their anchors."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_relative_targets_are_found() -> None:
    text = "see [a](docs/a.md#x), ![b](b.png), [c](https://x.org/c.md), [d](#d)"
    assert relative_targets(text) == ["docs/a.md", "b.png"]
    assert NAMED_DOCUMENT.findall("as MODEL.md says; ../shared/DESIGN.md, x.png, a.mdx") == [
        "MODEL.md",
        "../shared/DESIGN.md",
    ]


@pytest.mark.parametrize("kind", ["links", "named documents"])
def test_the_readme_points_only_at_files_in_the_repository(kind: str) -> None:
    text = README.read_text(encoding="utf-8")
    if kind == "links":
        targets = relative_targets(text)
        assert "docs/parameters.md" in targets and "docs/demo-slices.png" in targets
    else:  # a document named in the text must be one of the repository's too
        targets = NAMED_DOCUMENT.findall(text)
    broken = []
    for target in sorted(set(targets)):
        path = (README.parent / target).resolve()
        if not path.is_relative_to(ROOT) or not path.is_file():
            broken.append(target)
    assert broken == [], f"README.md names files that are not in the repository: {broken}"
