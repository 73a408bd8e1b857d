"""`vlaforge train --nproc 2`: torchrun starts 2 ranks of DeepSpeed ZeRO-2 (CPU accelerator, gloo) on the tiny
random-weight Qwen3-VL + DiT over the `small_corpus` fixture; then a fresh launch resumes a mid-run checkpoint."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil

import pytest
import torch

from vlaforge.flows import cli, train_cli
from vlaforge.training.checkpoint_engine import SafeCheckpointEngine
from vlaforge.training.model import presets
from vlaforge.training.model.vla import VLAModel
from vlaforge.training.model.vlm import VLMBackbone
from vlaforge.training.policy.policy import Policy
from vlaforge.training.trainer import POLICY_DIR, TRAIN_LOG, checkpoint_tag

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    """A tiny random-weight Qwen3-VL and its processor, saved as a Hugging Face checkpoint."""
    torch.manual_seed(4321)
    directory = tmp_path_factory.mktemp("tiny-qwen3-vl")
    VLMBackbone.from_config(presets.qwen3_vl_tiny(), num_kv_layers=2).save_pretrained(directory)
    presets.tiny_processor().save_pretrained(directory)
    return directory


def train(corpus, vlm_dir, output, *extra: str) -> list[dict]:
    # Chunks of 4: the small_corpus fixture stores 4-step chunks. Async post-training: noise, τ and prefix draws,
    # the Λ mask and error weights all take part in the losses a resume must repeat.
    argv = ["train", "--phase", "posttrain_async", "--corpus", str(corpus), "--vlm", str(vlm_dir), "--output",
            str(output), "--nproc", "2", "--model", "tiny", "--chunk-len", "4", "--cameras", "exterior_1",
            "--image-size", "32x32", "--workers", "1", "--micro-batch-size", "2", "--grad-accum", "2",
            "--max-steps", "4", "--save-every", "2", "--lr", "1e-3", "--seed", "11", "--log-sample-keys", *extra]
    assert cli.main(argv) == 0
    return [json.loads(line) for line in (output / TRAIN_LOG).read_text().splitlines()]


def test_two_ranks_train_save_and_a_fresh_launch_resumes_to_the_same_losses(small_corpus, vlm_dir, tmp_path):
    losses = train(small_corpus, vlm_dir, tmp_path / "full")
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in losses)
    assert sum(r["robot_samples"] + r["vl_samples"] for r in losses) == 4 * 2 * 2 * 2  # steps x accum x batch x ranks
    ranks = [(tmp_path / "full" / "samples" / f"rank{r}.jsonl").read_text().splitlines() for r in (0, 1)]
    keys = [{key for line in lines for key in json.loads(line)["keys"]} for lines in ranks]
    assert len(keys[0]) == len(keys[1]) == 16 and not keys[0] & keys[1]  # the loader shards by rank

    exported = Policy.from_pretrained(tmp_path / "full" / POLICY_DIR)
    initial = VLAModel.from_vlm_pretrained(str(vlm_dir), exported.model.config)
    for before, after in ((initial.vlm, exported.model.vlm), (initial.dit, exported.model.dit)):
        reference = dict(before.named_parameters())
        assert any(not torch.equal(reference[name], value) for name, value in after.named_parameters())
    assert exported.normalize.embodiments == ["arm_a", "arm_b"]
    for path in (tmp_path / "full" / "checkpoints" / checkpoint_tag(2)).glob("*.pt"):  # what a resume reads
        assert SafeCheckpointEngine().load(str(path))

    # The checkpoint of step 2, alone in a fresh output directory, resumed by a fresh launch.
    resumed = tmp_path / "resumed"
    tag = checkpoint_tag(2)
    shutil.copytree(tmp_path / "full" / "checkpoints" / tag, resumed / "checkpoints" / tag)
    (resumed / "checkpoints" / "latest").write_text(tag)
    again = train(small_corpus, vlm_dir, resumed)
    assert [r["step"] for r in again] == [3, 4]
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in run] for run in (losses[2:], again)]
    assert timeless[0] == timeless[1]  # bit for bit: losses, grad norms, sample counts


def test_the_old_chunk_length_flag_still_works_hidden_and_named_deprecated(capsys):
    parser = argparse.ArgumentParser(prog="vlaforge")
    train_cli.add_parser(parser.add_subparsers(dest="verb"))
    common = ["train", "--phase", "step2_dit", "--corpus", "c.json", "--vlm", "v", "--output", "o", "--model", "tiny"]
    new = train_cli.build_config(parser.parse_args([*common, "--chunk-len", "4"]))
    assert capsys.readouterr().err == ""
    old = train_cli.build_config(parser.parse_args([*common, "--chunk-length", "4"]))
    assert "--chunk-length is deprecated; use --chunk-len" in capsys.readouterr().err
    assert old == new and new.model.dit.chunk_len == new.loader.robot.chunk_len == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    assert "--chunk-len" in shown and "--chunk-length" not in shown


def test_the_cli_lists_the_phases_and_model_presets_the_trainer_knows():
    from vlaforge.training.model.phase import Phase
    from vlaforge.training.train_recipe import MODEL_PRESETS

    assert train_cli.PHASES == tuple(phase.value for phase in Phase)
    assert train_cli.MODELS == tuple(MODEL_PRESETS)


class _RunsCode:
    """Unpickling this calls os.getcwd: any callable could stand there."""

    def __reduce__(self):
        import os

        return os.getcwd, ()


def test_a_checkpoint_file_that_names_any_other_callable_is_refused_not_run(tmp_path):
    torch.save({"global_steps": 3, "extra": _RunsCode()}, tmp_path / "model_states.pt")
    with pytest.raises(pickle.UnpicklingError, match="getcwd"):
        SafeCheckpointEngine().load(str(tmp_path / "model_states.pt"))


def test_on_bad_sample_sets_the_loaders_policy_and_budget():
    parser = argparse.ArgumentParser(prog="vlaforge")
    train_cli.add_parser(parser.add_subparsers(dest="verb"))
    common = ["train", "--phase", "step2_dit", "--corpus", "c.json", "--vlm", "v", "--output", "o", "--model", "tiny"]
    default = train_cli.build_config(parser.parse_args(common)).loader
    assert default.bad_samples.value == "raise"
    skipping = train_cli.build_config(parser.parse_args([*common, "--on-bad-sample", "skip",
                                                         "--max-bad-fraction", "0.002"]))
    assert skipping.loader.bad_samples.value == "skip" and skipping.loader.bad_sample_budget.max_fraction == 0.002
    from vlaforge.training.trainer_config import TrainerConfig

    assert TrainerConfig.from_dict(skipping.to_dict()).loader == skipping.loader  # what torchrun's ranks read back
    with pytest.raises(SystemExit):
        parser.parse_args([*common, "--on-bad-sample", "ignore"])
