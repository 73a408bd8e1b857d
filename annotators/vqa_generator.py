"""Question-answer pairs: written by a VLM for robot frames, or rewritten by a VLM for general VL datasets.

For a robot `Episode`, the VLM writes `qa_per_frame` pairs per chosen frame as JSON; each pair is validated on its
own (a bad pair is dropped and counted, the others stay) and the good ones become one multi-turn sample.

For a `VlRecord` (a sample of an ingested general dataset, e.g. LLaVA), each assistant turn is relabelled: the VLM
sees the images, the question and the reference answer, and writes a better answer. The record keeps its
questions, images, key, group and task; its provenance gains the relabelling model. A record any of whose answers
is rejected is dropped whole (half-relabelled conversations would mix two annotators silently).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from vlaforge.annotators.answer_validation import AnswerValidation, Verdict
from vlaforge.annotators.prompt_library import load_prompt
from vlaforge.annotators.vlm_client import VlmRequest
from vlaforge.annotators.vlm_generator import GeneratorConfig, VlmGenerator, evenly_spaced, instruction_of
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import ChatRole, Episode, MetaField, VlMetaField, VlTask, sample_key
from vlaforge.pipelines.shards.vl_source import VlRecord
from vlaforge.pipelines.vl_samples import Message, VlSample, assistant, build_vl_sample, user

QA_FIELD = "qa"


QaPairs = list[tuple[str, str]]


def qa_pairs(value: dict[str, Any], validator: AnswerValidation, prompt: str,
             facts: dict[str, str] | None = None) -> tuple[QaPairs, list[Verdict]]:
    """The valid (question, answer) pairs of a `{"qa": [...]}` answer about one image, and a verdict for each
    rejected pair: each question and answer passes the form and refusal gates, each answer the facts gate (when the
    generator computed facts) and the near-duplicate gate against the pairs kept before it."""
    items = value.get(QA_FIELD)
    if not isinstance(items, list) or not items:
        return [], [Verdict(DropReason.ANSWER_JSON_SHAPE, f"'{QA_FIELD}' must be a non-empty list, got {items!r:.80}")]
    pairs: QaPairs = []
    rejects: list[Verdict] = []
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("question"), str)
                and isinstance(item.get("answer"), str)):
            rejects.append(Verdict(DropReason.ANSWER_JSON_SHAPE, f"a pair must be {{question, answer}} strings, "
                                                                  f"got {item!r:.80}"))
            continue
        verdict = _pair_verdict(item, validator, prompt, facts, pairs)
        if not verdict.ok:
            rejects.append(verdict)
        elif verdict.value[0].lower() not in {q.lower() for q, _ in pairs}:
            pairs.append(verdict.value)
    return pairs, rejects


def _pair_verdict(item: dict[str, str], validator: AnswerValidation, prompt: str, facts: dict[str, str] | None,
                  kept: QaPairs) -> Verdict:
    """One pair through the gates; the verdict's value is (question, answer)."""
    question = validator.text(item["question"], prompt=prompt)
    if not question.ok:
        return question
    answer = validator.text(item["answer"], prompt=prompt)
    if answer.ok and facts is not None:
        answer = validator.facts(answer.value, facts)
    if answer.ok:
        answer = validator.distinct(answer.value, [a for _, a in kept])
    return Verdict(None, value=(question.value, answer.value)) if answer.ok else answer


def qa_conversation(pairs: QaPairs) -> list[Message]:
    """A multi-turn conversation over one image: the image comes with the first question."""
    turns: list[Message] = []
    for index, (question, answer) in enumerate(pairs):
        turns += [user(None, question) if index == 0 else user(question), assistant(answer)]
    return turns


class VqaGenerator(VlmGenerator):
    """Episode -> multi-turn QA samples of chosen frames; VlRecord -> the record with relabelled answers."""

    task: ClassVar[VlTask] = VlTask.VQA
    prompt_name: ClassVar[str] = "vqa"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(GeneratorConfig):
        frames_per_episode: int = 2
        """Robot frames asked about per episode, spread evenly."""
        qa_per_frame: int = 3
        """Question-answer pairs asked for per frame."""
        relabel_prompt_version: int | None = None
        """Version of the `relabel` prompt used for VlRecords; None takes the latest."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.frames_per_episode < 1 or self.qa_per_frame < 1:
                raise ValueError(f"VqaGenerator.Config: frames_per_episode and qa_per_frame must be >= 1, got "
                                 f"{self.frames_per_episode} and {self.qa_per_frame}")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.relabel_prompt = load_prompt("relabel", config.relabel_prompt_version)

    def __call__(self, batch: list[Episode | VlRecord]) -> list[VlSample]:
        episodes = [item for item in batch if isinstance(item, Episode)]
        records = [item for item in batch if isinstance(item, VlRecord)]
        return self._from_episodes(episodes) + self._relabel(records)

    def _from_episodes(self, episodes: list[Episode]) -> list[VlSample]:
        jobs = []
        for episode in episodes:
            frames = self.camera_frames(episode)
            for step in evenly_spaced(len(episode), self.config.frames_per_episode) if frames else []:
                key = sample_key(episode.episode_id, episode.first_step + step)
                request = self.request(key, [frames[step]], camera=self.config.camera,
                                       instruction=instruction_of(episode), count=self.config.qa_per_frame)
                jobs.append((episode, step, key, request))
        samples = []
        for (episode, step, key, request), answer in zip(jobs, self.ask([j[3] for j in jobs]), strict=True):
            verdict = self.check(answer)
            pairs, rejects = qa_pairs(verdict.value, self.validator, self.prompt.boilerplate()) if verdict.ok \
                else ([], [verdict])
            for reject in rejects:
                self.reject(episode.lineage.file, key, reject)
            if pairs:
                samples.append(self.sample(
                    key=f"{key}_{self.config.camera}", images=request.images, conversation=qa_conversation(pairs),
                    source_key=key, source_group=episode.episode_id,
                split=episode.flags.get(MetaField.SPLIT.value), provenance=[self.provenance(answer, request)],
                    extra={"camera": self.config.camera, "step": episode.first_step + step,
                           "timestamp": float(episode.timestamps[step]), "pairs_asked": self.config.qa_per_frame},
                ))
        return samples

    def _relabel(self, records: list[VlRecord]) -> list[VlSample]:
        jobs = []
        for record in records:
            for turn, question, reference in _qa_turns(record.conversation):
                request = self._relabel_request(record, question, reference)
                jobs.append((record, turn, request))
        answers = self.ask([job[2] for job in jobs])
        new_texts: dict[str, dict[int, str]] = {}
        provenance: dict[str, dict[str, Any]] = {}
        failed: set[str] = set()
        for (record, turn, request), answer in zip(jobs, answers, strict=True):
            verdict = self.validator.answer(answer, prompt=self.relabel_prompt.boilerplate())
            if verdict.ok:
                question, reference = _qa_turn(record.conversation, turn)
                verdict = self.validator.reference(question, reference, verdict.value)
            if not verdict.ok:
                if record.key not in failed:
                    self.reject(record.file, record.key, verdict)
                failed.add(record.key)
                continue
            new_texts.setdefault(record.key, {})[turn] = verdict.value
            provenance[record.key] = {**self.provenance(answer, request), "prompt_version": self.relabel_prompt.tag}
        samples = []
        for record in records:
            if record.key in failed:
                continue
            if record.key not in new_texts:
                self.ledger.drop(file=record.file, episode=record.key, reason=DropReason.NO_ASSISTANT_TURN,
                                 message=f"{record.key}: no question with an answer to relabel")
                continue
            samples.append(self._relabelled(record, new_texts[record.key], provenance[record.key]))
        return samples

    def _relabel_request(self, record: VlRecord, question: str, reference: str) -> VlmRequest:
        return VlmRequest(
            messages=self.relabel_prompt.messages(len(record.images), question=question, answer=reference),
            images=record.images, max_new_tokens=self.config.max_new_tokens or self.relabel_prompt.max_new_tokens,
            temperature=self.config.temperature, response_format=self.relabel_prompt.response_format,
            request_id=record.key,
        )

    def _relabelled(self, record: VlRecord, texts: dict[int, str], provenance: dict[str, Any]) -> VlSample:
        conversation = [assistant(texts[i]) if i in texts else message for i, message in
                        enumerate(record.conversation)]
        meta = record.meta
        return build_vl_sample(
            key=record.key, task=VlTask(meta.get(VlMetaField.TASK.value, VlTask.GENERAL.value)),
            dataset=self.config.dataset, images=list(record.images), conversation=conversation,
            source_key=record.key, source_group=meta.get(VlMetaField.SOURCE_GROUP.value) or record.key,
            provenance=[*meta.get(VlMetaField.PROVENANCE.value, []), provenance],
            validation_fraction=self.config.validation_fraction, split=meta.get(VlMetaField.SPLIT.value),
            extra={**meta.get(VlMetaField.EXTRA.value, {}), "relabelled_from": meta.get(VlMetaField.DATASET.value)},
        )


def _qa_turns(conversation: list[Message]) -> list[tuple[int, str, str]]:
    """(assistant message index, question, reference answer) for each assistant turn that follows a user turn."""
    turns = []
    for index in range(1, len(conversation)):
        message, previous = conversation[index], conversation[index - 1]
        if message.get("role") == ChatRole.ASSISTANT.value and previous.get("role") == ChatRole.USER.value:
            question, answer = _text(previous), _text(message)
            if question and answer:
                turns.append((index, question, answer))
    return turns


def _qa_turn(conversation: list[Message], turn: int) -> tuple[str, str]:
    """(question, reference answer) of the assistant turn at index `turn`."""
    return _text(conversation[turn - 1]), _text(conversation[turn])


def _text(message: Message) -> str:
    return " ".join(p.get("text", "") for p in message.get("content", []) if p.get("type") == "text").strip()
