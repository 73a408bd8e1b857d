"""`EpisodeRecord`: one simulated episode as the environment process writes it, one JSON line in `episodes.jsonl`.

The line is the commit point of an episode: a rerun of the same evaluation skips every episode already recorded,
and a crash loses at most the episode in progress.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

EPISODES_FILE = "episodes.jsonl"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpisodeRecord:
    """What happened in one episode, and where its time went."""

    task: str
    """Task name (the environment's for single-task environments, LIBERO's task name otherwise)."""
    task_index: int
    episode: int
    """Index of the episode within its task (LIBERO: the initial state it starts from)."""
    seed: int
    """Environment seed: the same in synchronous and asynchronous runs of one evaluation seed."""
    mode: str
    """`sync` or `async`."""
    success: bool
    total_return: float
    """Sum of the rewards."""
    max_reward: float
    length: int
    """Control steps executed."""
    inferences: int
    """Requests to the policy server."""
    actions_per_inference: float
    latencies_ms: list[float]
    """Client-measured round trip of each request."""
    server_infer_ms: list[float | None]
    """The server's own time per request (observation mapping and the policy)."""
    policy_infer_ms: list[float | None]
    """The policy's own inference time per request, as the server reported it."""
    starved_ticks: int
    """Ticks the robot had no committed action (asynchronous mode; must be 0 in simulation)."""
    late_switches: int
    jerk_at_switch: float | None
    """Mean |d³a/dt³| over 4-tick windows spanning a chunk switch (action units / s³)."""
    jerk_within: float | None
    """The same inside chunks, for comparison."""
    env_s: float
    """Time in the simulator (reset and steps, rendering included)."""
    wall_s: float
    """Wall time of the episode, video encoding excluded."""
    video: str | None = None
    """The episode's mp4, relative to the evaluation's output directory."""


def append_record(directory: pathlib.Path, record: EpisodeRecord) -> None:
    """Append one episode's line (flushed and synced, so a crash right after keeps it)."""
    with (directory / EPISODES_FILE).open("a") as file:
        file.write(json.dumps(dataclasses.asdict(record)) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_records(directory: pathlib.Path) -> Iterator[EpisodeRecord]:
    """Every complete line of `episodes.jsonl` (a torn last line, from a crash mid-write, is skipped)."""
    path = directory / EPISODES_FILE
    if not path.exists():
        return
    fields = {f.name for f in dataclasses.fields(EpisodeRecord)}
    for line in path.read_text().splitlines():
        try:
            document: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        yield EpisodeRecord(**{k: v for k, v in document.items() if k in fields})
