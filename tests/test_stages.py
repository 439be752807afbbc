"""The stage registry: each stage declared once, sections that match their kernels."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tomlkit
import zarr

from debond.campaign import Campaign, CampaignError, Sample, load_campaign
from debond.cluster import cluster
from debond.runner import RunError, parse_stages, run_campaign
from debond.schema import RENAMED, campaign_model, parameter_table, section_classes
from debond.sections import Section, param
from debond.stages import REGISTRY, stage_table
from debond.stages.base import Output, Plan, Registry, Stage, Work, kernel_keywords
from debond.storage import open_volume

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("stage", REGISTRY, ids=REGISTRY.names)
def test_every_section_carries_its_kernels_keywords_and_defaults(stage: Stage) -> None:
    """Section fields = the kernel's keyword-only parameters less those the sample supplies."""
    keywords = kernel_keywords(stage)
    fields = stage.parameters.model_fields
    assert list(fields) == [k for k in keywords if k in fields], "same order as the kernel"
    assert set(fields) == set(keywords), (
        f"[{stage.name}] keys {sorted(fields)} differ from {stage.kernel.__name__}'s "
        f"keywords {sorted(keywords)}"
    )
    for name, field in fields.items():
        assert field.get_default(call_default_factory=True) == keywords[name], name
        assert field.description, f"[{stage.name}].{name} has no help"
    signature = inspect.signature(stage.kernel).parameters
    for name in stage.supplied:
        assert signature[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_the_registry_is_the_one_list_of_stages() -> None:
    assert REGISTRY.names == ("ingest", "prep", "recon", "segment", "label", "measure", "sem")
    assert parse_stages(None) == REGISTRY.names
    assert parse_stages("measure,recon") == ("recon", "measure")
    assert REGISTRY.raw == ("ingest", "prep", "recon")
    assert [REGISTRY.producer(a).name for a in ("projections", "sinograms", "phases")] == [
        "ingest",
        "prep",
        "segment",
    ]
    sections = section_classes(campaign_model())
    for stage in REGISTRY:  # the section is named as its stage
        assert sections[stage.name] is stage.parameters
    assert {p.section for p in parameter_table()} >= set(REGISTRY.names)
    with pytest.raises(RunError, match="unknown stage 'reconstruction'; expected names among"):
        parse_stages("reconstruction")


def test_the_readme_stage_table_is_the_registrys() -> None:
    assert stage_table() in README.read_text(encoding="utf-8")


def test_a_registry_checks_names_and_inputs() -> None:
    ingest, prep = REGISTRY.get("ingest"), REGISTRY.get("prep")
    with pytest.raises(ValueError, match="unique; repeated: ingest"):
        Registry([ingest, ingest])
    with pytest.raises(ValueError, match="'prep' reads projections, flats, darks, which no"):
        Registry([prep])
    with pytest.raises(KeyError, match="unknown stage 'x'; expected one of ingest"):
        REGISTRY.get("x")


# ----------------------------------------------------------------- a toy stage


def invert(phases: da.Array, *, offset: int = 10) -> da.Array:
    """A toy kernel: ``offset − phases``."""
    return (offset - phases.astype(np.int16)).astype(np.int16)


class InvertParameters(Section):
    """``[invert]``: the toy stage."""

    offset: int = param(10, "What the phase codes are subtracted from.")


def plan_invert(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    parameters = campaign.stage_parameters(stage.name)
    inputs = campaign.registry.upstream(group, stage, sample)

    def build() -> Work:
        phases = open_volume(group, sample.id, "phases").data
        return Work([Output("inverted", invert(phases, **parameters), "volume")])

    return Plan(stage, campaign, sample, parameters, dict(inputs), build)


INVERT = Stage(
    "invert", InvertParameters, invert, plan_invert, "`phases` → `inverted`",
    reads=("phases",), writes=("inverted",),
)  # fmt: skip


def test_a_toy_stage_is_one_module_and_one_registry_entry(tmp_path: Path) -> None:
    """A new stage runs, resumes and has its section with nothing else changed."""
    import tifffile

    grey = np.zeros((4, 6, 6), np.uint8)
    grey[1:3, 2:4, 2:4] = 85
    tifffile.imwrite(tmp_path / "seg.tif", grey, photometric="minisblack")
    (tmp_path / "c.toml").write_text(
        '[campaign]\nname = "toy"\n[[sample]]\nid = "s"\ncycles = 0\nphases = "seg.tif"\n'
        "phase_codes = {pore = 0, silicon = 85, cbd = 170}\nvoxel_size_um = 0.1\n"
        "[invert]\noffset = 7\n"
    )
    registry = Registry([*REGISTRY[:4], INVERT, *REGISTRY[4:]])
    campaign = load_campaign(tmp_path / "c.toml", registry=registry)
    assert campaign.stage_parameters("invert") == {"offset": 7}
    with pytest.raises(CampaignError, match=r"invert: unknown key"):
        load_campaign(tmp_path / "c.toml")  # the default registry has no [invert]
    lines: list[str] = []
    with cluster(workers=1) as client:
        done = run_campaign(campaign, client, stages=["segment", "invert"], echo=lines.append)
        assert [(o.stage, o.state) for o in done] == [("segment", "done"), ("invert", "done")]
        again = run_campaign(campaign, client, stages=["invert"], echo=lines.append)
        assert [(o.stage, o.state) for o in again] == [("invert", "skipped")]
    inverted = open_volume(campaign.store_location, "s", "inverted").data.compute()
    np.testing.assert_array_equal(inverted, 7 - np.where(grey == 85, 3, 0))


def refuse(block: np.ndarray) -> np.ndarray:
    """A kernel that fails on the cluster."""
    raise ArithmeticError(f"refused a block of {block.shape}")


#: What the toy stage's second passes cleaned up: the offset of each.
CLEANED: list[int] = []


def plan_two_passes(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    """``inverted``, then ``doubled`` from the stored ``inverted`` (:func:`refuse` at offset 0);
    the second pass records its cleanup in :data:`CLEANED`."""
    parameters = campaign.stage_parameters(stage.name)

    def build() -> Work:
        phases = open_volume(group, sample.id, "phases").data

        def second() -> Work:
            inverted = open_volume(group, sample.id, "inverted").data  # complete by now
            if parameters["offset"] == 0:
                inverted = inverted.map_blocks(refuse, dtype=inverted.dtype)
            return Work(
                [Output("doubled", 2 * inverted, "volume")],
                extras={"total": inverted.sum()},
                cleanup=lambda: CLEANED.append(parameters["offset"]),
            )

        return Work([Output("inverted", invert(phases, **parameters), "volume")], then=second)

    return Plan(stage, campaign, sample, parameters, {}, build)


def test_a_stage_in_two_passes_reads_its_first_pass_from_the_store(tmp_path: Path) -> None:
    """The second pass is built once the first one's outputs are complete; when it
    fails, the stage is not complete and runs again whole. Its cleanup runs either way."""
    import tifffile

    grey = np.zeros((4, 6, 6), np.uint8)
    grey[1:3, 2:4, 2:4] = 85
    tifffile.imwrite(tmp_path / "seg.tif", grey, photometric="minisblack")
    text = (
        '[campaign]\nname = "toy"\n[[sample]]\nid = "s"\ncycles = 0\nphases = "seg.tif"\n'
        "phase_codes = {pore = 0, silicon = 85, cbd = 170}\nvoxel_size_um = 0.1\n"
        "[invert]\noffset = {}\n"
    )
    stage = Stage(
        "invert", InvertParameters, invert, plan_two_passes, "`phases` → `inverted`, `doubled`",
        reads=("phases",), writes=("inverted", "doubled"),
    )  # fmt: skip
    registry = Registry([*REGISTRY[:4], stage, *REGISTRY[4:]])
    expected = 7 - np.where(grey == 85, 3, 0)
    lines: list[str] = []
    CLEANED.clear()
    with cluster(workers=1) as client:
        (tmp_path / "c.toml").write_text(text.replace("{}", "0"))
        campaign = load_campaign(tmp_path / "c.toml", registry=registry)
        with pytest.raises(RunError, match="ArithmeticError: refused a block") as raised:
            run_campaign(campaign, client, stages=["segment", "invert"], echo=lines.append)
        failed = [(o.stage, o.state) for o in raised.value.outcomes]
        assert failed == [("segment", "done"), ("invert", "failed")]
        assert CLEANED == [0]
        assert open_volume(campaign.store_location, "s", "inverted").data.shape == grey.shape
        (tmp_path / "c.toml").write_text(text.replace("{}", "7"))
        campaign = load_campaign(tmp_path / "c.toml", registry=registry)
        done = run_campaign(campaign, client, stages=["invert"], echo=lines.append)
        assert [(o.stage, o.state) for o in done] == [("invert", "done")]
        assert CLEANED == [0, 7]
        again = run_campaign(campaign, client, stages=["invert"], echo=lines.append)
        assert [(o.stage, o.state) for o in again] == [("invert", "skipped")]
    doubled = open_volume(campaign.store_location, "s", "doubled")
    np.testing.assert_array_equal(doubled.data.compute(), 2 * expected)
    assert doubled.attrs["total"] == expected.sum()
    assert any(f"total {expected.sum()}" in line for line in lines)


# ----------------------------------------------------------------- old names


#: The least a campaign file holds, without the sections the tests append.
MINIMAL = tomlkit.dumps(
    {
        "campaign": {"name": "x"},
        "sample": [
            {
                "id": "s",
                "cycles": 0,
                "phases": "seg.tif",
                "phase_codes": {"pore": 0, "silicon": 85, "cbd": 170},
                "voxel_size_um": 0.1,
            }
        ],
    }
)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("[reconstruction]\niterations = 5", "[reconstruction] is now [recon]"),
        ("[segmentation]\nthresholds = [1.0, 2.0, 3.0, 4.0]", "[segmentation] is now [segment]"),
        ("[labelling]\nconnectivity = 26", "[labelling] is now [label]"),
        ("[prep]\nclip_min = 1e-5", "prep.clip_min is now prep.clip_to"),
        ("[segment]\nhistogram_bins = 64", "segment.histogram_bins is now segment.bins"),
        ("[sem]\nn_rays_2d = 32", "sem.n_rays_2d is now sem.n_rays"),
        ("[sem]\ndenoise_sigma_px = 2.0", "sem.denoise_sigma_px is now sem.sigma_px"),
    ],
)
def test_an_old_section_or_key_names_the_new_one(tmp_path: Path, old: str, new: str) -> None:
    (tmp_path / "seg.tif").write_bytes(b"x")
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + old + "\n")
    with pytest.raises(CampaignError) as error:
        load_campaign(path)
    assert "written for an earlier version of debond" in str(error.value)
    assert new in str(error.value)


def test_every_renamed_key_points_at_a_declared_one() -> None:
    declared = {(p.section, p.key) for p in parameter_table()}
    for old, new in RENAMED.items():
        if "." in new:
            assert tuple(new.split(".")) in declared, new
            assert tuple(old.split(".")) not in declared, old
        else:
            assert new in REGISTRY.names and old not in REGISTRY.names


def test_section_annotations_are_concrete_types() -> None:
    """Every stage parameter has a type the writer and `debond params` can name."""
    for stage in REGISTRY:
        for name, field in stage.parameters.model_fields.items():
            assert field.annotation is not typing.Any, f"[{stage.name}].{name}"


def test_writing_a_document_with_old_names_names_the_new_ones(tmp_path: Path) -> None:
    from debond.campaign_file import dump_campaign

    document = {
        "campaign": {"name": "x"},
        "sample": [{"id": "s", "cycles": 0, "txm": "s.h5", "voxel_size_um": 0.1}],
        "reconstruction": {"algorithm": "fbp"},
    }
    with pytest.raises(CampaignError, match=r"\[reconstruction\] is now \[recon\]"):
        dump_campaign(document, tmp_path / "c.toml")
    assert not (tmp_path / "c.toml").exists()
