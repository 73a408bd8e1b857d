"""TrainerConfig: validation that names the field, the generated DeepSpeed config, and the JSON round trip that
hands the config to every torchrun process."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from vlaforge.training.data.collate import Batcher, MixPolicy
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.normalization import NormKind
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.model import presets
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.model.phase import Phase
from vlaforge.training.trainer_config import Precision, TrainerConfig, deepspeed_config

CHUNK = presets.vla_tiny().dit.chunk_len
ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "training"


def config(**changes) -> TrainerConfig:
    loader = CorpusLoader.Config(corpus_url="s3://bucket/corpus.json", processor="/ckpt/vlm",
                                 robot=RobotSampleTransform.Config(image_size=(64, 48), chunk_len=CHUNK),
                                 batch=Batcher.Config(batch_size=7, policy=MixPolicy.BY_KIND))
    defaults = dict(phase="step2_dit", loader=loader, output_dir="/runs/a", vlm_dir="/ckpt/vlm",
                    model=presets.vla_tiny(), choice=ChoicePoliciesConfig(chunk_len=CHUNK), micro_batch_size=4)
    return TrainerConfig(**{**defaults, **changes})


def test_the_deepspeed_config_is_zero_2_with_the_batch_clip_and_precision_and_no_optimizer_block():
    ds = deepspeed_config(config(gradient_accumulation=3, grad_clip=0.5, precision="bf16"))
    assert ds["zero_optimization"]["stage"] == 2
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (4, 3)
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": True}
    assert "optimizer" not in ds and "scheduler" not in ds  # a torch AdamW is passed in; no warm-up asked for
    warm = deepspeed_config(config(warmup_steps=100, lr=3e-4))
    assert warm["scheduler"]["type"] == "WarmupLR"
    assert warm["scheduler"]["params"]["warmup_max_lr"] == 3e-4 and warm["scheduler"]["params"]["warmup_num_steps"] == 100
    assert deepspeed_config(config())["bf16"] == {"enabled": False}


def test_the_micro_batch_size_is_the_loaders_batch_size():
    made = config(micro_batch_size=5)
    assert made.loader.batch.batch_size == 5 and made.loader.batch.policy is MixPolicy.BY_KIND


@pytest.mark.parametrize(("changes", "message"), [
    (dict(max_steps=0), "TrainerConfig.max_steps must be >= 1, got 0"),
    (dict(lr=-1.0), "TrainerConfig.lr must be >= 0"),
    (dict(betas=(0.9, 1.5)), "TrainerConfig.betas"),
    (dict(init_policy="/runs/step2/policy"), "set exactly one of vlm_dir and init_policy"),
    (dict(vlm_dir=None), "set exactly one of vlm_dir and init_policy"),
    (dict(phase="step3"), "'step3' is not a valid Phase"),
    (dict(precision="fp16"), "'fp16' is not a valid Precision"),
])
def test_a_bad_value_is_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(**changes)


def test_the_heads_chunk_and_width_must_match_the_loaders():
    with pytest.raises(ValueError, match=r"TrainerConfig.model.dit.chunk_len is 8 but loader.robot.chunk_len "
                                         r"is 30"):
        config(loader=CorpusLoader.Config(corpus_url="c.json", processor="p"))
    with pytest.raises(ValueError, match=r"TrainerConfig.choice.chunk_len is 30"):
        config(phase=Phase.STEP1_CHOICE, choice=ChoicePoliciesConfig())
    with pytest.raises(ValueError, match="loader.processor must name the Qwen3-VL processor"):
        config(loader=CorpusLoader.Config(corpus_url="c.json", robot=RobotSampleTransform.Config(chunk_len=CHUNK)))


def test_quantile_normalization_is_a_valid_choice():
    """The exported policy saves and inverts the loader's own `Normalize`, whichever its kind."""
    robot = RobotSampleTransform.Config(chunk_len=CHUNK, norm=NormKind.QUANTILE)
    made = config(loader=CorpusLoader.Config(corpus_url="c.json", processor="p", robot=robot))
    assert TrainerConfig.from_dict(made.to_dict()).loader.robot.norm is NormKind.QUANTILE


def test_the_config_survives_its_json_round_trip():
    made = config(phase=Phase.POSTTRAIN_ASYNC, precision=Precision.BF16, betas=(0.8, 0.9), warmup_steps=10,
                  model=dataclasses.replace(presets.vla_tiny(), attention="lambda"))
    again = TrainerConfig.from_dict(json.loads(json.dumps(made.to_dict())))
    assert again == made
    assert isinstance(again.loader.robot.image_size, tuple) and again.model.prefix.prefix_lengths == (1, 2, 3)
    with pytest.raises(ValueError, match="trainer config format"):
        TrainerConfig.from_dict({**made.to_dict(), "format": "other/9"})


def test_a_config_written_before_the_chunk_len_rename_still_loads():
    """Format 1 (tests/assets: written by that code, as `vlaforge train` wrote `trainer_config.json`) names the
    action chunk `chunk_length`; a resumed run reads it as `chunk_len`."""
    old = json.loads((ASSETS / "trainer_config_v1.json").read_text())
    assert old["format"] == "vlaforge.trainer-config/1" and old["model"]["dit"]["chunk_length"] == CHUNK
    loaded = TrainerConfig.from_dict(old)
    assert loaded.loader.robot.chunk_len == loaded.model.dit.chunk_len == loaded.choice.chunk_len == CHUNK
    assert loaded.phase is Phase.STEP1_CHOICE and loaded.loader.robot.image_size == (64, 64)
    written = json.dumps(loaded.to_dict())
    assert "chunk_length" not in written and TrainerConfig.from_dict(json.loads(written)) == loaded


def test_s3_credentials_are_never_written_into_the_config():
    from vlaforge.pipelines.shards.urls import ShardOpener
    from vlaforge.training.data.corpus_stream import CorpusStream

    opener = ShardOpener.Config(s3_options={"endpoint_url": "http://127.0.0.1:9000", "secret": "do-not-log"})
    with_secret = config(loader=dataclasses.replace(config().loader, stream=CorpusStream.Config(opener=opener)))
    with pytest.raises(ValueError, match=r"\['secret'\].*AWS_SECRET_ACCESS_KEY") as error:
        with_secret.to_dict()
    assert "do-not-log" not in str(error.value)


def _learning_rates(ds_config, steps):
    """The lr of each optimizer step under the schedule DeepSpeed builds from `ds_config` (same class, same params)."""
    import torch
    from deepspeed.runtime import lr_schedules

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = getattr(lr_schedules, ds_config["scheduler"]["type"])(optimizer, **ds_config["scheduler"]["params"])
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


@pytest.mark.parametrize("decay, end", [("linear", 0.0), ("cosine", 0.1)])
def test_decayed_learning_rates_warm_up_then_fall_to_where_the_config_says(decay, end):
    rates = _learning_rates(deepspeed_config(config(lr=1e-3, warmup_steps=10, max_steps=100, lr_decay=decay,
                                                    min_lr_ratio=end)), 100)
    peak = rates.index(max(rates))
    assert max(rates) == pytest.approx(1e-3, rel=1e-3) and 9 <= peak <= 11  # after the 10 warm-up steps
    assert rates[: peak + 1] == sorted(rates[: peak + 1]) and rates[peak:] == sorted(rates[peak:], reverse=True)
    assert rates[-1] == pytest.approx(1e-3 * end, abs=3e-5)


def test_a_constant_rate_without_warm_up_needs_no_scheduler_and_bad_ratios_are_refused():
    assert "scheduler" not in deepspeed_config(config())
    with pytest.raises(ValueError, match="min_lr_ratio must be in"):
        config(min_lr_ratio=1.5)


def test_validation_settings_are_checked():
    with pytest.raises(ValueError, match="eval_every >= 0 and eval_max_batches >= 1"):
        config(eval_every=-1)
    with pytest.raises(ValueError, match="eval_every >= 0 and eval_max_batches >= 1"):
        config(eval_every=10, eval_max_batches=0)
    assert TrainerConfig.from_dict(config(eval_every=10, eval_max_batches=5).to_dict()).eval_max_batches == 5
