"""``segment``: five phases and the sample mask, or a segmentation brought by the user."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dask.array as da
import zarr

from debond.pipeline.ingest import read_tiff_volume
from debond.pipeline.segment import (
    PHASE_NAMES,
    import_phases,
    kernel_peak_bytes,
    pore_fraction,
    segment,
)
from debond.sections import Section, Thresholds, param
from debond.stages.base import Output, Plan, Stage, Work
from debond.storage import complete_array

if TYPE_CHECKING:
    from debond.campaign import Campaign, Sample

#: Phase codes recorded with every ``phases`` array.
_CODES = {name: code for code, name in enumerate(PHASE_NAMES)}


class Parameters(Section):
    """``[segment]``: five-phase segmentation of the reconstruction (:func:`segment`)."""

    sigma_voxels: float = param(
        1.0, "Gaussian denoising before thresholding (0: none).", "voxels", ge=0
    )
    bins: int = param(256, "Bins of the global histogram that multi-Otsu thresholds.", ge=16)
    thresholds: Thresholds | None = param(
        None,
        "Four increasing attenuation thresholds between the five grey classes; "
        "default: multi-Otsu of the volume's histogram.",
        "1/µm",
        min_length=4,
        max_length=4,
    )
    sei_max_um: float = param(
        0.6, "Intermediate grey within this distance of silicon is SEI, elsewhere pore.", "µm", gt=0
    )
    graphite_min_radius_um: float = param(
        1.0,
        "Low-attenuation objects at least this large are graphite, smaller ones pore.",
        "µm",
        gt=0,
    )
    porosity: float | None = param(
        None,
        "Known porosity (volume fraction): the run warns when the segmented pore fraction "
        "differs by more than 0.05.",
        "",
        gt=0,
        lt=1,
    )


def _plan_import(stage: Stage, campaign: Campaign, sample: Sample) -> Plan:
    """A sample that brings its own segmentation (``phases`` TIFF and ``phase_codes``)."""
    path, codes = sample.phases, dict(sample.phase_codes or {})
    assert path is not None
    parameters = {"phase_codes": codes, "voxel_size_um": sample.voxel_size_um}

    def build() -> Work:
        grey = read_tiff_volume(path)
        phases = import_phases(grey, codes, source=f"{sample.where}.phases: {path}")
        attrs = {"phase_codes": _CODES, "source": str(path)}
        return Work(
            outputs=[
                Output("sample", da.ones(grey.shape, dtype=bool, chunks=grey.chunks), "volume"),
                Output("phases", phases, "volume", attrs),
            ],
            detail=f"segmentation {path.name}, {' × '.join(map(str, grey.shape))} voxels",
        )

    return Plan(stage, campaign, sample, parameters, {"phases": path}, build)


def plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    if sample.phases is not None:
        return _plan_import(stage, campaign, sample)
    parameters = stage.arguments(campaign, sample)
    inputs = campaign.registry.upstream(group, stage, sample)

    def build() -> Work:
        # the stored array: the sample pass reads its slabs from it
        result = segment(complete_array(group, sample.id, "recon"), **parameters)
        attrs: dict[str, object] = {"phase_codes": _CODES}
        t, levels = result.thresholds, result.levels
        if t is not None:
            attrs["thresholds_per_um"] = {
                "classes": list(t.classes),
                "cbd": t.cbd,
                "graphite": t.graphite,
            }
            classes = ", ".join(f"{v:.3f}" for v in t.classes)
            detail = f"grey classes at {classes} 1/µm, CBD above {t.cbd:.3f}"
            if parameters["thresholds"] is None:
                detail += "; ranked by grey level: give material.silicon_radius_um to find them"
        else:
            assert levels is not None
            attrs["levels_per_um"] = {
                "pore": levels.pore,
                "silicon": levels.silicon,
                "cbd": levels.cbd,
            }
            attrs["levels"] = levels.as_dict()
            detail = (
                f"levels pore {levels.pore:.3f}, silicon {levels.silicon:.3f}, CBD "
                f"{levels.cbd:.3f} 1/µm (size prior); silicon from {levels.silicon_low:.3f}, "
                f"CBD from {levels.cbd_low:.3f}; edge blur {levels.edge_sigma_voxels:.1f} voxels"
            )

        def check(extras: Mapping[str, float]) -> str:
            return result.porosity_warning(extras["pore_fraction"])

        def phases() -> Work:
            # each block's task reads its own box of recon and of the stored
            # mask: no task waits on another's result (bounded at any size)
            stored = complete_array(group, sample.id, "sample")
            assert result.from_store is not None
            data = result.from_store(stored)
            inside = da.from_zarr(stored, chunks=data.chunks)
            return Work(
                outputs=[Output("phases", data, "volume", attrs)],
                extras={"pore_fraction": pore_fraction(data, inside)},
                check=check,
            )

        return Work(outputs=[Output("sample", result.sample, "volume")], detail=detail, then=phases)

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)


def peak_bytes(block_shape: tuple[int, ...], parameters: Mapping[str, Any]) -> float:
    """Peak memory of segmenting one block, bytes (:func:`kernel_peak_bytes`).

    Parameters
    ----------
    block_shape : (z, y, x)
        The block, halo included.
    parameters : mapping
        The stage's keywords: with a size prior (``radius_range_um``) and no
        ``thresholds``, the size prior's kernel; otherwise the ranked one.
    """
    prior = parameters.get("radius_range_um") is not None and parameters.get("thresholds") is None
    return kernel_peak_bytes(block_shape, prior=prior)
