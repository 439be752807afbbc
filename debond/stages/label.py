"""``label``: silicon particles as connected components."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import zarr

from debond.pipeline.label import label_particles
from debond.sections import Section, param
from debond.stages.base import Output, Plan, Stage, Work
from debond.storage import open_volume

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample


class Parameters(Section):
    """``[label]``: silicon particles as connected components (:func:`label_particles`)."""

    connectivity: Literal[6, 18, 26] = param(
        6, "Neighbours that connect voxels: faces (6), edges (18) or corners (26)."
    )
    min_volume_voxels: int = param(27, "Smaller particles are dropped.", "voxels", ge=1)
    split_touching: bool = param(False, "Split touching particles (distance watershed).")


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    keywords = campaign.stage_parameters(stage.name)
    parameters = {**keywords, "voxel_size_um": sample.voxel_size_um}
    inputs = campaign.registry.upstream(group, stage, sample)

    def build() -> Work:
        phases = open_volume(group, sample.id, "phases").data
        found = label_particles(phases, **keywords)
        attrs = {"particles": int(found.count), "units": "label (0: none)"}
        return Work(
            outputs=[Output("particles", found.labels, "volume", attrs)],
            detail=f"{found.count} silicon particles of at least "
            f"{keywords['min_volume_voxels']} voxels",
        )

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)


STAGE = Stage(
    name="label",
    parameters=Parameters,
    kernel=label_particles,
    plan=plan,
    summary="`phases` → `particles` (int32 labels)",
    reads=("phases",),
    writes=("particles",),
)
