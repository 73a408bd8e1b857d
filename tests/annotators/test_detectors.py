"""The detector registry behind a grounding recipe's `{"kind": ...}` entries."""

import pytest

from vlaforge.annotators import detectors
from vlaforge.annotators.annotate_recipe import annotate_job, default_recipe, uses_hosted
from vlaforge.annotators.detectors import DETECTORS, DetectorFamily, detector_family
from vlaforge.annotators.grounding_dino import GroundingDinoDetector
from vlaforge.annotators.hosted_detector import HostedDetector
from vlaforge.pipelines.stage import Stage


def test_each_kind_is_registered_once_with_a_distinct_detector_name(registry_keys):
    keys = registry_keys(detectors, "DETECTORS")
    assert len(keys) == len(set(keys)) == len(DETECTORS)
    names = [family.config(**family.preset).name for family in DETECTORS.values()]
    assert len(set(names)) == len(names)  # the default recipe runs every kind at once, and the audit keys on names


def test_every_family_builds_its_stage_from_its_preset():
    for kind, family in DETECTORS.items():
        stage = family.config(**family.preset).build()  # cheap: weights load in setup()
        assert isinstance(stage, Stage) and type(stage.config) is family.config, kind
    llmdet = DETECTORS["llmdet"].config(**DETECTORS["llmdet"].preset).build()
    assert type(llmdet) is GroundingDinoDetector and llmdet.config.architecture == "mm_grounding_dino"


def test_a_misspelt_kind_gets_the_closest_name():
    assert detector_family("hosted").config is HostedDetector.Config
    with pytest.raises(ValueError, match=r"unknown detector kind 'grounding-dino'; did you mean 'grounding_dino'\?"):
        detector_family("grounding-dino")


def test_a_family_whose_preset_or_token_field_is_not_a_config_field_is_refused():
    with pytest.raises(ValueError, match=r"names \['box_treshold'\], which are not fields"):
        DetectorFamily(config=GroundingDinoDetector.Config, preset={"box_treshold": 0.3})
    with pytest.raises(ValueError, match=r"names \['token'\]"):
        DetectorFamily(config=HostedDetector.Config, token_field="token")


def test_the_token_goes_to_the_family_that_takes_one(tmp_path):
    job = annotate_job(default_recipe(), str(tmp_path / "droid"), str(tmp_path / "out"), hosted_token="t0k3n")
    tokens = {stage.name: getattr(stage, "api_token", None) for stage in job.stages[2:5]}
    assert tokens == {"grounding_dino": None, "llmdet": None, "gdino_1_5": "t0k3n"}
    assert uses_hosted(default_recipe())
    assert not uses_hosted({"detectors": [{"kind": "llmdet"}, {"kind": "yolo"}]})
