"""The particle table: the samples' 3D rows and their SEM sections, gathered.

After ``measure`` and ``sem`` the per-sample tables are gathered into
``tables/<campaign>/particles.parquet`` (DESIGN.md, "Tables"): the 3D rows as they are,
the SEM sections converted stereologically into spheres
(:mod:`debond.pipeline.stereology`). A sample with SEM images alone brings
2D rows only. The ``cycles`` column is the campaign file's, as it is now:
the image stages do not need the cycles, so a sample may have been measured
before its cycles were written down (or corrected).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from debond.campaign import Campaign
from debond.pipeline.sem import usable_sections
from debond.pipeline.stereology import sections_to_spheres, unfold_radii
from debond.storage.tables import PARTICLES_SCHEMA, read_table, write_table

__all__ = ["convert_sections", "particle_table"]


def _stage_tables(
    campaign: Campaign, name: str, wanted: Collection[str] | None = None
) -> list[pd.DataFrame]:
    """The tables a table stage wrote for the campaign's samples (those in `wanted`,
    default all), those that exist."""
    stage = campaign.registry.get(name)
    assert stage.table is not None
    paths = [
        stage.table.path(campaign.tables_dir, sample)
        for sample in campaign.samples
        if wanted is None or sample.id in wanted
    ]
    return [read_table(path, stage.table.schema) for path in paths if path.is_file()]


def convert_sections(sections: pd.DataFrame) -> pd.DataFrame:
    """SEM sections as particle-table rows: stereological (R, g) for every section.

    The size distribution is unfolded from all usable sections together (not
    on the image border, at least one valid ray): the particles are the same
    material in every sample, and pooling steadies the unfolding. Each
    section's R is then E[R | r] under it, and its gap follows from the
    in-plane gap (:mod:`debond.pipeline.stereology`).

    Parameters
    ----------
    sections : DataFrame
        Rows of the ``sem`` stage: ``sample, cycles, image, particle,
        section_radius_um, section_gap_um, gap_std_um, n_rays, touches_border,
        centroid_y_um, centroid_x_um``.

    Returns
    -------
    DataFrame
        :data:`PARTICLES_SCHEMA` columns, ``modality = "2d"``; ``radius_um``
        and ``gap_mean_um`` are NaN where a section has no gap.
    """
    usable = usable_sections(sections)
    if not usable.any():
        return pd.DataFrame(columns=PARTICLES_SCHEMA.names)
    distribution = unfold_radii(sections.loc[usable, "section_radius_um"].to_numpy())
    r = sections["section_radius_um"].to_numpy()
    g2 = sections["section_gap_um"].to_numpy()
    ok = np.isfinite(g2)
    radius = np.full(r.shape, np.nan)
    gap = np.full(r.shape, np.nan)
    radius[ok], gap[ok] = sections_to_spheres(r[ok], g2[ok], distribution)
    return pd.DataFrame(
        {
            "sample": sections["sample"],
            "cycles": sections["cycles"],
            "modality": "2d",
            "particle": sections["particle"],
            "radius_um": radius,
            "gap_mean_um": gap,
            "gap_std_um": sections["gap_std_um"],
            "n_rays": sections["n_rays"],
            "touches_border": sections["touches_border"].astype(bool),
            # The 3D flags (NOT_MEASURED) do not apply to a section.
            "oversized": False,
            "spans_box": False,
            "few_rays": False,
            "centroid_z_um": np.nan,
            "centroid_y_um": sections["centroid_y_um"],
            "centroid_x_um": sections["centroid_x_um"],
            "section_radius_um": r,
            "section_gap_um": g2,
        }
    )


def _campaign_cycles(campaign: Campaign, rows: pd.DataFrame) -> pd.Series:
    """The campaign file's cycles of every row's sample.

    Raises
    ------
    CampaignError
        Naming every sample with rows but without ``cycles``.
    """
    measured = set(rows["sample"])
    campaign.require_cycles(
        "the particle table's cycles column",
        [s for s in campaign.samples if s.id in measured],
    )
    cycles = {s.id: s.cycles for s in campaign.samples}
    return rows["sample"].map(cycles).astype("int64")


def particle_table(
    campaign: Campaign, samples: Mapping[str, Collection[str]] | None = None
) -> Path | None:
    """Gather the samples' 3D gap tables and converted SEM sections into
    ``particles.parquet`` in the campaign's tables folder.

    Parameters
    ----------
    campaign : Campaign
    samples : mapping of str to collection of str, optional
        For each table stage (``measure``, ``sem``), the ids of the samples
        whose rows to take: the runner passes those whose table is current,
        so that the old rows of a sample that failed never enter the table.
        A stage left out (or ``samples`` None): every sample with a table.

    Returns
    -------
    Path or None
        The table written, or None when there are no rows; a table gathered
        earlier is then removed, so that none of its rows is fitted.

    Raises
    ------
    CampaignError
        A sample with rows gives no ``cycles`` (nothing is written).
    """
    chosen = {} if samples is None else samples
    parts = _stage_tables(campaign, "measure", chosen.get("measure"))
    sections = _stage_tables(campaign, "sem", chosen.get("sem"))
    if sections:
        parts.append(convert_sections(pd.concat(sections, ignore_index=True)))
    parts = [part for part in parts if len(part)]
    path = campaign.tables_dir / "particles.parquet"
    if not parts:
        path.unlink(missing_ok=True)
        return None
    rows = pd.concat(parts, ignore_index=True)
    rows["cycles"] = _campaign_cycles(campaign, rows)
    # The schema's column order, whichever kinds of rows there are (2D alone or not).
    rows = rows[[name for name in PARTICLES_SCHEMA.names if name in rows]]
    return write_table(rows, path, PARTICLES_SCHEMA)
