"""`vlaforge train --eval-sim ENV --eval-sim-every K`: the trainer's policy evaluation as a `vlaforge eval sim`
command. The whole chain (torchrun ranks, the command, the simulator, policy_eval_log.jsonl) runs in the demo's
training step and tests/flows/test_demo.py checks it."""

import json
import subprocess
import sys

import pytest

from vlaforge.flows.cli import build_parser
from vlaforge.flows.train_cli import build_config, eval_sim_command, with_policy_evaluation
from vlaforge.training.trainer_config import TrainerConfig

BASE = ["train", "--recipe", "posttrain_sync_tiny", "--corpus", "c.json", "--vlm", "vlm", "--output", "out",
        "--set", "loader.robot.image_size=[64,64]"]


def parse(*extra):
    return build_parser().parse_args([*BASE, *extra])


def test_the_flags_become_the_trainers_policy_evaluation_command():
    args = parse("--eval-sim", "aloha-insertion", "--eval-sim-every", "500", "--eval-sim-episodes", "20",
                 "--eval-sim-max-steps", "200")
    command = eval_sim_command(args, (64, 64))
    assert command[:3] == (sys.executable, "-m", "vlaforge.flows.cli")
    assert command[3:] == ("eval", "sim", "--policy", "{policy}", "--env", "aloha-insertion", "--episodes", "20",
                           "--videos", "0", "--output", "{output}", "--image-size", "64x64", "--max-steps", "200")
    config = build_config(parse())
    changed = with_policy_evaluation(config, args)
    assert changed.policy_eval_every == 500 and changed.policy_eval_command == command
    assert TrainerConfig.from_dict(json.loads(json.dumps(changed.to_dict()))).policy_eval_command == command
    assert with_policy_evaluation(config, parse()) == config
    with pytest.raises(ValueError, match="--eval-sim ENV and --eval-sim-every K go together"):
        with_policy_evaluation(config, parse("--eval-sim", "aloha-insertion"))


def test_the_command_is_one_the_cli_accepts():
    args = parse("--eval-sim", "aloha-transfer-cube", "--eval-sim-every", "1")
    argv = [part.replace("{policy}", "p").replace("{output}", "o") for part in eval_sim_command(args, (64, 64))[3:]]
    parsed = build_parser().parse_args(argv)
    assert (parsed.kind, parsed.env, parsed.image_size, parsed.videos) == ("sim", "aloha-transfer-cube", (64, 64), 0)
    help_text = subprocess.run([sys.executable, "-m", "vlaforge.flows.cli", "eval", "sim", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--policy POLICY" in help_text
