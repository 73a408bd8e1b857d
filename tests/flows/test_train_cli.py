"""`vlaforge train`: recipes and `--set`, the launch command for one node, several nodes and DeepSpeed's launcher,
and for real: torchrun starts 2 ranks of DeepSpeed ZeRO-2 (CPU accelerator, gloo) on the tiny random-weight Qwen3-VL
+ DiT over the `small_corpus` fixture, then a fresh launch resumes a mid-run checkpoint."""

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
from vlaforge.training.trainer import POLICY_DIR, TIMING_FIELDS, TRAIN_LOG, checkpoint_tag

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    """A tiny random-weight Qwen3-VL and its processor, saved as a Hugging Face checkpoint."""
    torch.manual_seed(4321)
    directory = tmp_path_factory.mktemp("tiny-qwen3-vl")
    VLMBackbone.from_config(presets.qwen3_vl_tiny(), num_kv_layers=2).save_pretrained(directory)
    presets.tiny_processor().save_pretrained(directory)
    return directory


TINY_RUN = ["--set", "chunk_len=4", "--set", 'loader.robot.cameras=["exterior_1"]', "--set",
            "loader.robot.image_size=[32,32]", "--set", "micro_batch_size=2", "--set", "seed=11"]
"""Settings on top of a tiny recipe for the small_corpus fixture (it stores 4-step chunks)."""


def train(corpus, vlm_dir, output, *extra: str) -> list[dict]:
    # Async post-training: noise, τ and prefix draws, prefix-key dropping, the Λ mask and sampled error weights all
    # take part in the losses a resume must repeat; VL co-training on, so both kinds are read.
    argv = ["train", "--recipe", "posttrain_async_tiny", "--corpus", str(corpus), "--vlm", str(vlm_dir),
            "--output", str(output), "--nproc", "2", *TINY_RUN, "--set", "gradient_accumulation=2",
            "--set", "max_steps=4", "--set", "save_every=2", "--set", "vl_co_training=true",
            "--set", "log_sample_keys=true", "--set", "freeze=[]", *extra]
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
    timeless = [[{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in run] for run in (losses[2:], again)]
    assert timeless[0] == timeless[1]  # bit for bit: losses, grad norms, sample counts


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vlaforge")
    train_cli.add_parser(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["train", *argv])


COMMON = ("--corpus", "c.json", "--vlm", "v", "--output", "o")


def test_the_old_flags_still_work_hidden_and_name_the_recipe_and_set_that_replace_them(capsys):
    new = train_cli.build_config(parse("--recipe", "step2_dit_tiny", "--set", "chunk_len=4", *COMMON))
    assert capsys.readouterr().err == ""
    old = train_cli.build_config(parse("--phase", "step2_dit", "--model", "tiny", "--chunk-length", "4", *COMMON))
    notes = capsys.readouterr().err
    assert "--chunk-length is deprecated; use --set chunk_len=4" in notes
    assert "--phase/--model are deprecated; use --recipe step2_dit_tiny" in notes
    assert old == new and new.model.dit.chunk_len == new.loader.robot.chunk_len == new.choice.chunk_len == 4
    with pytest.raises(SystemExit):
        parse("--help")
    shown = capsys.readouterr().out
    assert "--recipe" in shown and "--set" in shown and "--chunk-length" not in shown and "--phase" not in shown


def test_the_cli_lists_the_recipes_the_registry_holds():
    from vlaforge.training.recipes import RECIPES

    assert train_cli.RECIPES == tuple(RECIPES)


def test_set_changes_any_field_and_a_misspelt_one_is_answered_with_the_closest(capsys):
    config = train_cli.build_config(parse("--recipe", "posttrain_async_tiny", "--set", "model.prefix.weight_per=sample",
                                          "--set", "model.dit.attention_window=1", "--set", "choice.num_candidates=2",
                                          "--set", 'param_groups=[{"pattern": "model.dit.*", "lr_scale": 2}]',
                                          *COMMON))
    assert config.model.prefix.weight_per.value == "sample" and config.model.dit.attention_window == 1
    assert config.choice.num_candidates == 2 and config.param_groups[0].lr_scale == 2
    assert cli.main(["train", "--recipe", "step2_dit_tiny", "--set", "model.flow.num_step=3", *COMMON]) == 2
    assert "did you mean 'num_steps'?" in capsys.readouterr().err


def test_the_resolved_config_is_printed_and_saved_with_the_run(tmp_path, capsys, small_corpus, vlm_dir):
    argv = ["train", "--recipe", "step2_dit_tiny", "--corpus", str(small_corpus), "--vlm", str(vlm_dir),
            "--output", str(tmp_path), "--set", "max_steps=7", "--print-config"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["max_steps"] == 7 and printed["phase"] == "step2_dit" and printed["loader"]["kinds"] == ["robot"]
    assert not (tmp_path / train_cli.CONFIG_FILE).exists()


@pytest.mark.parametrize(("argv", "expected"), [
    ((), None),
    (("--nproc", "2"), ["--nproc-per-node", "2", "--standalone"]),
    (("--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29600"),
     ["--nproc-per-node", "1", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
      "--master-port", "29600"]),
    (("--nnodes", "4", "--nproc", "8", "--master-addr", "node0", "--rdzv-id", "job7"),
     ["--nproc-per-node", "8", "--nnodes", "4", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node0:29500",
      "--rdzv-id", "job7"]),
])
def test_the_launch_command_for_one_node_static_and_c10d_rendezvous(argv, expected, tmp_path):
    args = parse(*COMMON, *argv)
    command = train_cli.launch_command(args, tmp_path / "trainer_config.json")
    if expected is None:
        assert command is None  # one process on one node runs in this process
        return
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert command[3:-4] == expected
    assert command[-4:] == ["-m", train_cli.ENTRY, "--config", str(tmp_path / "trainer_config.json")]


def test_the_deepspeed_launcher_takes_a_hostfile(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=8\nnode1 slots=8\n")
    args = parse(*COMMON, "--launcher", "deepspeed", "--hostfile", str(hostfile), "--master-addr", "node0")
    train_cli._check_launch(args)
    command = train_cli.launch_command(args, tmp_path / "c.json")
    assert command[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert command[3:9] == ["--hostfile", str(hostfile), "--master_addr", "node0", "--master_port", "29500"]
    assert command[9:] == ["--module", train_cli.ENTRY, "--config", str(tmp_path / "c.json")]
    for bad, message in ((("--launcher", "deepspeed"), "goes with --hostfile"),
                         (("--nnodes", "2", "--node-rank", "2"), "--node-rank must be in"),
                         (("--launcher", "deepspeed", "--hostfile", str(tmp_path / "none")), "no such file")):
        with pytest.raises(ValueError, match=message):
            train_cli._check_launch(parse(*COMMON, *bad))


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


def test_the_closing_tables_show_every_loss_whole_in_an_80_column_terminal(tmp_path):
    from rich.console import Console

    log = tmp_path / "train_log.jsonl"
    record = {"loss": 13.694012, "flow_matching": None, "choice": 12.123456, "next_token": 10.5432109,
              "robot_samples": 100, "vl_samples": 20, "lr": 1e-4, "grad_norm": 123.4567, "seconds": 1234.5678,
              "data_wait_share": 0.0123, "samples_per_s": 1234.5678}
    log.write_text("\n".join(json.dumps({"step": step, **record}) for step in (1, 2, 3)))
    console = Console(width=80, record=True)
    for table in train_cli._log_tables(log):
        console.print(table)
    shown = console.export_text()
    assert "…" not in shown  # rich cuts cells that do not fit
    assert shown.count("13.6940") == shown.count("12.1235") == shown.count("10.5432") == 3
    assert shown.count("1.2%") == 3 and shown.count("123.4567") == 3
