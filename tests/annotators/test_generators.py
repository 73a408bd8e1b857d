"""The generator registry behind `vlaforge relabel --generator NAME`, and the options a relabel run takes."""

import importlib
import pathlib

import pytest

from vlaforge.annotators import generators
from vlaforge.annotators.generators import GENERATORS, RELABELS_VL, generator_class
from vlaforge.annotators.plan_generator import PlanGenerator
from vlaforge.annotators.relabel_recipe import relabel_job
from vlaforge.annotators.vlm_generator import VlmGenerator
from vlaforge.annotators.vlm_http import HttpVlm

VLM = HttpVlm.Config(base_url="http://127.0.0.1:9/v1", model="m")
"""Never contacted: building a generator does not call its backend."""


def test_each_generator_is_registered_once(registry_keys):
    keys = registry_keys(generators, "GENERATORS")
    assert len(keys) == len(set(keys)) == len(GENERATORS)
    assert len(set(GENERATORS.values())) == len(GENERATORS)
    assert set(RELABELS_VL) <= set(GENERATORS)


def test_every_generator_in_annotators_is_registered():
    folder = pathlib.Path(generators.__file__).parent
    for path in folder.glob("*_generator.py"):  # a generator defined but not registered is unreachable
        importlib.import_module(f"vlaforge.annotators.{path.stem}")
    assert set(VlmGenerator.__subclasses__()) == set(GENERATORS.values())


def test_every_generator_builds_from_its_default_config():
    for name, cls in GENERATORS.items():
        stage = cls.Config(dataset=f"d-{name}", vlm=VLM).build()
        assert type(stage) is cls and stage.config.dataset == f"d-{name}"


def test_a_misspelt_generator_gets_the_closest_name():
    with pytest.raises(ValueError, match=r"unknown generator 'captoin'; did you mean 'caption'\? Known generators:"):
        generator_class("captoin")


def test_relabel_options_are_config_fields_with_nested_configs_from_dicts(droid_shards, tmp_path):
    robot, _ = droid_shards
    job = relabel_job(shards=str(robot), output=str(tmp_path), generator="plan", vlm=VLM,
                      options={"min_segments": 3, "validation": {"min_words": 2}})
    [stage] = job.stages
    assert type(stage) is PlanGenerator.Config and stage.min_segments == 3 and stage.vlm == VLM
    assert (stage.validation.min_words, stage.validation.max_words) == (2, 12)  # plan's own default kept
    with pytest.raises(ValueError, match=r"plan generator\.validation: unknown option 'min_word'; did you mean"):
        relabel_job(shards=str(robot), output=str(tmp_path), generator="plan", vlm=VLM,
                    options={"validation": {"min_word": 2}})
    with pytest.raises(ValueError, match="plan generator: 'dataset' is set elsewhere"):  # --dataset sets it
        relabel_job(shards=str(robot), output=str(tmp_path), generator="plan", vlm=VLM, options={"dataset": "x"})
