"""The `train` Prefect flow: one phase of the recipe (`vlaforge train` in a child process), its log streamed into
the flow run line by line, its final metrics published as a table artifact and returned.

    train(recipe="posttrain_async", corpus="s3://b/corpus.json", output="/runs/post", init_policy="/runs/s2/policy",
          overrides={"max_steps": 80000}, nproc=8)

The command runs in a child process because training owns its process (DeepSpeed's process group, torchrun's
workers, the loader's forked workers) and must not share it with Prefect's services. A rerun resumes from the run's
latest checkpoint, like the command.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

SUMMARY_FIELDS = ("step", "loss", "flow_matching", "choice", "next_token", "grad_norm", "lr", "samples_per_s",
                  "tokens_per_s", "data_wait_share", "mfu")


def train_argv(recipe: str, corpus: str, output: str, *, vlm: str | None = None, init_policy: str | None = None,
               overrides: dict[str, Any] | None = None, nproc: int = 1, nnodes: int = 1,
               node_rank: int | None = None, master_addr: str = "127.0.0.1", master_port: int = 29500) -> list[str]:
    """The `vlaforge train` arguments of one phase."""
    start = ["--vlm", vlm] if vlm is not None else ["--init-policy", str(init_policy)]
    argv = ["train", "--recipe", recipe, "--corpus", corpus, "--output", output, *start, "--nproc", str(nproc),
            "--nnodes", str(nnodes), "--master-addr", master_addr, "--master-port", str(master_port)]
    if node_rank is not None:
        argv += ["--node-rank", str(node_rank)]
    for key, value in (overrides or {}).items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return argv


def summary_of(output: pathlib.Path) -> dict[str, Any]:
    """The run's last logged step, last validation pass and launch facts (`run.json`)."""
    def last(name: str) -> dict[str, Any] | None:
        path = output / name
        lines = path.read_text().splitlines() if path.exists() else []
        return json.loads(lines[-1]) if lines else None

    run = output / "run.json"
    policy = output / "policy"
    return {"output": str(output), "last_step": last("train_log.jsonl"), "last_eval": last("eval_log.jsonl"),
            "run": json.loads(run.read_text()) if run.exists() else None,
            "policy": str(policy) if policy.is_dir() else None}


@flow(name="train")
def train(recipe: str, corpus: str, output: str, vlm: str | None = None, init_policy: str | None = None,
          overrides: dict[str, Any] | None = None, nproc: int = 1, nnodes: int = 1, node_rank: int | None = None,
          master_addr: str = "127.0.0.1", master_port: int = 29500) -> dict[str, Any]:
    """Train one phase (see the module docstring); returns `summary_of(output)`."""
    logger = get_run_logger()
    argv = train_argv(recipe, corpus, output, vlm=vlm, init_policy=init_policy, overrides=overrides, nproc=nproc,
                      nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port)
    logger.info("vlaforge %s", " ".join(argv))
    # -v: the trainer's per-step lines (INFO) are the log a watcher follows.
    process = subprocess.Popen([sys.executable, "-m", "vlaforge.flows.cli", "-v", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        logger.info(line.rstrip())
    if process.wait() != 0:
        raise RuntimeError(f"vlaforge train exited with {process.returncode}; its log is in this flow run")
    summary = summary_of(pathlib.Path(output))
    step = summary["last_step"] or {}
    rows = [{"metric": name, "value": step.get(name)} for name in SUMMARY_FIELDS]
    rows += [{"metric": f"eval {k}", "value": v} for k, v in (summary["last_eval"] or {}).items() if k != "step"]
    create_table_artifact(key="train-metrics", table=rows, description=f"{recipe} -> {output}: the last step")
    return summary
