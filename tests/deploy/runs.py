"""Small campaigns for the deployment tests, and their particle table on an embedded cluster.

Each deployment (SLURM jobs, an s3:// store, TLS, GPU workers) runs a copy of
the small synthetic campaign cut to its first :data:`KEPT` samples, and its
particle table is compared with the one the embedded cluster makes of the
same copy (:func:`embedded_table`, computed once per test run).
"""

from __future__ import annotations

import functools
import shutil
import tomllib
from pathlib import Path

import pandas as pd

from debond.campaign import load_campaign
from debond.campaign_file import dump_campaign
from debond.cluster import cluster
from debond.runner import run_campaign
from debond.storage.tables import read_particles

#: Samples of the small campaign kept by :func:`cut_campaign` (two: one pristine, one cycled).
KEPT = ("c00", "c10")


def cut_campaign(source: Path, target: Path, store: str = "store.zarr") -> Path:
    """A copy of the small campaign in `target` with the samples :data:`KEPT` and `store`.

    The inputs are copied (never the store or the tables); returns the new
    campaign file.
    """
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("store.zarr", "truth", "tables"))
    path = target / "campaign.toml"
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    document["sample"] = [s for s in document["sample"] if s["id"] in KEPT]
    document["campaign"]["store"] = store
    return dump_campaign(document, path, comments=False)


def particles(campaign_file: Path) -> pd.DataFrame:
    """The campaign's particle table (``tables/<name>/particles.parquet``)."""
    return read_particles(load_campaign(campaign_file).tables_dir / "particles.parquet")


@functools.cache
def embedded_table(source: Path) -> pd.DataFrame:
    """The particle table of :func:`cut_campaign` run on an embedded 2-worker cluster.

    Run once per test run, in a folder beside `source` (the session's small campaign).
    """
    campaign_file = cut_campaign(source, source.parent / "embedded")
    with cluster(workers=2) as client:
        run_campaign(load_campaign(campaign_file), client, echo=lambda line: None)
    return particles(campaign_file)
