"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.references import normalised


@pytest.fixture(scope="module")
def tooth() -> tuple[np.ndarray, np.ndarray]:
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "tooth.h5").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no tooth.h5")
    return normalised(Path(folder) / "tooth.h5")
