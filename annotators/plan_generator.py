"""High-level task plans from robot episodes: segment at gripper events and pauses, let a VLM name each segment.

Each segment is shown to the VLM as its first and last frames, with the instruction and what ends the segment
("the gripper closes"). Two kinds of samples come from the named segments (`variants`):

- "whole": the episode's first frame and the instruction -> the whole plan, the numbered list of segment names;
- "next": the frame where each sub-task starts, the instruction and the sub-tasks done so far -> the next sub-task
  (questions from the `plan_next` prompt), so the model also learns to re-plan from where it is.

A plan with any rejected name is dropped whole (a plan with a hole teaches the wrong plan, and the wrong next step).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from vlaforge.annotators.answer_validation import AnswerValidation, Verdict
from vlaforge.annotators.plan_segments import SegmentationConfig, segment
from vlaforge.annotators.prompt_library import load_prompt
from vlaforge.annotators.vlm_generator import GeneratorConfig, VlmGenerator
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import Episode, MetaField, VlTask, sample_key
from vlaforge.pipelines.vl_samples import VlSample, assistant, user

_STRIP = " \t\n\"'`.;:"
VARIANTS = ("whole", "next")


class PlanGenerator(VlmGenerator):
    """Episode -> one planning sample (first frame + instruction -> numbered sub-task list)."""

    task: ClassVar[VlTask] = VlTask.PLANNING
    prompt_name: ClassVar[str] = "plan"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(GeneratorConfig):
        segmentation: SegmentationConfig = SegmentationConfig()
        """How the episode is cut into sub-tasks."""
        min_segments: int = 2
        """Episodes with fewer segments have no plan to teach (TOO_FEW_SEGMENTS)."""
        max_segments: int = 12
        """Episodes with more segments are cut too finely to be a plan (TOO_FEW_SEGMENTS names this too)."""
        validation: AnswerValidation.Config = AnswerValidation.Config(max_words=12)
        """Segment names are short phrases."""
        variants: tuple[str, ...] = VARIANTS
        """Which samples to make: "whole" (the plan from the first frame), "next" (the next sub-task from the
        frame where each starts)."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if not self.variants or any(v not in VARIANTS for v in self.variants):
                raise ValueError(f"PlanGenerator.Config.variants must be a non-empty subset of {VARIANTS}, got "
                                 f"{self.variants}")
            if not 1 <= self.min_segments <= self.max_segments:
                raise ValueError(f"PlanGenerator.Config: need 1 <= min_segments <= max_segments, got "
                                 f"{self.min_segments} and {self.max_segments}")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.next_prompt = load_prompt("plan_next")

    def __call__(self, batch: list[Episode]) -> list[VlSample]:
        plans, requests = [], []
        for episode in batch:
            planned = self._plan(episode)
            if planned is not None:
                plans.append(planned)
                requests += planned[2]
        answers = iter(self.ask(requests))
        samples = []
        for episode, segments, segment_requests in plans:
            names, provenance, key = [], None, sample_key(episode.episode_id, episode.first_step)
            for request in segment_requests:
                answer = next(answers)
                verdict = self.check(answer)
                names.append(verdict.value.strip(_STRIP) if verdict.ok else verdict)
                provenance = provenance or self.provenance(answer, request)
            rejected = next((n for n in names if isinstance(n, Verdict)), None)
            if rejected is not None:
                self.reject(episode.lineage.file, key, rejected)
                continue
            if "whole" in self.config.variants:
                samples.append(self._sample(episode, key, segments, names, provenance))
            if "next" in self.config.variants:
                samples += self._next_samples(episode, segments, names, provenance)
        return samples

    def _plan(self, episode: Episode) -> tuple[Episode, list, list] | None:
        frames = self.camera_frames(episode)
        if frames is None:
            return None
        key = sample_key(episode.episode_id, episode.first_step)
        if not episode.instruction:
            self.ledger.drop(file=episode.lineage.file, episode=key, reason=DropReason.NO_INSTRUCTION,
                             message=f"{key}: a plan sample asks for the plan of the instruction; the episode has none")
            return None
        segments = segment(episode, self.config.segmentation)
        if not self.config.min_segments <= len(segments) <= self.config.max_segments:
            self.ledger.drop(file=episode.lineage.file, episode=key, reason=DropReason.TOO_FEW_SEGMENTS,
                             message=f"{key}: {len(segments)} segments, outside [{self.config.min_segments}, "
                                     f"{self.config.max_segments}]; adjust the segmentation thresholds")
            return None
        requests = [
            self.request(key, [frames[s.start], frames[s.stop - 1]], instruction=episode.instruction, index=i + 1,
                         total=len(segments), boundary=s.ends_with.describe())
            for i, s in enumerate(segments)
        ]
        return episode, segments, requests

    def _next_samples(self, episode: Episode, segments: list, names: list[str], provenance: dict) -> list[VlSample]:
        """One sample per sub-task: its first frame, the instruction and what is done so far -> its name."""
        frames = episode.frames[self.config.camera]
        samples = []
        for index, (part, name) in enumerate(zip(segments, names, strict=True)):
            key = sample_key(episode.episode_id, episode.first_step + part.start)
            done = ("Done so far: " + "; ".join(names[:index]) + ".") if index else "Nothing is done yet."
            question = self.next_prompt.question(key, instruction=episode.instruction, done=done)
            samples.append(self.sample(
                key=f"{key}_{self.config.camera}_next", images=[frames[part.start]],
                conversation=[user(None, question), assistant(name)], source_key=key, source_group=episode.episode_id,
                split=episode.flags.get(MetaField.SPLIT.value),
                provenance=[{**provenance, "prompt_version": f"{provenance['prompt_version']}+{self.next_prompt.tag}"}],
                extra={"camera": self.config.camera, "variant": "next", "subtask": index + 1,
                       "subtasks": len(segments), "step": episode.first_step + part.start},
            ))
        return samples

    def _sample(self, episode: Episode, key: str, segments: list, names: list[str], provenance: dict) -> VlSample:
        frames = episode.frames[self.config.camera]
        plan = "\n".join(f"{i + 1}. {name}" for i, name in enumerate(names))
        question = self.prompt.question(key, instruction=episode.instruction)
        times = episode.timestamps
        return self.sample(
            key=f"{key}_{self.config.camera}", images=[frames[0]], conversation=[user(None, question), assistant(plan)],
            source_key=key, source_group=episode.episode_id,
                split=episode.flags.get(MetaField.SPLIT.value), provenance=[provenance],
            extra={"camera": self.config.camera, "segments": [
                {**s.as_dict(), "name": name, "start_s": float(times[s.start]), "stop_s": float(times[s.stop - 1]),
                 "first_step": episode.first_step} for s, name in zip(segments, names, strict=True)]},
        )
