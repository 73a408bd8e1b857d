"""Vision-language samples: images, a conversation in the Hugging Face chat format, and meta.

A Qwen3-VL processor consumes `conversation.json` directly through `apply_chat_template`:
`[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the red mug?"}]},
  {"role": "assistant", "content": [{"type": "text", "text": "[412, 230, 518, 377]"}]}]`.
The n-th `{"type": "image"}` part refers to member `<n>.jpg`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from vlaforge.datasets.frames import BadImageError, jpeg_shape
from vlaforge.datasets.schema import ChatRole, VlMetaField, VlSampleKey, VlTask, safe_key_part
from vlaforge.pipelines.samples import json_bytes
from vlaforge.pipelines.split import Split, split_of


class VlSampleError(ValueError):
    """A VL sample that must not be written: the message names the sample and what is wrong."""


Message = dict[str, Any]


def user(*parts: str | None) -> Message:
    """A user turn: `None` stands for an image, a string for text, in the order given."""
    return {"role": ChatRole.USER.value, "content": [_part(p) for p in parts]}


def assistant(text: str) -> Message:
    return {"role": ChatRole.ASSISTANT.value, "content": [{"type": "text", "text": text}]}


def system(text: str) -> Message:
    return {"role": ChatRole.SYSTEM.value, "content": [{"type": "text", "text": text}]}


def _part(part: str | None) -> dict[str, str]:
    return {"type": "image"} if part is None else {"type": "text", "text": part}


@dataclasses.dataclass(frozen=True)
class VlSample:
    """One VL sample, ready for the shard writer (same shape as a robot sample: key, split, members)."""

    key: str
    split: Split
    members: dict[str, bytes]
    episode_id: str
    """The source group (episode or image) the manifest lists for the shard."""


def build_vl_sample(
    *,
    key: str,
    task: VlTask,
    dataset: str,
    images: Sequence[bytes],
    conversation: list[Message],
    source_key: str,
    source_group: str,
    provenance: list[dict[str, Any]],
    validation_fraction: float = 0.05,
    split: Split | str | None = None,
    consensus_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> VlSample:
    """Validate and encode one VL sample; raises VlSampleError naming the key and the problem.

    `split` is the source's own split (a robot episode's, read from its shard), so a VL sample made from a
    validation episode stays in validation; without one, the split is hashed from `source_group`."""
    if key != safe_key_part(key):
        raise VlSampleError(f"VL sample key {key!r} may hold only letters, digits, '_' and '-' (try safe_key_part)")
    sizes = [_image_size(key, i, data) for i, data in enumerate(images)]
    check_conversation(key, conversation, len(images))
    split = Split(split) if split is not None else split_of(source_group, validation_fraction)
    meta = {
        VlMetaField.TASK.value: VlTask(task).value,
        VlMetaField.DATASET.value: dataset,
        VlMetaField.SOURCE_KEY.value: source_key,
        VlMetaField.SOURCE_GROUP.value: source_group,
        VlMetaField.IMAGE_SIZES.value: sizes,
        VlMetaField.PROVENANCE.value: provenance,
        VlMetaField.CONSENSUS_ID.value: consensus_id,
        VlMetaField.SPLIT.value: split.value,
        VlMetaField.EXTRA.value: extra or {},
    }
    members = {VlSampleKey.image(i): data for i, data in enumerate(images)}
    members[VlSampleKey.CONVERSATION.value] = json_bytes(conversation)
    members[VlSampleKey.META.value] = json_bytes(meta)
    return VlSample(key, split, members, source_group)


def _image_size(key: str, index: int, data: bytes) -> list[int]:
    try:
        height, width = jpeg_shape(data)
    except BadImageError as error:
        raise VlSampleError(f"VL sample {key}: image {index} is not usable: {error}") from None
    return [height, width]


def check_conversation(key: str, conversation: list[Message], n_images: int) -> None:
    """Raise VlSampleError unless the conversation is HF chat format, shows exactly `n_images` images, and has at
    least one non-empty assistant answer."""
    if not isinstance(conversation, list) or not conversation:
        raise VlSampleError(f"VL sample {key}: the conversation must be a non-empty list of messages")
    shown = 0
    answered = False
    roles = {role.value for role in ChatRole}
    for index, message in enumerate(conversation):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in roles:
            raise VlSampleError(f"VL sample {key}: message {index} has role {role!r}; expected one of {sorted(roles)}")
        parts = message.get("content")
        if not isinstance(parts, list) or not parts:
            raise VlSampleError(f"VL sample {key}: message {index} needs a non-empty list of content parts")
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                if role == ChatRole.ASSISTANT.value:
                    raise VlSampleError(f"VL sample {key}: message {index} (assistant) shows an image")
                shown += 1
            elif kind != "text" or not isinstance(part.get("text"), str):
                raise VlSampleError(f"VL sample {key}: message {index} has a part that is neither image nor text")
            elif role == ChatRole.ASSISTANT.value and part["text"].strip():
                answered = True
    if shown != n_images:
        raise VlSampleError(f"VL sample {key}: the conversation shows {shown} images but the sample has {n_images}")
    if not answered:
        raise VlSampleError(f"VL sample {key}: no assistant turn with text; there is nothing to learn from")
