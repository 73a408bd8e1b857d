"""`PolicyEvalCommand`: the trainer's policy callback as a command line, so torchrun's ranks can rebuild it from the
saved `TrainerConfig` (a Python callable cannot travel in JSON).

    command = ("vlaforge", "eval", "sim", "--policy", "{policy}", "--env", "aloha-insertion", "--output", "{output}")

`{policy}` becomes the exported policy directory and `{output}` a fresh directory beside it; the command runs to
completion (the training waits), and the scalar metrics of its `{output}/results.json` (its `overall` section when
it has one, as `vlaforge eval sim` writes) come back to the trainer, which logs them. The training never imports
what the command runs: any evaluator that writes a results.json fits.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

PolicyCallback = Callable[[int, pathlib.Path], Mapping[str, Any]]
"""(optimizer step, exported policy directory) -> metrics to log; called on rank 0."""
RESULTS_FILE = "results.json"
OUTPUT_DIR = "results"


class PolicyEvalCommand:
    """Run `command` on a policy directory and return its results' scalar metrics (see the module docstring)."""

    def __init__(self, command: Sequence[str]) -> None:
        if not command or not any("{policy}" in part for part in command):
            raise ValueError(f"a policy evaluation command must name the policy as {{policy}}, got {list(command)}")
        self.command = tuple(command)

    def __call__(self, step: int, policy: pathlib.Path) -> dict[str, Any]:
        output = policy.parent / OUTPUT_DIR
        # Plain replacement, not str.format: other arguments may hold braces of their own (JSON, a script).
        argv = [part.replace("{policy}", str(policy)).replace("{output}", str(output)) for part in self.command]
        completed = subprocess.run(argv, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"policy evaluation at step {step} failed (exit code {completed.returncode}): "
                               f"{' '.join(argv)}\n{tail}")
        results_file = output / RESULTS_FILE
        if not results_file.is_file():
            return {"results": None}
        document = json.loads(results_file.read_text())
        summary = document.get("overall", document)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
        return {**metrics, "results": str(results_file)}
