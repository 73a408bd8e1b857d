"""VL retention: VLMs scored on VL benchmarks from their published files, side by side, to show forgetting.

    results = evaluate_vl(VlEvalConfig(vlms=("/ckpt/Qwen3-VL-4B-Instruct", "runs/step1/policy/vlm"),
                                       benchmarks=(("pope", "pope/coco_pope_random.json"), ("mme", "MME/"))))

Each VLM is a Qwen3-VL checkpoint directory (the base model, or an exported policy's `vlm/`), or a backend spec the
annotators take (`local:DIR_OR_ID`, `http:URL` for a served model); answers come from `annotators/vlm_local.py` /
`vlm_http.py`, greedily. Nothing downloads: every benchmark reads local files (`VL_BENCHMARKS`). The results hold
each benchmark's metrics per VLM and, with two or more VLMs, a table of accuracies with each one's change against
the first; with `output`, every answer is kept (`vl_answers/<vlm>/<benchmark>.jsonl`) beside `vl_results.json`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from vlaforge.datasets.configurable import lookup
from vlaforge.evaluation.mmbench import MMBenchBenchmark
from vlaforge.evaluation.mme import MMEBenchmark
from vlaforge.evaluation.pope import PopeBenchmark
from vlaforge.evaluation.vl_question import VlBenchmark, VlQuestion

VL_BENCHMARKS: dict[str, type] = {
    "pope": PopeBenchmark,
    "mmbench": MMBenchBenchmark,
    "mme": MMEBenchmark,
}
"""Benchmark name -> reader (each has `from_path`); the report's Table 3 lists seven more (ERQA, SEED, AI2D, MMMU,
TextVQA, ScienceQA, ChartQA): each is one reader module and one line here."""
VL_RESULTS = "vl_results.json"
ANSWERS_DIR = "vl_answers"


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlEvalConfig:
    """Which VLMs answer which benchmarks (see the module docstring)."""

    vlms: tuple[str, ...]
    """Checkpoint directories or backend specs; the first is the reference of the comparison."""
    benchmarks: tuple[tuple[str, str], ...]
    """(benchmark name, path of its published files)."""
    output: pathlib.Path | None = None
    """Where `vl_results.json` and the answers go (None: not written)."""
    batch_size: int = 8
    """Questions per generate call (local backend)."""
    max_new_tokens: int = 16
    """Answers are short: a word, a letter."""
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "vlms", tuple(self.vlms))
        object.__setattr__(self, "benchmarks", tuple(tuple(b) for b in self.benchmarks))
        if not self.vlms or not self.benchmarks:
            raise ValueError(f"VlEvalConfig needs at least one VLM and one benchmark, got {self.vlms}, "
                             f"{self.benchmarks}")
        for name, _ in self.benchmarks:
            lookup(VL_BENCHMARKS, name, what="VL benchmark")


def vlm_label(spec: str, others: Sequence[str]) -> str:
    """A short column name for a VLM: its directory's name (with its parent's when that is ambiguous)."""
    path = pathlib.Path(spec.partition(":")[2] if spec.startswith(("local:", "http:")) else spec)
    names = [pathlib.Path(o.partition(":")[2] if o.startswith(("local:", "http:")) else o).name for o in others]
    return path.name if names.count(path.name) == 1 else f"{path.parent.name}/{path.name}"


def _client(spec: str, config: VlEvalConfig):
    from vlaforge.annotators.vlm_backends import backend_config

    if spec.startswith("http:"):
        client = backend_config(spec).build()
    else:
        target = spec if spec.startswith("local:") else f"local:{spec}"
        client = backend_config(target, batch_size=config.batch_size, device=config.device,
                                dtype=config.dtype).build()
    client.setup()
    return client


def ask(client: Any, questions: Sequence[VlQuestion], max_new_tokens: int, batch_size: int) -> dict[str, str]:
    """{qid: answer text} from one VLM client; a request the backend refuses is answered "" (scored wrong)."""
    from vlaforge.annotators.vlm_client import VlmRequest

    answers = {}
    for start in range(0, len(questions), batch_size):
        batch = questions[start:start + batch_size]
        requests = [VlmRequest(messages=[{"role": "user", "content": [{"type": "image"} for _ in q.images]
                                          + [{"type": "text", "text": q.prompt}]}],
                               images=q.images, max_new_tokens=max_new_tokens, request_id=q.qid) for q in batch]
        for question, answer in zip(batch, client.generate(requests), strict=True):
            answers[question.qid] = answer.text if answer.ok else ""
    return answers


def evaluate_vl(config: VlEvalConfig, progress: Callable[[str, str, dict], None] | None = None) -> dict[str, Any]:
    """Ask every VLM every benchmark; returns (and with `output` writes) the results document."""
    benchmarks: list[VlBenchmark] = [lookup(VL_BENCHMARKS, name, what="VL benchmark").from_path(path)
                                     for name, path in config.benchmarks]
    questions = {b.name: list(b.questions()) for b in benchmarks}
    labels = [vlm_label(spec, config.vlms) for spec in config.vlms]
    scores: dict[str, dict[str, Any]] = {b.name: {} for b in benchmarks}
    for spec, label in zip(config.vlms, labels):
        client = _client(spec, config)
        try:
            for benchmark in benchmarks:
                answers = ask(client, questions[benchmark.name], config.max_new_tokens, config.batch_size)
                scores[benchmark.name][label] = benchmark.score(answers)
                _keep_answers(config.output, label, benchmark.name, answers)
                if progress is not None:
                    progress(label, benchmark.name, scores[benchmark.name][label])
        finally:
            client.close()
    results = {"vlms": dict(zip(labels, config.vlms)), "benchmarks": scores,
               "comparison": comparison(scores, labels)}
    if config.output is not None:
        config.output.mkdir(parents=True, exist_ok=True)
        (config.output / VL_RESULTS).write_text(json.dumps(results, indent=1))
    return results


def comparison(scores: dict[str, dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """One row per benchmark: each VLM's accuracy and its change against the first VLM's."""
    rows = []
    for benchmark, by_vlm in scores.items():
        reference = by_vlm[labels[0]]["accuracy"]
        row: dict[str, Any] = {"benchmark": benchmark}
        for label in labels:
            row[label] = by_vlm[label]["accuracy"]
            if label != labels[0]:
                row[f"{label} - {labels[0]}"] = by_vlm[label]["accuracy"] - reference
        rows.append(row)
    return rows


def _keep_answers(output: pathlib.Path | None, label: str, benchmark: str, answers: dict[str, str]) -> None:
    if output is None:
        return
    path = output / ANSWERS_DIR / label.replace("/", "__") / f"{benchmark}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"qid": q, "answer": a}) + "\n" for q, a in answers.items()))
