"""Embodied question answering: questions about the scene and the task state at a frame of a robot episode.

The VLM sees the frame and facts only the trajectory knows (is the gripper closed, is the arm moving, how far into
the episode, which sub-task by the gripper/pause segmentation), so it can ask and answer "what is the robot
holding?" or "is the drawer open?" with the robot's own state behind the answer. The valid pairs of each frame
become one multi-turn sample.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from vlaforge.annotators.plan_segments import SegmentationConfig, episode_signals, gripper_closed, segment, speed_at
from vlaforge.annotators.vlm_generator import GeneratorConfig, VlmGenerator, evenly_spaced, instruction_of
from vlaforge.annotators.vqa_generator import qa_conversation, qa_pairs
from vlaforge.datasets.schema import Episode, MetaField, VlTask, sample_key
from vlaforge.pipelines.vl_samples import VlSample


class EqaGenerator(VlmGenerator):
    """Episode -> multi-turn embodied QA samples at `frames_per_episode` frames."""

    task: ClassVar[VlTask] = VlTask.EQA
    prompt_name: ClassVar[str] = "eqa"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(GeneratorConfig):
        frames_per_episode: int = 3
        """Frames asked about per episode, spread evenly."""
        qa_per_frame: int = 3
        """Question-answer pairs asked for per frame."""
        segmentation: SegmentationConfig = SegmentationConfig()
        """Where the gripper signal and end-effector positions come from, and the pause / gripper thresholds."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.frames_per_episode < 1 or self.qa_per_frame < 1:
                raise ValueError(f"EqaGenerator.Config: frames_per_episode and qa_per_frame must be >= 1, got "
                                 f"{self.frames_per_episode} and {self.qa_per_frame}")

    config: Config

    def __call__(self, batch: list[Episode]) -> list[VlSample]:
        jobs = []
        for episode in batch:
            frames = self.camera_frames(episode)
            if frames is None:
                continue
            facts = self.facts(episode)
            for step in evenly_spaced(len(episode), self.config.frames_per_episode):
                key = sample_key(episode.episode_id, episode.first_step + step)
                request = self.request(key, [frames[step]], camera=self.config.camera,
                                       instruction=instruction_of(episode), count=self.config.qa_per_frame,
                                       **facts[step])
                jobs.append((episode, step, key, request, facts[step]))
        samples = []
        for (episode, step, key, request, fact), answer in zip(jobs, self.ask([j[3] for j in jobs]), strict=True):
            verdict = self.check(answer)
            pairs, rejects = qa_pairs(verdict.value, self.validator, self.prompt.boilerplate(), facts=fact) \
                if verdict.ok else ([], [verdict])
            for reject in rejects:
                self.reject(episode.lineage.file, key, reject)
            if pairs:
                samples.append(self.sample(
                    key=f"{key}_{self.config.camera}", images=request.images, conversation=qa_conversation(pairs),
                    source_key=key, source_group=episode.episode_id,
                split=episode.flags.get(MetaField.SPLIT.value), provenance=[self.provenance(answer, request)],
                    extra={"camera": self.config.camera, "step": episode.first_step + step, "facts": fact},
                ))
        return samples

    def facts(self, episode: Episode) -> list[dict[str, str]]:
        """Per step: the sensor facts the prompt states (gripper, motion, progress, sub-task i of n)."""
        config = self.config.segmentation
        gripper, positions = episode_signals(episode, config)
        closed = gripper_closed(gripper, config.closed_above, config.hysteresis) if gripper is not None else None
        segments = segment(episode, config)
        last = max(len(episode) - 1, 1)
        facts = []
        for step in range(len(episode)):
            index = next(i for i, s in enumerate(segments) if s.start <= step < s.stop)
            moving = speed_at(positions, episode.timestamps, step) >= config.pause_speed
            facts.append({
                "gripper": "not recorded" if closed is None else "closed" if closed[step] else "open",
                "motion": "moving" if moving else "still",
                "progress": str(round(100 * step / last)),
                "subtask": str(index + 1),
                "subtasks": str(len(segments)),
            })
        return facts
