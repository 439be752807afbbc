"""Particle tables and capacity series drawn from the model itself.

The stochastic process of MODEL.md simulated particle by particle: log-normal
radii, disconnection at the end of every cycle with probability min(1, ζ0·d_k),
and Gaussian measurement noise on the imaged gap. Used by the demo, the
closed-loop tests and the benchmarks, where the true parameters are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from debond.model.cycling import Recipe
from debond.model.disconnection import capacity_retention, disconnection_probability
from debond.model.mechanics import check_cycles, gaps
from debond.model.parameters import FloatArray, Material, Parameters

#: Log-normal radius population (µm): the size range of the paper's SiOx particles.
RADIUS_MEDIAN_UM = 0.6
RADIUS_LOG_SD = 0.5
RADIUS_RANGE_UM = (0.1, 3.0)


class SimulatedCampaign(NamedTuple):
    """A particle table and a capacity series with their true parameters."""

    particles: pd.DataFrame
    capacity: pd.DataFrame
    parameters: Parameters
    material: Material


def draw_radii(rng: np.random.Generator, size: int) -> FloatArray:
    """Log-normal effective radii in µm, truncated to :data:`RADIUS_RANGE_UM`."""
    out = np.empty(0)
    while out.size < size:
        r = rng.lognormal(np.log(RADIUS_MEDIAN_UM), RADIUS_LOG_SD, size)
        out = np.concatenate([out, r[(r >= RADIUS_RANGE_UM[0]) & (r <= RADIUS_RANGE_UM[1])]])
    return out[:size]


def imaged_gaps(
    radius_um: FloatArray,
    n_cycles: int,
    parameters: Parameters,
    material: Material,
    rng: np.random.Generator,
) -> FloatArray:
    """One draw of the gap D that an image after n cycles shows, per particle (µm).

    Each particle disconnects at the end of cycle k < n with probability
    p_k = min(1, ζ0·d_k) and keeps d_K from its disconnection cycle K on.
    """
    n = check_cycles(n_cycles)
    radius = np.asarray(radius_um, dtype=np.float64)
    if n == 0:
        return np.zeros_like(radius)
    d = gaps(radius, n, parameters, material)  # (n, ...)
    drops = rng.random(d.shape) < disconnection_probability(d, parameters.zeta0)
    drops[-1] = True  # imaged at the end of cycle n in any case
    last = np.argmax(drops, axis=0)
    imaged: NDArray[np.float64] = np.take_along_axis(d, last[None, ...], axis=0)[0]
    return imaged


def simulate_campaign(
    parameters: Parameters,
    material: Material | None = None,
    *,
    cycles: Sequence[int] = (0, 1, 3, 10),
    particles_per_sample: int = 60,
    capacity_cycles: int = 10,
    gap_noise_um: float = 0.03,
    retention_noise: float = 0.01,
    population: int = 4000,
    seed: int = 0,
) -> SimulatedCampaign:
    """Draw a particle table and a silicon capacity-retention series.

    Parameters
    ----------
    parameters : Parameters
        True model parameters (scalars).
    material : Material, optional
    cycles : sequence of int
        Cycle count of each imaged sample (one sample per entry).
    particles_per_sample : int
        Particles measured per sample.
    capacity_cycles : int
        Length of the capacity series (cycles 1 … n).
    gap_noise_um : float
        Standard deviation of the Gaussian noise on each measured mean gap, µm
        (measured gaps are clipped at 0).
    retention_noise : float
        Standard deviation of the noise on the retention of cycles ≥ 2.
    population : int
        Particles in the electrode whose capacity is simulated.
    seed : int

    Returns
    -------
    SimulatedCampaign
        ``particles`` in the DESIGN.md schema (modality ``"3d"``), ``capacity``
        with ``cycle``, ``retention`` and the noise-free ``retention_true``.
    """
    material = material or Material()
    rng = np.random.default_rng(seed)
    frames = []
    for n in cycles:
        radius = draw_radii(rng, particles_per_sample)
        true_gap = imaged_gaps(radius, n, parameters, material, rng)
        measured = np.clip(true_gap + rng.normal(0.0, gap_noise_um, radius.size), 0.0, None)
        frames.append(
            pd.DataFrame(
                {
                    "sample": f"c{n:02d}",
                    "cycles": n,
                    "modality": "3d",
                    "particle": np.arange(1, radius.size + 1),
                    "radius_um": radius,
                    "gap_mean_um": measured,
                }
            )
        )
    truth = capacity_retention(draw_radii(rng, population), capacity_cycles, parameters, material)
    observed = truth + np.r_[0.0, rng.normal(0.0, retention_noise, capacity_cycles - 1)]
    capacity = pd.DataFrame(
        {
            "cycle": np.arange(1, capacity_cycles + 1),
            "retention": observed,
            "retention_true": truth,
        }
    )
    return SimulatedCampaign(pd.concat(frames, ignore_index=True), capacity, parameters, material)


def simulate_cycling(
    retention: FloatArray,
    electrode_mass_mg: float,
    recipe: Recipe | None = None,
    *,
    noise_mAh: float = 0.002,
    seed: int = 0,
) -> pd.DataFrame:
    """Charge capacity per cycle of an electrode whose silicon follows ``retention``.

    Graphite contributes its full capacity every cycle; the silicon its
    theoretical capacity times the retention; Gaussian noise is added.

    Parameters
    ----------
    retention : (n,) array
        Silicon retention of cycles 1 … n.
    electrode_mass_mg : float
        Coating mass, mg.
    recipe : Recipe, optional
    noise_mAh : float
        Standard deviation of the capacity noise, mAh.
    seed : int

    Returns
    -------
    DataFrame
        ``cycle`` and ``charge_capacity_mAh``: the CSV of
        :func:`debond.model.cycling.read_cycling`.
    """
    recipe = recipe or Recipe()
    rng = np.random.default_rng(seed)
    retention = np.asarray(retention, dtype=np.float64)
    charge = (
        recipe.graphite_capacity_mAh(electrode_mass_mg)
        + recipe.silicon_capacity_mAh(electrode_mass_mg) * retention
        + rng.normal(0.0, noise_mAh, retention.size)
    )
    return pd.DataFrame({"cycle": np.arange(1, retention.size + 1), "charge_capacity_mAh": charge})
