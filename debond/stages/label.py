"""``label``: silicon particles as connected components."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import zarr

from debond.pipeline.label import label_particles
from debond.sections import Section, param
from debond.stages.base import Output, Plan, Stage, Work
from debond.storage import complete_array, remove_scratch, scratch_group

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample


class Parameters(Section):
    """``[label]``: silicon particles as connected components (:func:`label_particles`)."""

    connectivity: Literal[6, 18, 26] = param(
        6, "Neighbours that connect voxels: faces (6), edges (18) or corners (26)."
    )
    min_volume_voxels: int = param(27, "Smaller particles are dropped.", "voxels", ge=1)
    split_touching: bool = param(
        True,
        "Split touching particles: a watershed of the distance transform with markers "
        "from the size prior (material.silicon_radius_um).",
    )
    max_split_voxels: int = param(
        2**25,
        "A touching cluster whose bounding box holds more voxels stays whole (and is "
        "flagged); bounds a splitting task's memory (about 120 bytes a voxel).",
        "voxels",
        ge=1,
    )


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    parameters = stage.arguments(campaign, sample)
    inputs = campaign.registry.upstream(group, stage, sample)

    def build() -> Work:
        # every task reads its own box of the stored phases: bounded at any size
        phases = complete_array(group, sample.id, "phases")
        scratch = scratch_group(group, sample.id, "particles")
        try:
            found = label_particles(phases, scratch, **parameters)
        except BaseException:
            remove_scratch(group, sample.id, "particles")
            raise
        attrs = {
            "particles": int(found.count),
            "units": "label (0: none)",
            "components": found.components,
            "split": found.split,
        }
        detail = (
            f"{found.count} silicon particles of at least {parameters['min_volume_voxels']} voxels"
        )
        if found.components is not None:
            detail += f" ({found.split} of {found.components} components split at necks)"
        elif parameters["split_touching"]:
            detail += "; touching particles not split: no size prior (material.silicon_radius_um)"
        return Work(
            outputs=[Output("particles", found.labels, "volume", attrs)],
            detail=detail,
            cleanup=lambda: remove_scratch(group, sample.id, "particles"),
        )

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)


#: Peak bytes of a task per voxel of its block of stored phases: the final
#: labels' task holds the silicon mask, cc3d's labels (uint32, then their
#: narrowed copy) and the int32 result. The splitting tasks hold about
#: :data:`~debond.pipeline.label.SPLIT_BYTES_PER_VOXEL` bytes a voxel of a
#: component's box instead (``max_split_voxels``).
BYTES_PER_VOXEL = 8.0


def peak_bytes(block_shape: tuple[int, ...], parameters: Mapping[str, Any]) -> float:
    """Peak memory of labelling one block, bytes.

    Parameters
    ----------
    block_shape : (z, y, x)
        One chunk of the phases.
    parameters : mapping
        The stage's keywords.
    """
    return BYTES_PER_VOXEL * math.prod(block_shape)
