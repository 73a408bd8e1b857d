"""The training end of `vlaforge demo`: batches of both kinds streamed from the corpus by `CorpusLoader`, a few steps
of pre-training step 1 of the tiny VLA model on DeepSpeed ZeRO-2 with 2 processes (`vlaforge train`, evaluating a
mid-training policy closed loop with `--eval-sim`), and a short closed-loop evaluation of the policy it exported in
gym-aloha (`vlaforge eval sim`)."""

from __future__ import annotations

import pathlib

from rich.console import Console
from rich.table import Table

from vlaforge.flows.demo_steps import DemoSizes


def stream_batches(corpus: pathlib.Path, vlm_dir: pathlib.Path, sizes: DemoSizes, console: Console) -> list:
    """Step 6: `sizes.batches` CorpusBatches from the corpus manifest (2 DataLoader workers, VL:robot 1:6, mixed
    batches), tokenized by the tiny Qwen3-VL's processor."""
    import itertools

    from vlaforge.training.data.collate import Batcher, MixPolicy
    from vlaforge.training.data.corpus_loader import CorpusLoader
    from vlaforge.training.data.robot_transform import RobotSampleTransform
    from vlaforge.training.model import presets

    console.rule("6. the corpus loader: robot and VL batches by corpus URL (`training/data/corpus_loader.py`)")
    chunk = presets.vla_tiny().dit.chunk_len
    config = CorpusLoader.Config(
        corpus_url=str(corpus), processor=str(vlm_dir), num_workers=2,
        robot=RobotSampleTransform.Config(image_size=(64, 64), chunk_len=chunk),
        batch=Batcher.Config(batch_size=sizes.batch_size, policy=MixPolicy.MIXED),
    )
    with CorpusLoader(config) as loader:
        batches = list(itertools.islice(loader, sizes.batches))
    table = Table(title=f"{len(batches)} batches of {sizes.batch_size} from {corpus} (processor: {vlm_dir})")
    for column in ("batch", "robot samples by component", "VL samples by task", "shapes"):
        table.add_column(column)
    for index, batch in enumerate(batches, 1):
        table.add_row(str(index), _counts(batch.robot.components if batch.robot else []),
                      _counts(batch.vl.tasks if batch.vl else []), _shapes(batch))
    console.print("robot: frames [B, cameras, H, W, 3], action chunks [B, T, 32] normalized and padded; VL: token ids "
                  "[B, S] through the processor's chat template, labels on the answers only")
    console.print(table)
    return batches


def _counts(names: list[str]) -> str:
    from collections import Counter

    return ", ".join(f"{name} {n}" for name, n in sorted(Counter(names).items())) or "-"


def _shapes(batch) -> str:
    parts = []
    if batch.robot is not None:
        parts.append(f"frames {list(batch.robot.images.shape)} actions {list(batch.robot.actions.shape)}")
    if batch.vl is not None:
        parts.append(f"VL ids {list(batch.vl.inputs['input_ids'].shape)}")
    return "\n".join(parts)


def train_steps(corpus: pathlib.Path, vlm_dir: pathlib.Path, output: pathlib.Path, sizes: DemoSizes,
                console: Console, *, eval_sim: bool) -> tuple[list[dict], list[dict]]:
    """Step 7: `sizes.batches` optimizer steps of pre-training step 1 (the tiny Qwen3-VL learning actions with
    Choice Policies, co-trained on the VL samples) on DeepSpeed ZeRO-2 with 2 processes over gloo, through the
    `vlaforge train` command; with `eval_sim`, `--eval-sim` runs a gym-aloha episode on the policy of every K-th step
    (`sizes.eval_during_training`). Returns its `train_log.jsonl` lines (losses averaged over ranks) and its
    `policy_eval_log.jsonl` lines."""
    import argparse
    import json
    import shutil

    from vlaforge.flows import train_cli
    from vlaforge.training.trainer import POLICY_EVAL_LOG, TRAIN_LOG

    console.rule("7. training: pre-training step 1 on DeepSpeed ZeRO-2, 2 processes (`vlaforge train`)")
    console.print("the tiny random-weight model: these steps show the batches train end to end, not a useful model",
                  style="bold yellow")
    train_dir = output / "train"
    shutil.rmtree(train_dir, ignore_errors=True)  # a rerun of the demo trains again rather than resuming at the end
    parser = argparse.ArgumentParser(prog="vlaforge")
    train_cli.add_parser(parser.add_subparsers(dest="verb"))
    argv = ["train", "--recipe", "step1_choice_tiny", "--corpus", str(corpus), "--vlm", str(vlm_dir), "--output",
            str(train_dir), "--nproc", "2", "--set", f"max_steps={sizes.batches}", "--set",
            f"micro_batch_size={sizes.batch_size // 2}", "--set", "loader.robot.image_size=[64,64]", "--set",
            "loader.num_workers=1"]
    if eval_sim:
        every, steps = sizes.eval_during_training
        argv += ["--eval-sim", CLOSED_LOOP_ENV, "--eval-sim-every", str(every), "--eval-sim-episodes", "1",
                 "--eval-sim-max-steps", str(steps)]
    console.print("$ vlaforge " + " ".join(argv), markup=False)
    if train_cli.run(parser.parse_args(argv), console) != 0:
        raise RuntimeError(f"training failed; its log is under {train_dir}")
    policy_evals = train_dir / POLICY_EVAL_LOG
    return ([json.loads(line) for line in (train_dir / TRAIN_LOG).read_text().splitlines()],
            [json.loads(line) for line in policy_evals.read_text().splitlines()] if policy_evals.exists() else [])


CLOSED_LOOP_ENV = "aloha-transfer-cube"
"""The bimanual ALOHA task: the demo's teleop datasets are that robot (`bimanual_2x6dof`, 14-D joints)."""


def closed_loop(policy: pathlib.Path, output: pathlib.Path, steps: int, console: Console,
                problem: str | None) -> dict | None:
    """Step 8: the exported policy drives gym-aloha's simulated robot through the policy server, one short episode
    of asynchronous execution (`vlaforge eval sim`, through the `evaluate` flow); its results.json document, or
    None where MuJoCo cannot render offscreen here (`problem` says why; said, not hidden)."""
    from vlaforge.flows.eval_cli import sim_table
    from vlaforge.flows.evaluate import evaluate

    console.rule(f"8. closed loop: the trained policy drives {CLOSED_LOOP_ENV} (`vlaforge eval sim`)")
    if problem is not None:
        console.print(f"skipped: {problem}", style="bold yellow", markup=False)
        return None
    target = output / "eval-sim"
    argv = ["eval", "sim", "--policy", str(policy), "--env", CLOSED_LOOP_ENV, "--episodes", "1", "--max-steps",
            str(steps), "--mode", "async", "--videos", "1", "--image-size", "64x64", "--output", str(target)]
    console.print("$ vlaforge " + " ".join(argv), markup=False)
    console.print("3 training steps of a tiny random-weight model do not make a policy that succeeds: this shows the "
                  "loop (server, simulator process, asynchronous chunks), not skill", style="bold yellow")
    results = evaluate(kind="sim", options={
        "policy": str(policy), "env": CLOSED_LOOP_ENV, "episodes": 1, "max_steps": steps, "mode": "async",
        "videos": 1, "image_size": (64, 64), "output": str(target)})
    console.print(sim_table(results))
    console.print(f"open {target / 'summary.html'} (the episode's video is in {target / 'videos'})", markup=False)
    return results
