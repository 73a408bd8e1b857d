"""VL data generation speed: samples/s per generator on a tiny local Qwen3-VL, and the HTTP backend's throughput
against a local chat-completions server at 1, 8 and 32 requests in flight.

    python benchmarks/vl_data.py            # about 2 minutes on 2 shared cores
    python benchmarks/vl_data.py --quick    # under a minute

1. Generators on a tiny random-weight Qwen3-VL (`flows/sample_data/tiny_vlm.py`, loaded through `from_pretrained`,
   greedy, 8 new tokens, answer checks off so its gibberish still makes samples; VQA and EQA still get none, since
   gibberish is never the JSON they ask for, so "answers/s" counts VLM answers). Each generator runs on the same
   pick-and-place episodes; its baseline is the bare `LocalVlm.generate` on the very requests the generator sent,
   timed alternately in the same run. "stage / bare" is the generator's own cost on top of the model (frame
   choice, prompts, validation, JPEG checks, sample encoding): close to 1 means the model is the cost. The
   trajectory generator asks no model (projection only): its row has no baseline.
2. HTTP backend against `ScriptedVlmServer` in its own process (so client and server do not share a GIL),
   answering every request after a fixed latency (default 50 ms, like a busy vLLM): requests/s at 1, 8 and 32
   concurrent requests, against the ideal (concurrency / latency), and the
   caption generator on the same server fed all episodes in one batch, one episode per call, and in calls of
   `EPISODES_PER_BATCH` episodes (what a VL `Job` hands its stages: that many episodes' requests in flight).

Times are medians of `--repeats` runs; compare ratios, not absolute numbers across runs (shared, noisy machines).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from statistics import median
from typing import Any

from vlaforge.annotators.answer_validation import AnswerValidation
from vlaforge.annotators.caption_generator import CaptionGenerator
from vlaforge.annotators.eqa_generator import EqaGenerator
from vlaforge.annotators.plan_generator import PlanGenerator
from vlaforge.annotators.trajectory_generator import TrajectoryGenerator
from vlaforge.annotators.vlm_client import VlmRequest
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.annotators.vlm_local import LocalVlm
from vlaforge.annotators.vqa_generator import VqaGenerator
from vlaforge.datasets.synth.pick_place import pick_place_episode, write_calibration
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl
from vlaforge.pipelines.vl_dataset import EPISODES_PER_BATCH
from vlaforge.pipelines.vl_samples import user

ANYTHING = AnswerValidation.Config(language=None, reject_truncated=False, max_words=10_000, max_chars=100_000,
                                   echo_ngram=100)
CAPTION = "A robot gripper holds a red mug above a wooden table, next to a shelf."


@dataclasses.dataclass(frozen=True)
class Sizes:
    episodes: int
    http_requests: int
    repeats: int

    @classmethod
    def for_mode(cls, quick: bool, repeats: int | None) -> "Sizes":
        return cls(episodes=2 if quick else 4, http_requests=32 if quick else 96,
                   repeats=repeats or (2 if quick else 3))


class Recording:
    """Wraps a client: passes requests through and keeps them, so the baseline replays exactly those."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.requests: list[VlmRequest] = []

    def setup(self) -> None:
        self.client.setup()

    def generate(self, requests: list[VlmRequest]) -> list[Any]:
        self.requests += requests
        return self.client.generate(requests)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return median(times), result


def alternately(stage: Callable[[], Any], bare: Callable[[], Any], repeats: int,
                with_bare: bool) -> tuple[float, float | None, Any]:
    """Median seconds of `stage` and of `bare`, timed turn about (so both see the same machine load)."""
    stage_times, bare_times, result = [], [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = stage()
        stage_times.append(time.perf_counter() - started)
        if with_bare:
            started = time.perf_counter()
            bare()
            bare_times.append(time.perf_counter() - started)
    return median(stage_times), (median(bare_times) if bare_times else None), result


def generator_rows(work: pathlib.Path, sizes: Sizes) -> list[list[str]]:
    vlm = LocalVlm.Config(path=str(write_tiny_qwen3_vl(work / "tiny-qwen3-vl")), batch_size=8, device="auto")
    episodes = [pick_place_episode(f"ep-{i}", seed=i, image_size=(96, 128)) for i in range(sizes.episodes)]
    calibration = write_calibration(work / "calibration.json")
    common = {"vlm": vlm, "max_new_tokens": 8, "validation": ANYTHING}
    configs = {
        "caption": CaptionGenerator.Config(dataset="b", frames_per_episode=4, **common),
        "vqa": VqaGenerator.Config(dataset="b", frames_per_episode=4, **common),
        "eqa": EqaGenerator.Config(dataset="b", frames_per_episode=4, **common),
        "plan": PlanGenerator.Config(dataset="b", **common),
        "trajectory": TrajectoryGenerator.Config(dataset="b", calibration=str(calibration), stride_s=0.5),
    }
    shared = vlm.build()
    shared.setup()
    shared.generate([VlmRequest(messages=[user(None, "warm up")], images=(episodes[0].frames["exterior_1"][0],))])
    rows, caption_rate = [], None
    for name, config in configs.items():
        stage = config.build()
        recorder = Recording(shared)
        if stage.needs_vlm:
            stage.client = recorder  # the shared model, not a second copy
        else:
            stage.setup()
        stage(episodes)  # untimed: records the requests the baseline replays
        requests = list(recorder.requests)
        stage_s, bare_s, samples = alternately(lambda: stage(episodes), lambda: shared.generate(requests),
                                               sizes.repeats, bool(requests))
        rate = len(samples) / stage_s
        answers = len(requests) / stage_s if requests else None
        caption_rate = caption_rate or rate
        rows.append([name, str(len(requests)), str(len(samples)), f"{stage_s:.2f}", f"{rate:.1f}",
                     f"{answers:.1f}" if answers else "-", f"{bare_s:.2f}" if bare_s else "-",
                     f"{stage_s / bare_s:.2f}" if bare_s else "-", f"{rate / caption_rate:.2f}"])
    return rows


def http_rows(work: pathlib.Path, sizes: Sizes, latency_s: float) -> list[list[str]]:
    request = VlmRequest(messages=[user(None, "Describe the image.")],
                         images=(pick_place_episode("img").frames["exterior_1"][0],), max_new_tokens=32)
    episodes = [pick_place_episode(f"ep-{i}", seed=i) for i in range(max(1, sizes.http_requests // 4))]
    rows, single = [], None
    server = subprocess.Popen([sys.executable, "-m", "vlaforge.annotators.scripted_vlm_server", "--answer", CAPTION,
                               "--latency-ms", str(latency_s * 1000)], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        for concurrency in (1, 8, 32):
            client = HttpVlm.Config(base_url=url, model="scripted-vlm", concurrency=concurrency).build()
            client.setup()
            client.generate([request] * concurrency)  # open the connections
            n = sizes.http_requests if concurrency > 1 else max(8, sizes.http_requests // 8)
            seconds, _ = timed(lambda: client.generate([request] * n), sizes.repeats)
            client.close()
            rate = n / seconds
            single = single or rate
            ideal = min(concurrency, n) / latency_s
            batch_rate, episode_rate, job_rate = caption_rates(url, concurrency, episodes, sizes)
            rows.append([str(concurrency), str(n), f"{rate:.1f}", f"{rate / single:.1f}", f"{rate / ideal:.2f}",
                         f"{batch_rate:.1f}", f"{episode_rate:.1f}", f"{job_rate:.1f}"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def caption_rates(url: str, concurrency: int, episodes: list, sizes: Sizes) -> tuple[float, float, float]:
    """Caption samples/s fed all episodes at once, one episode per call, and `EPISODES_PER_BATCH` per call."""
    vlm = HttpVlm.Config(base_url=url, model="scripted-vlm", concurrency=concurrency)
    stage = CaptionGenerator.Config(dataset="b", vlm=vlm, frames_per_episode=4).build()
    stage.setup()
    per_call = EPISODES_PER_BATCH
    batch_s, samples = timed(lambda: stage(episodes), sizes.repeats)
    per_episode_s, _ = timed(lambda: [stage([episode]) for episode in episodes], sizes.repeats)
    job_s, _ = timed(lambda: [stage(episodes[i : i + per_call]) for i in range(0, len(episodes), per_call)],
                     sizes.repeats)
    stage.client.close()
    return len(samples) / batch_s, len(samples) / per_episode_s, len(samples) / job_s


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for cells in [header, *rows]:
        print("  " + "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)))
    for note in notes:
        print(f"  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer episodes and requests")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (median reported)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the server's latency per request")
    parser.add_argument("--threads", type=int, help="torch intra-op threads for the local model (1 is steadier on "
                                                     "a shared machine; default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sizes = Sizes.for_mode(args.quick, args.repeats)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vl-bench-") as tmp:
        work = pathlib.Path(tmp)
        print_table(
            f"1. Generators on a tiny Qwen3-VL ({sizes.episodes} pick-and-place episodes, 8 new tokens, greedy)",
            ["generator", "requests", "samples", "median s", "samples/s", "answers/s", "bare generate s",
             "stage / bare", "vs caption"],
            generator_rows(work, sizes),
            ["stage / bare: the generator's time over the bare model calls it made (1.00 = no overhead)"],
        )
        print_table(
            f"2. HTTP backend against a local server answering after {args.latency_ms:.0f} ms",
            ["concurrency", "requests", "req/s", "vs 1", "vs ideal", "caption/s all", "caption/s 1 episode",
             "caption/s job"],
            http_rows(work, sizes, args.latency_ms / 1000),
            ["vs ideal: req/s over concurrency / latency; caption/s: the caption generator's samples/s with all",
             "episodes in one call, one episode (4 frames, so at most 4 requests in flight) per call, and",
             "EPISODES_PER_BATCH episodes per call, as a VL Job calls its stages"],
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s, {sizes.repeats} timed runs each")


if __name__ == "__main__":
    main()
