"""`MetricsLog`: where a run's numbers go, on rank 0. One JSON line per record in `train_log.jsonl` /
`eval_log.jsonl`, and the same numbers as TensorBoard scalars (`tensorboard/`, tags `train/<name>`, `eval/<name>`).

On a resumed run the lines written after the checkpoint (before the crash) are dropped, and TensorBoard is told to
purge its events from the resumed step on, so no step is shown twice.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"
EVAL_LOG = "eval_log.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """JSONL files plus TensorBoard event files under `output`, from step `resumed_at` on."""

    def __init__(self, output: pathlib.Path, *, resumed_at: int, tensorboard: bool) -> None:
        self.output = output
        for name in (TRAIN_LOG, EVAL_LOG):
            truncate_after(output / name, resumed_at)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(output / TENSORBOARD_DIR), purge_step=resumed_at + 1)

    def train(self, record: Mapping[str, Any]) -> None:
        self._write(TRAIN_LOG, "train", record)

    def eval(self, record: Mapping[str, Any]) -> None:
        self._write(EVAL_LOG, "eval", record)

    def _write(self, name: str, tag: str, record: Mapping[str, Any]) -> None:
        append_line(self.output / name, record)
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{tag}/{key}", value, record["step"])
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def truncate_after(path: pathlib.Path, step: int) -> None:
    """Drop a JSONL log's lines past `step` (written after the checkpoint a run resumes from)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def append_line(path: pathlib.Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")
