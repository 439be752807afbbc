"""Sensitivity of the silicon capacity to the model parameters (the paper's Fig. 4d).

Each scenario improves parameters by a factor: α0 halved (a more elastic,
less dissipative environment), κ0 doubled (stronger adhesion), δ0 halved
(slower SEI growth), and all three together.
"""

from __future__ import annotations

from numpy.typing import ArrayLike

from debond.model.disconnection import capacity_retention
from debond.model.parameters import FloatArray, Material, Parameters


def scenarios(parameters: Parameters, factor: float = 2.0) -> dict[str, Parameters]:
    """The Fig. 4d parameter sets, keyed by a label for legends.

    Parameters
    ----------
    parameters : Parameters
        The baseline (e.g. fitted) parameters.
    factor : float
        Improvement factor (2: −50 % α0, +100 % κ0, −50 % δ0).

    Returns
    -------
    dict
        ``label -> Parameters``, the baseline first.
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0; got {factor!r}")
    down, up = 1.0 / factor, factor
    return {
        "baseline": parameters,
        f"α0 ×{down:g} (more elastic)": parameters.replace(alpha0=parameters.alpha0 * down),
        f"κ0 ×{up:g} (more adhesion)": parameters.replace(kappa0=parameters.kappa0 * up),
        f"δ0 ×{down:g} (less SEI)": parameters.replace(delta0=parameters.delta0 * down),
        "all three": parameters.replace(
            alpha0=parameters.alpha0 * down,
            kappa0=parameters.kappa0 * up,
            delta0=parameters.delta0 * down,
        ),
    }


def sensitivity(
    radii_um: ArrayLike,
    n_cycles: int,
    parameters: Parameters,
    material: Material,
    factor: float = 2.0,
    counts: ArrayLike | None = None,
) -> dict[str, FloatArray]:
    """Silicon capacity retention C(1 … n) for each Fig. 4d scenario.

    Parameters
    ----------
    radii_um : (N,) array
        Particle population, µm.
    n_cycles : int
        Cycles n ≥ 1.
    parameters : Parameters
        Baseline parameters (scalars).
    material : Material
    factor : float
        Improvement factor, 2 in the paper.
    counts : (N,) array, optional
        Particles of each radius (see :func:`capacity_retention`).

    Returns
    -------
    dict
        ``label -> (n_cycles,) array`` of retention, C[0] = 1.
    """
    return {
        label: capacity_retention(radii_um, n_cycles, p, material, counts)
        for label, p in scenarios(parameters, factor).items()
    }
