"""A VLM as judge: every answer of every VL sample scored against its image by any configured VLM backend; a sample
with an answer scored below `threshold` is dropped (ANSWER_JUDGED_UNSUPPORTED).

The form and content gates (`answer_validation.py`) cannot see a fluent caption that describes things the image
does not show; a second model looking at the image can. The judge stage runs after a generator in a relabel job
(`relabel_recipe.py`, `vlaforge relabel --judge SPEC`), over the samples it made: each assistant turn is asked as
(the question before it, the answer) with the sample's images (prompt `judge`), in one batch per stage call. A
judge answer that is not the JSON asked for drops the sample too (ANSWER_JUDGE_UNREADABLE: an unjudged answer is not
a judged one). Kept samples record the judge and its scores in their provenance; the gate's counts go to the
`gates` table like the other gates'.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from vlaforge.annotators.answer_validation import Gate
from vlaforge.annotators.prompt_library import load_prompt
from vlaforge.annotators.vlm_client import VlmBackendConfig, VlmClient, VlmRequest
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import ChatRole, VlMetaField, VlSampleKey
from vlaforge.pipelines.samples import json_bytes
from vlaforge.pipelines.stage import Stage, StageConfig
from vlaforge.pipelines.vl_dataset import GATES_SCHEMA, GATES_TABLE
from vlaforge.pipelines.vl_samples import VlSample

_SCORE = re.compile(r"-?\d+(?:\.\d+)?")


class AnswerJudge(Stage):
    """VL samples -> the samples whose every answer the judge scored at least `threshold`."""

    table_schemas = {GATES_TABLE: GATES_SCHEMA}

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        vlm: VlmBackendConfig
        """The judge's backend (`LocalVlm.Config` or `HttpVlm.Config`): any configured VLM."""
        threshold: float = 7.0
        """The lowest score (1-10) an answer may get and stay."""
        prompt_version: int | None = None
        """The `judge` prompt's version; None takes the latest."""

        def __post_init__(self) -> None:
            if not 1 <= self.threshold <= 10:
                raise ValueError(f"AnswerJudge.Config.threshold must be in [1, 10], got {self.threshold}")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.prompt = load_prompt("judge", config.prompt_version)
        self.client: VlmClient | None = None
        self.checked = self.dropped = 0

    def setup(self) -> None:
        if self.client is None:
            self.client = self.config.vlm.build()
            self.client.setup()

    def __call__(self, batch: list[VlSample]) -> list[VlSample]:
        jobs = [(sample, request) for sample in batch for request in self._requests(sample)]
        if not jobs:
            return batch
        self.setup()
        assert self.client is not None
        scores: dict[str, list[Any]] = {}
        answers = self.client.generate([request for _, request in jobs])
        for (sample, _), answer in zip(jobs, answers, strict=True):
            scores.setdefault(sample.key, []).append(_score(answer.text) if answer.ok else None)
        model, revision = answers[0].model_id, answers[0].revision
        kept = []
        for sample in batch:
            judged = scores.get(sample.key, [])
            self.checked += 1
            if self._rejected(sample, judged):
                self.dropped += 1
                continue
            kept.append(self._recorded(sample, judged, model, revision) if judged else sample)
        return kept

    def _requests(self, sample: VlSample) -> list[VlmRequest]:
        conversation = json.loads(sample.members[VlSampleKey.CONVERSATION.value])
        images = tuple(sample.members[VlSampleKey.image(i)] for i in range(_count_images(sample)))
        requests, question = [], ""
        for message in conversation:
            text = " ".join(p["text"] for p in message["content"] if p.get("type") == "text").strip()
            if message["role"] == ChatRole.USER.value:
                question = text
            elif message["role"] == ChatRole.ASSISTANT.value and text:
                requests.append(VlmRequest(messages=self.prompt.messages(len(images), question=question, answer=text),
                                           images=images, max_new_tokens=self.prompt.max_new_tokens,
                                           response_format=self.prompt.response_format, request_id=sample.key))
        return requests

    def _rejected(self, sample: VlSample, scores: list[Any]) -> bool:
        unreadable = [i for i, s in enumerate(scores) if s is None]
        if unreadable:
            self.ledger.drop(file=sample.key, episode=sample.key, reason=DropReason.ANSWER_JUDGE_UNREADABLE,
                             message=f"{sample.key}: the judge's verdict on answer {unreadable[0]} is not the JSON "
                                     "score asked for; the sample is not kept unjudged")
            return True
        low = [(i, s) for i, s in enumerate(scores) if s < self.config.threshold]
        if low:
            index, score = low[0]
            self.ledger.drop(file=sample.key, episode=sample.key, reason=DropReason.ANSWER_JUDGED_UNSUPPORTED,
                             message=f"{sample.key}: the judge scored answer {index} {score:g} of 10, below "
                                     f"{self.config.threshold:g}")
            return True
        return False

    def _recorded(self, sample: VlSample, scores: list[float], model: str, revision: str) -> VlSample:
        """The sample with the judge in its provenance (what scored it, how, and the scores)."""
        meta = json.loads(sample.members[VlSampleKey.META.value])
        meta[VlMetaField.PROVENANCE.value].append({
            "model": model, "revision": revision, "prompt_version": self.prompt.tag,
            "settings": {"role": "judge", "threshold": self.config.threshold, "scores": scores}})
        return dataclasses.replace(sample, members={**sample.members, VlSampleKey.META.value: json_bytes(meta)})

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        """The judge gate's counts (samples judged, samples dropped) since the last call."""
        rows = [{"gate": Gate.JUDGE.value, "checked": self.checked, "dropped": self.dropped}] if self.checked else []
        self.checked = self.dropped = 0
        return {GATES_TABLE: rows} if rows else {}


def _count_images(sample: VlSample) -> int:
    return sum(1 for name in sample.members if name.endswith(".jpg"))


def _score(text: str) -> float | None:
    """The judge's score from its JSON answer (a fence tolerated); None when there is none in 1-10."""
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(body).get("score")
    except (ValueError, AttributeError):
        found = _SCORE.search(body)
        value = found.group() if found else None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 1 <= score <= 10 else None
