"""Dense captions of robot camera frames, written by a VLM: one caption sample per chosen frame.

The VLM sees the frame, the camera and the instruction (context it may use, never quote); the sample asks one of
the prompt file's caption questions and answers with the validated caption.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from vlaforge.annotators.vlm_generator import GeneratorConfig, VlmGenerator, evenly_spaced, instruction_of
from vlaforge.datasets.schema import Episode, MetaField, VlTask, sample_key
from vlaforge.pipelines.vl_samples import VlSample, assistant, user


class CaptionGenerator(VlmGenerator):
    """Episode -> captions of `frames_per_episode` frames spread over it."""

    task: ClassVar[VlTask] = VlTask.CAPTION
    prompt_name: ClassVar[str] = "caption"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(GeneratorConfig):
        frames_per_episode: int = 3
        """Frames captioned per episode, spread evenly from the first to the last step."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.frames_per_episode < 1:
                raise ValueError(f"CaptionGenerator.Config.frames_per_episode must be >= 1, got "
                                 f"{self.frames_per_episode}")

    config: Config

    def __call__(self, batch: list[Episode]) -> list[VlSample]:
        jobs = []
        for episode in batch:
            frames = self.camera_frames(episode)
            if frames is None:
                continue
            for step in evenly_spaced(len(episode), self.config.frames_per_episode):
                key = sample_key(episode.episode_id, episode.first_step + step)
                request = self.request(key, [frames[step]], camera=self.config.camera,
                                       instruction=instruction_of(episode))
                jobs.append((episode, step, key, request))
        answers = self.ask([job[3] for job in jobs])
        samples = []
        for (episode, step, key, request), answer in zip(jobs, answers, strict=True):
            verdict = self.check(answer)
            if not verdict.ok:
                self.reject(episode.lineage.file, key, verdict)
                continue
            samples.append(self.sample(
                key=f"{key}_{self.config.camera}", images=request.images,
                conversation=[user(None, self.prompt.question(key)), assistant(verdict.value)],
                source_key=key, source_group=episode.episode_id,
                split=episode.flags.get(MetaField.SPLIT.value), provenance=[self.provenance(answer, request)],
                extra={"camera": self.config.camera, "step": episode.first_step + step,
                       "timestamp": float(episode.timestamps[step])},
            ))
        return samples
