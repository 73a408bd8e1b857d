"""What every VLM-backed generator shares: the client, the versioned prompt, answer validation and provenance.

A generator is a `Stage` over `list[Episode]` (robot episodes read back from shards) that returns
`list[VlSample]`. It turns each episode into requests, sends the whole batch to the VLM in one `generate` call
(the backend batches or parallelises it), validates every answer and builds samples from the good ones. A rejected
answer is a drop under a named reason, with the sample key and the answer's start in its message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from vlaforge.annotators.answer_validation import AnswerValidation, Verdict
from vlaforge.annotators.prompt_library import Prompt, load_prompt
from vlaforge.annotators.vlm_client import VlmAnswer, VlmBackendConfig, VlmClient, VlmRequest
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import Camera, Episode, VlTask
from vlaforge.pipelines.stage import Stage, StageConfig
from vlaforge.pipelines.vl_dataset import GATES_SCHEMA, GATES_TABLE
from vlaforge.pipelines.vl_samples import Message, VlSample, build_vl_sample


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorConfig(StageConfig):
    """Fields every generator's nested `Config` has."""

    dataset: str
    """The VL dataset the samples belong to (recorded in each sample's meta)."""
    vlm: VlmBackendConfig | None = None
    """The VLM backend (`LocalVlm.Config` or `HttpVlm.Config`); generators that need none ignore it."""
    prompt_version: int | None = None
    """The prompt file version to use; None takes the latest."""
    camera: str = Camera.EXTERIOR_1.value
    """The camera whose frames are labelled."""
    max_new_tokens: int | None = None
    """Answer budget; None uses the prompt file's."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy)."""
    validation: AnswerValidation.Config = AnswerValidation.Config()
    """How answers are checked before they become samples."""
    validation_fraction: float = 0.05
    """Share of episodes whose samples go to the validation split (by a hash of the episode id)."""

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError(f"{type(self).__qualname__}.dataset must name the VL dataset, got {self.dataset!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"{type(self).__qualname__}.validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")


class VlmGenerator(Stage):
    """Base of the VLM-backed generators; subclasses set `task` and `prompt_name` and implement `__call__`."""

    @property
    def pooled(self) -> bool:  # type: ignore[override]
        """Pooled when it asks a VLM (a model, or connections to one); the trajectory generator asks none."""
        return self.config.vlm is not None

    @property
    def pool_name(self) -> str:
        return "vlm"

    task: ClassVar[VlTask]
    prompt_name: ClassVar[str]
    needs_vlm: ClassVar[bool] = True
    table_schemas = {GATES_TABLE: GATES_SCHEMA}
    config: GeneratorConfig

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config)
        self.prompt: Prompt = load_prompt(self.prompt_name, config.prompt_version)
        if self.needs_vlm and config.vlm is None:
            raise ValueError(f"{type(self).__name__}.Config.vlm is None: this generator asks a VLM; pass "
                             "LocalVlm.Config(path=...) or HttpVlm.Config(base_url=...)")
        self.client: VlmClient | None = None
        self.validator = AnswerValidation(config.validation)

    def setup(self) -> None:
        if self.needs_vlm and self.client is None:
            assert self.config.vlm is not None
            self.client = self.config.vlm.build()
            self.client.setup()

    def request(self, key: str, images: Sequence[bytes], **fields: Any) -> VlmRequest:
        """A request of this generator's prompt, filled with `fields`, showing `images`."""
        return VlmRequest(
            messages=self.prompt.messages(len(images), **fields), images=tuple(images),
            max_new_tokens=self.config.max_new_tokens or self.prompt.max_new_tokens,
            temperature=self.config.temperature, response_format=self.prompt.response_format, request_id=key,
        )

    def ask(self, requests: list[VlmRequest]) -> list[VlmAnswer]:
        if not requests:
            return []
        if self.client is None:
            self.setup()
        assert self.client is not None
        return self.client.generate(requests)

    def check(self, answer: VlmAnswer) -> Verdict:
        """The answer's verdict under this prompt: JSON with the prompt's fields, or text."""
        fields = self.prompt.json_fields if self.prompt.json_fields else None
        return self.validator.answer(answer, prompt=self.prompt.boilerplate(), json_fields=fields)

    def provenance(self, answer: VlmAnswer, request: VlmRequest) -> dict[str, Any]:
        return {"model": answer.model_id, "revision": answer.revision, "prompt_version": self.prompt.tag,
                "settings": {**request.settings(), "backend": answer.backend}}

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        """The gates' counts (texts checked, texts dropped) since the last call: `summary.json` reports each gate's
        drop rate from them."""
        rows = self.validator.take_gate_rows()
        return {GATES_TABLE: rows} if rows else {}

    def reject(self, file: str, key: str, verdict: Verdict) -> None:
        assert verdict.reason is not None
        self.ledger.drop(file=file, episode=key, reason=verdict.reason, message=f"{key}: {verdict.message}")

    def camera_frames(self, episode: Episode) -> list[bytes] | None:
        """The configured camera's frames, or None after recording a MISSING_CAMERA drop."""
        frames = episode.frames.get(self.config.camera)
        if frames is None:
            self.ledger.drop(file=episode.lineage.file, episode=episode.episode_id, reason=DropReason.MISSING_CAMERA,
                             message=f"episode {episode.episode_id} has cameras {sorted(episode.frames)}, not "
                                     f"{self.config.camera!r}; set camera to one of them", steps=len(episode))
        return frames

    def sample(self, *, key: str, images: Sequence[bytes], conversation: list[Message], source_key: str,
               source_group: str, provenance: list[dict[str, Any]], extra: dict[str, Any] | None = None,
               split: str | None = None) -> VlSample:
        """`split`: the source episode's own split (robot shards carry it); None hashes `source_group`."""
        return build_vl_sample(
            key=key, task=self.task, dataset=self.config.dataset, images=list(images), conversation=conversation,
            source_key=source_key, source_group=source_group, provenance=provenance,
            validation_fraction=self.config.validation_fraction, split=split, extra=extra,
        )


def evenly_spaced(n: int, k: int) -> list[int]:
    """Up to `k` distinct step indices spread evenly over [0, n), first and last included."""
    if n <= 0 or k <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n - 1, min(k, n)).round()})


def instruction_of(episode: Episode) -> str:
    """The instruction as prompts quote it ("(no instruction given)" when the episode has none)."""
    return episode.instruction or "(no instruction given)"
