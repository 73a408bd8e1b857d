"""The recipe registry: the report-scale recipes carry the report's numbers, every recipe builds a valid config and
round-trips through the file a run saves, and a misspelt name is answered with the closest one."""

from __future__ import annotations

import pytest

from vlaforge.training import recipes
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.phase import Phase
from vlaforge.training.trainer_config import TrainerConfig

WHERE = recipes.RunLocation(corpus="/data/corpus.json", output="/runs/r", vlm="/ckpt/qwen3-vl")


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_every_recipe_builds_and_round_trips_through_its_saved_form(name):
    config = recipes.build(name, WHERE)
    assert isinstance(config, TrainerConfig)
    assert TrainerConfig.from_dict(config.to_dict()) == config
    assert config.model.dit.chunk_len == config.choice.chunk_len == config.loader.robot.chunk_len
    assert recipes.phase_of(name) is config.phase


@pytest.mark.parametrize(("name", "phase", "batch", "reads_vl"), [
    ("step1_choice", Phase.STEP1_CHOICE, 32_768, True),
    ("step2_dit", Phase.STEP2_DIT, 32_768, False),
    ("posttrain_sync", Phase.POSTTRAIN_SYNC, 2_048, False),
    ("posttrain_async", Phase.POSTTRAIN_ASYNC, 2_048, False),
])
def test_report_scale_recipes_carry_the_reports_batch_steps_and_model(name, phase, batch, reads_vl):
    config = recipes.build(name, WHERE)
    assert (config.phase, config.global_batch_size, config.max_steps) == (phase, batch, 40_000)
    assert config.reads_vl is reads_vl  # post-training and step 2: the robot's data only
    assert config.model.dit.chunk_len == 30 and config.model.dit.num_layers == 16
    assert config.model.flow.training_repeat == 4 and config.model.flow.num_steps == 5
    # 1, 2 and 8 nodes of 8 GPUs: the batch divides into whole micro batches
    for ranks in (8, 16, 64):
        assert config.accumulation(ranks) * config.micro_batch_size * ranks == batch


def test_the_ablations_differ_from_posttrain_async_in_exactly_their_knob():
    base = recipes.build("posttrain_async", WHERE)
    rtc = recipes.build("posttrain_async_training_rtc", WHERE)
    paper = recipes.build("posttrain_async_paper", WHERE)
    assert base.model.attention is AttentionKind.LAMBDA
    assert rtc.attention is AttentionKind.CAUSAL and rtc.model == base.model
    assert (paper.model.prefix.async_probability, paper.model.prefix.prefix_lengths) == (1.0, tuple(range(7)))
    assert paper.model.prefix.weight_per.value == "sample" and base.model.prefix.weight_per.value == "element"
    assert paper.model.dit == base.model.dit


def test_overrides_apply_and_a_misspelt_recipe_names_the_closest():
    config = recipes.build("posttrain_async_tiny", WHERE, {"max_steps": 7, "model.dit.attention_window": 2})
    assert config.max_steps == 7 and config.model.dit.attention_window == 2
    with pytest.raises(ValueError, match="unknown recipe 'step2_ditt'; did you mean 'step2_dit'"):
        recipes.build("step2_ditt", WHERE)


def test_a_launch_whose_ranks_do_not_divide_the_batch_is_refused_naming_the_numbers():
    config = recipes.build("posttrain_sync", WHERE)
    with pytest.raises(ValueError, match="global_batch_size=2048 is not a multiple of micro_batch_size x ranks"):
        config.accumulation(3)
