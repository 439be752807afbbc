"""Writing campaign files: TOML with every key's help and unit as a comment.

:func:`dump_campaign` writes what :func:`debond.campaign.load_campaign` reads
back to the same declaration. The TOML itself is made by tomlkit, which
writes the comments and escapes strings as TOML wants.

>>> text = campaign_toml({"campaign": {"name": "x"}, "sample": [
...     {"id": "c0", "cycles": 0, "txm": "c0.h5", "voxel_size_um": 0.03}]})
>>> text.splitlines()[3:5]
['[campaign]', 'name = "x"  # Campaign name.']
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from tomlkit.items import InlineTable, Table

from debond.campaign import Campaign, _is_url, _resolve, validate
from debond.schema import CampaignBase, CampaignFile, section_classes

__all__ = ["campaign_toml", "dump_campaign"]


def _comment(field: FieldInfo) -> str:
    unit = ""
    extra = field.json_schema_extra
    if isinstance(extra, dict):
        unit = str(extra.get("unit", ""))
    return (field.description or "") + (f" [{unit}]" if unit else "")


def _inline(value: Mapping[str, Any]) -> InlineTable:
    """A mapping as an inline table (``phase_codes = {pore = 0, …}``), not a sub-table."""
    table = tomlkit.inline_table()
    table.update(value)
    return table


def _table(entry: Mapping[str, Any], model: type[BaseModel] | None) -> Table:
    table = tomlkit.table()
    for key, value in entry.items():
        if value is None:  # absent: TOML has no null
            continue
        item = _inline(value) if isinstance(value, Mapping) else tomlkit.item(value)
        field = None if model is None else model.model_fields.get(key)
        if field is not None and field.description:
            item.comment(_comment(field))
            item.trivia.comment_ws = "  "  # two spaces before an inline comment (PEP 8)
        table.add(key, item)
    return table


def _rebased(campaign: Campaign, folder: Path) -> CampaignBase:
    """The declared file with relative paths made absolute, for a file in another folder."""
    declared = campaign.declared
    if folder == campaign.folder:
        return declared
    old = campaign.folder

    def absolute(value: str | None) -> str | None:
        return None if value is None else str(_resolve(old, value))

    def pattern(value: str) -> str:
        expanded = os.path.expanduser(value)
        return expanded if os.path.isabs(expanded) else os.path.join(glob.escape(str(old)), value)

    store = declared.campaign.store
    samples = [
        s.model_copy(
            update={
                "txm": absolute(s.txm),
                "phases": absolute(s.phases),
                "sem": [pattern(p) for p in s.sem],
            }
        )
        for s in declared.sample
    ]
    e = declared.electrochemistry
    return declared.model_copy(
        update={
            "campaign": declared.campaign.model_copy(
                update={"store": store if _is_url(store) else absolute(store)}
            ),
            "sample": samples,
            "electrochemistry": e.model_copy(update={"cycling": absolute(e.cycling)}),
        }
    )


def _declared(document: Campaign | CampaignBase | Mapping[str, Any], where: str) -> CampaignBase:
    if isinstance(document, Campaign):
        return document.declared
    if isinstance(document, CampaignBase):
        return document
    return validate(document, Path(where), CampaignFile)


def campaign_toml(
    document: Campaign | CampaignBase | Mapping[str, Any], *, comments: bool = True
) -> str:
    """The text of a campaign file: sections as tables, samples as ``[[sample]]``.

    Parameters
    ----------
    document : Campaign, CampaignBase or mapping
        What to write. A mapping is validated first (as if loaded), so the
        text holds every parameter with its default filled in.
    comments : bool, default True
        Follow each key with its help text and unit as a comment (in
        ``[[sample]]``, on the first sample only).

    Returns
    -------
    str
        TOML that :func:`load_campaign` reads back to the same declaration.
        Absent optional values (``None``) are left out; TOML has no null.

    Raises
    ------
    CampaignError
        When a mapping does not validate.

    """
    declared = _declared(document, "<campaign document>")
    models = section_classes(type(declared))
    doc = tomlkit.document()
    doc.add(tomlkit.comment("debond campaign file. Every key, its default, unit and meaning:"))
    doc.add(tomlkit.comment("debond.schema.parameter_table(), or `debond params`."))
    doc.add(tomlkit.nl())
    for section, content in declared.model_dump(mode="json").items():
        model = models[section] if comments else None
        if isinstance(content, list):  # samples: help on the first only
            array = tomlkit.aot()
            for i, entry in enumerate(content):
                array.append(_table(entry, model if i == 0 else None))
            doc.add(section, array)
        else:
            doc.add(section, _table(content, model))
    return tomlkit.dumps(doc)


def dump_campaign(
    document: Campaign | CampaignBase | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    comments: bool = True,
) -> Path:
    """Validate a campaign and write it as a TOML campaign file.

    Parameters
    ----------
    document : Campaign, CampaignBase or mapping
        What to write (see :func:`campaign_toml`). A loaded :class:`Campaign`
        written into another folder gets its relative paths made absolute,
        so the new file names the same raw files and store.
    path : str or path-like
        The file to write (its folder must exist).
    comments : bool, default True
        Follow each key with its help text and unit.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    CampaignError
        When a mapping does not validate (named after `path`).
    """
    target = Path(os.path.abspath(path))
    declared: Campaign | CampaignBase = (
        _rebased(document, target.parent)
        if isinstance(document, Campaign)
        else _declared(document, str(target))
    )
    target.write_text(campaign_toml(declared, comments=comments), encoding="utf-8")
    return target
