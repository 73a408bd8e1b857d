"""The `pipeline` Prefect flow: raw data to a trained policy in one run. Robot ingests, VL ingests, the corpus
manifest, the training phases in order (each starting from the one before), then evaluation.

    pipeline(output="/work/run1", vlm="Qwen/Qwen3-VL-4B-Instruct",
             robot=[{"name": "droid", "source": "droid", "input_path": "/data/droid"}],
             vl=[{"name": "llava", "input_path": "/data/llava.json"}],
             phases=[{"recipe": "step1_choice"}, {"recipe": "step2_dit"}, {"recipe": "posttrain_async"}])

Everything is written under `output`: `datasets/<name>/`, `corpus/corpus.json`, `train/<n>-<recipe>/`. Each stage
is one subflow or task, so the flow run shows where it is; a rerun skips finished ingest units and resumes training
from its checkpoints. A phase starts from the previous phase's exported policy: step 2 from its `policy/vlm`,
post-training from its `policy/`; the first phase starts from `vlm`.

Evaluation is a hook: `evaluation` names an entry of `EVALUATIONS` (policy directory, corpus URL, output directory
-> metrics): "offline" (errors on held-out episodes), "aloha-transfer-cube" and "aloha-insertion" (closed loop in
gym-aloha through the policy server, `evaluation/`), or "none", which runs nothing and says so in the summary.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vlaforge.datasets.configurable import lookup
from vlaforge.flows.ingest import ingest
from vlaforge.flows.train import train
from vlaforge.flows.vl_ingest import ingest_vl
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus

Evaluation = Callable[[str, str, str], dict[str, Any]]


def offline_evaluation(policy: str, corpus: str, output: str) -> dict[str, Any]:
    """The policy's errors on the corpus's held-out episodes, per embodiment (`vlaforge eval offline`)."""
    from vlaforge.evaluation.offline_evaluation import OfflineEvalConfig, evaluate_offline

    config = OfflineEvalConfig(policy=pathlib.Path(policy), corpus=corpus, output=pathlib.Path(output) / "offline")
    return {"output": str(config.output), "embodiments": evaluate_offline(config)["embodiments"]}


def sim_evaluation(env: str) -> Evaluation:
    """50 asynchronous closed-loop episodes in `env` through the policy server (`vlaforge eval sim`)."""

    def run(policy: str, corpus: str, output: str) -> dict[str, Any]:
        from vlaforge.evaluation.sim_evaluation import SimEvalConfig, evaluate_in_sim

        config = SimEvalConfig(policy=policy, env=env, output=pathlib.Path(output) / env, mode="async")
        return {"output": str(config.output), "overall": evaluate_in_sim(config)["overall"]}

    return run


EVALUATIONS: dict[str, Evaluation | None] = {
    "none": None,
    "offline": offline_evaluation,
    "aloha-transfer-cube": sim_evaluation("aloha-transfer-cube"),
    "aloha-insertion": sim_evaluation("aloha-insertion"),
}
"""Evaluation name -> the function a finished pipeline runs on its policy (policy dir, corpus URL, output dir);
"none" evaluates nothing (the summary records it as skipped)."""


@task(name="build-corpus", cache_policy=NO_CACHE)
def corpus_task(inputs: list[dict[str, Any]], path: str, options: dict[str, Any]) -> str:
    """The corpus manifest over every dataset (`vlaforge corpus build`); its path. A dataset's "weight" is its
    share of its kind's draws (`CorpusConfig.weights`)."""
    weights = {**{i["name"]: i["weight"] for i in inputs if i.get("weight") is not None}, **options.pop("weights", {})}
    manifest = build_corpus([CorpusInput(path=pathlib.Path(i["path"]), kind=ComponentKind(i["kind"]), name=i["name"])
                             for i in inputs], pathlib.Path(path), CorpusConfig(**options, weights=weights))
    write_corpus(manifest, pathlib.Path(path))
    return path


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluation_task(name: str, policy: str | None, corpus: str, output: str) -> dict[str, Any]:
    evaluate = lookup(EVALUATIONS, name, what="evaluation")
    if evaluate is None:
        return {"evaluation": name, "skipped": True}
    if policy is None:
        raise ValueError(f"evaluation {name!r} needs a policy, but the last phase exported none (export=false?)")
    return {"evaluation": name, **evaluate(policy, corpus, output)}


def phase_start(recipe_phase: str, previous: pathlib.Path | None, vlm: str) -> dict[str, str]:
    """Where a phase starts: `vlm` for step 1 (or a first phase), the previous phase's policy VLM for step 2, the
    previous phase's policy for post-training."""
    if previous is None or recipe_phase == "step1_choice":
        if recipe_phase.startswith("posttrain"):
            raise ValueError("post-training starts from a policy: put a step 2 phase before it")
        return {"vlm": vlm}
    policy = previous / "policy"
    return {"vlm": str(policy / "vlm")} if recipe_phase == "step2_dit" else {"init_policy": str(policy)}


@flow(name="pipeline")
def pipeline(output: str, vlm: str, phases: list[dict[str, Any]], robot: list[dict[str, Any]] | None = None,
             vl: list[dict[str, Any]] | None = None, corpus: dict[str, Any] | None = None,
             evaluation: str = "none", runner: str = "ray", ray_address: str | None = None,
             workers: int | None = None, nproc: int = 1) -> dict[str, Any]:
    """Ingest, corpus, training phases, evaluation (see the module docstring); a summary of every stage.

    `robot`: {"name", "source", "input_path", "options"?, "source_options"?, "weight"?} per dataset; `vl`: {"name",
    "input_path", "input_format"?, "task"?, "limit"?, "weight"?}; `corpus`: `CorpusConfig` fields (ratio, seed);
    `phases`: {"recipe", "set"?: {key: value}} in order; `evaluation`: an `EVALUATIONS` name.
    """
    from vlaforge.training.recipes import RECIPES, phase_of

    logger = get_run_logger()
    lookup(EVALUATIONS, evaluation, what="evaluation")  # refuse a misspelt name before hours of work
    for phase in phases:
        lookup(RECIPES, phase["recipe"], what="recipe")
    root = pathlib.Path(output)
    inputs, summary = [], {"datasets": {}, "phases": []}
    for dataset in robot or []:
        target = str(root / "datasets" / dataset["name"])
        summary["datasets"][dataset["name"]] = ingest(
            dataset["source"], dataset["input_path"], target, options=dataset.get("options"),
            source_options=dataset.get("source_options"), runner=runner, ray_address=ray_address, workers=workers)
        inputs.append({"path": target, "kind": "robot", "name": dataset["name"], "weight": dataset.get("weight")})
    for dataset in vl or []:
        target = str(root / "datasets" / dataset["name"])
        summary["datasets"][dataset["name"]] = ingest_vl(
            dataset["input_path"], target, dataset=dataset["name"], input_format=dataset.get("input_format",
                                                                                              "vl-parquet"),
            task=dataset.get("task", "general"), limit=dataset.get("limit"), runner=runner,
            ray_address=ray_address, workers=workers)
        inputs.append({"path": target, "kind": "vl", "name": dataset["name"], "weight": dataset.get("weight")})
    corpus_url = corpus_task(inputs, str(root / "corpus" / "corpus.json"), corpus or {})
    logger.info("corpus manifest: %s", corpus_url)
    previous = None
    for index, phase in enumerate(phases, 1):
        target = root / "train" / f"{index}-{phase['recipe']}"
        start = phase_start(phase_of(phase["recipe"]).value, previous, vlm)
        summary["phases"].append(train(phase["recipe"], corpus_url, str(target), overrides=phase.get("set"),
                                       nproc=nproc, **start))
        previous = target
    policy = summary["phases"][-1]["policy"] if summary["phases"] else None
    summary["evaluation"] = evaluation_task(evaluation, policy, corpus_url, str(root / "evaluation"))
    return summary
