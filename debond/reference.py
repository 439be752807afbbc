"""The campaign parameter reference (``docs/parameters.md``), generated from the schema.

Every key comes from :func:`debond.schema.parameter_table`, so the reference
cannot drift from what a campaign file accepts; a test compares the committed
file with :func:`parameter_markdown`. Regenerate it with::

    debond params --markdown > docs/parameters.md

>>> print(parameter_markdown(["fit"]).splitlines()[6])  # the first row
| `bootstrap` | int | `2000` |  | Bootstrap replicates (0: the full-data fit alone). |
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import tomlkit

from debond.schema import REQUIRED, Parameter, parameter_table, section_classes

__all__ = ["REGENERATE", "parameter_markdown"]

#: The command that writes ``docs/parameters.md``.
REGENERATE = "debond params --markdown > docs/parameters.md"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped, on one line."""
    return " ".join(text.replace("|", "\\|").split())


def _default(value: Any) -> str:
    """A default as it is written in TOML; ``required`` or ``none`` (the key is absent)."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "none"
    return f"`{_cell(tomlkit.item(value).as_string())}`"


def _purpose(doc: str | None) -> str:
    """A section class's first docstring line as Markdown: its own name left out, reST
    roles and literals as code (``:class:`X``` and ````x```` become ```X```)."""
    line = (doc or "").strip().splitlines()[0] if doc else ""
    line = re.sub(r"^``[^`]+``:\s*", "", line)
    line = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", line)
    line = line.replace("``", "`")
    return line[:1].upper() + line[1:]


def _heading(section: str) -> str:
    return "[[sample]]" if section == "sample" else f"[{section}]"


def _row(p: Parameter) -> str:
    cells = (f"`{p.key}`", _cell(p.type), _default(p.default), p.unit, _cell(p.help))
    return "| " + " | ".join(cells) + " |"


def parameter_markdown(sections: Sequence[str] | None = None) -> str:
    """Every campaign parameter as Markdown: one table per section, in file order.

    Parameters
    ----------
    sections : sequence of str, optional
        The sections to write (``["recon"]``); default every section, with
        the page's title and introduction.

    Returns
    -------
    str
        Markdown ending in a newline: per section a heading, the section's
        purpose and a table of key, type, default (as TOML; ``required``, or
        ``none`` when absent by default), unit and help.
    """
    rows = parameter_table()
    names = list(dict.fromkeys(p.section for p in rows))
    chosen = names if sections is None else [name for name in names if name in sections]
    models = section_classes()
    lines: list[str] = []
    if sections is None:
        lines += [
            "# Campaign parameters",
            "",
            "Every key of a campaign file, section by section, with its type, default,",
            "unit and meaning. Generated from `debond.schema.parameter_table()` by",
            f"`{REGENERATE}`; a test checks that it is current.",
            "`debond params [SECTION]` prints the same in a terminal.",
            "",
        ]
    for name in chosen:
        lines += [
            f"## `{_heading(name)}`",
            "",
            _cell(_purpose(models[name].__doc__)),
            "",
            "| key | type | default | unit | help |",
            "|---|---|---|---|---|",
        ]
        lines += [_row(p) for p in rows if p.section == name]
        lines.append("")
    return "\n".join(lines)
