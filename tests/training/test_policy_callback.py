"""The trainer's policy-evaluation hook: every K steps rank 0 exports that step's policy and hands it to a callback
(in-process) or a command (runs torchrun starts), and the metrics it returns land in `policy_eval_log.jsonl`."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from vlaforge.training import train_main
from vlaforge.training.data.collate import Batcher
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.model import presets
from vlaforge.training.model.phase import Phase
from vlaforge.training.policy.policy import Policy
from vlaforge.training.policy_eval_command import PolicyEvalCommand
from vlaforge.training.trainer import POLICY_EVAL_LOG, Trainer
from vlaforge.training.trainer_config import TrainerConfig

pytestmark = pytest.mark.slow

CHUNK = 4  # the small_corpus fixture stores 4-step chunks


def tiny_config(corpus, vlm_dir, output, **changes) -> TrainerConfig:
    """Post-training of the tiny model on the small corpus, 2 steps of 2 samples (as tests/training/test_trainer.py)."""
    model = dataclasses.replace(presets.vla_tiny(), dit=dataclasses.replace(presets.dit_tiny(), chunk_len=CHUNK))
    loader = CorpusLoader.Config(
        corpus_url=str(corpus), processor=str(vlm_dir), num_workers=1,
        robot=RobotSampleTransform.Config(cameras=("exterior_1",), image_size=(32, 32), chunk_len=CHUNK),
        batch=Batcher.Config(batch_size=2))
    defaults = dict(phase=Phase.POSTTRAIN_SYNC, loader=loader, output_dir=str(output), vlm_dir=str(vlm_dir),
                    model=model, lr=1e-3, max_steps=2, micro_batch_size=2, save_every=100, seed=11)
    return TrainerConfig(**{**defaults, **changes})


def test_every_k_steps_the_callback_gets_that_steps_exported_policy(small_corpus, tiny_vlm_dir, tmp_path):
    seen = []

    def callback(step, directory):
        policy = Policy.from_pretrained(directory)  # a complete export, loadable as any policy
        seen.append((step, directory.relative_to(tmp_path / "run").as_posix(), policy.chunk_len))
        return {"success_rate": step / 10, "episodes": 2}

    config = tiny_config(small_corpus, tiny_vlm_dir, tmp_path / "run", max_steps=3, policy_eval_every=2)
    train_main.run(config, single_process=True, policy_callback=callback)
    assert seen == [(2, "policy_evals/step00000002/policy", 4)]
    lines = [json.loads(line) for line in (tmp_path / "run" / POLICY_EVAL_LOG).read_text().splitlines()]
    assert lines == [{"step": 2, "success_rate": 0.2, "episodes": 2}]
    assert (tmp_path / "run" / "policy" / "policy.json").is_file()  # the final export is still where it was


def test_the_command_form_survives_the_config_file_and_returns_the_results_metrics(tmp_path):
    script = ("import json, pathlib, sys; out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True); "
              "(out / 'results.json').write_text(json.dumps({'overall': {'success_rate': 0.5, 'episodes': 4, "
              "'latency_ms': {'p50': 3.0}}, 'settings': {'policy': sys.argv[1]}}))")
    command = (sys.executable, "-c", script, "{policy}", "{output}")
    policy = tmp_path / "policy_evals" / "step00000004" / "policy"
    policy.mkdir(parents=True)
    metrics = PolicyEvalCommand(command)(4, policy)
    assert metrics == {"success_rate": 0.5, "episodes": 4,
                       "results": str(tmp_path / "policy_evals" / "step00000004" / "results" / "results.json")}
    failing = PolicyEvalCommand((sys.executable, "-c", "import sys; sys.exit('no simulator')", "{policy}"))
    with pytest.raises(RuntimeError, match=r"policy evaluation at step 4 failed \(exit code 1\).*no simulator"):
        failing(4, policy)
    with pytest.raises(ValueError, match=r"must name the policy as \{policy\}"):
        PolicyEvalCommand(("vlaforge", "eval", "sim"))


def test_an_interval_without_a_callback_is_refused(small_corpus, tiny_vlm_dir, tmp_path):
    config = tiny_config(small_corpus, tiny_vlm_dir, tmp_path, policy_eval_every=1)
    with pytest.raises(ValueError, match="policy_eval_every=1 needs a policy callback: set policy_eval_command"):
        Trainer(config)
    command = ("vlaforge", "eval", "sim", "--policy", "{policy}", "--output", "{output}")
    with_command = tiny_config(small_corpus, tiny_vlm_dir, tmp_path, policy_eval_every=1, policy_eval_command=command)
    assert TrainerConfig.from_dict(json.loads(json.dumps(with_command.to_dict()))) == with_command
    assert Trainer(with_command).policy_callback.command == command
