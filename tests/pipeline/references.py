"""Independent references shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def normalised(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sinograms (rows, angles, columns) = −log((I − D)/(F − D)) and angles in radians."""
    with h5py.File(path, "r") as f:
        data = f["exchange/data"][...].astype(np.float64)
        flat = f["exchange/data_white"][...].mean(axis=0)
        dark = f["exchange/data_dark"][...].mean(axis=0)
        theta = np.deg2rad(f["exchange/theta"][...])
    transmission = np.clip((data - dark) / (flat - dark), 1e-6, None)
    sinograms = -np.log(transmission).transpose(1, 0, 2)
    return np.ascontiguousarray(sinograms, dtype=np.float32), theta
