"""Rows of general VL datasets, normalised to our conversation format (HF chat messages, images in order).

Two conversation layouts exist in the wild, both handled:
- ShareGPT / LLaVA: `conversations: [{"from": "human"|"gpt"|"system", "value": "<image>\\nWhat is ...?"}]`, where
  each `<image>` marks where the next image goes (LLaVA puts the image before the first question when no turn says
  `<image>`);
- HF messages (TRL, `llava-instruct-mix-vsft`): `messages: [{"role": "user", "content": [{"type": "image",
  "index": 0}, {"type": "text", "text": "..."}]}]` (content may also be a plain string).

Images are given as bytes (parquet: a binary column, or HF `Image` structs `{bytes, path}`) or as paths relative to
an image root; a path that leaves the root is refused. A row that cannot become a sample raises `RowReject` with a
named reason and a message that names the row and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pathlib
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.frames import BadImageError, jpeg_shape
from vlaforge.datasets.schema import ChatRole

IMAGE_TOKEN = "<image>"
CAPTION_PROMPTS = (
    "Describe the image in one sentence.",
    "Write a short caption for this picture.",
    "What does this image show? Answer in one sentence.",
)
"""The question a caption dataset's row is asked as (picked by a hash of the row's key: varied, stable)."""
REFERRING_PROMPTS = (
    "Locate {expression} in the image and output its bbox coordinates in JSON format.",
    "Give the bounding box of {expression}, in JSON.",
    "Where is {expression}? Answer with its bounding box in JSON.",
)
"""The question a referring-expression row (RefCOCO) is asked as; the answer is a Qwen3-VL grounding answer."""
_SHAREGPT_ROLES = {"human": ChatRole.USER, "user": ChatRole.USER, "gpt": ChatRole.ASSISTANT,
                   "assistant": ChatRole.ASSISTANT, "system": ChatRole.SYSTEM}
_IMAGE_SPLIT = re.compile(r"\s*<image>\s*")

Message = dict[str, Any]


class RowReject(Exception):
    """A row that cannot become a sample: `reason` names why, the message says which row and what to fix."""

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class VlRow:
    """One usable row: image bytes as stored (not yet re-encoded) and the normalised conversation."""

    file: str
    """The dataset file, relative to the dataset root."""
    row: int
    """Row index within the file."""
    row_id: str
    """The dataset's own id for the row (its `id` field), or the row index."""
    images: tuple[bytes, ...]
    conversation: list[Message]
    layout: str
    """"sharegpt" or "messages"."""

    @property
    def image_hash(self) -> str:
        """sha256 over the image bytes, in order: rows showing the same images share it ("" with no image)."""
        if not self.images:
            return ""
        digest = hashlib.sha256()
        for data in self.images:
            digest.update(hashlib.sha256(data).digest())
        return digest.hexdigest()

    @property
    def sample_hash(self) -> str:
        """sha256 over the images and the conversation: rows that would make the same sample share it. Rows that
        share an image but ask something else (an instruct row, a VQA row and a grounding row of one COCO image)
        do not."""
        text = json.dumps(self.conversation, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(f"{self.image_hash}|{text}".encode()).hexdigest()


def where(file: str, row: int, row_id: str) -> str:
    return f"{file} row {row} (id {row_id!r})"


def sharegpt_conversation(turns: Any, n_images: int, at: str) -> list[Message]:
    """ShareGPT turns -> HF messages with `n_images` image parts placed at the `<image>` tokens."""
    if not isinstance(turns, list) or not turns:
        raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: 'conversations' must be a non-empty list of "
                        "{from, value}")
    placed = sum(str(t.get("value", "")).count(IMAGE_TOKEN) for t in turns if isinstance(t, dict))
    if placed > n_images:
        raise RowReject(DropReason.MISSING_IMAGE, f"{at}: the conversation shows {placed} <image> but the row has "
                        f"{n_images} images; add the image field or drop the row")
    messages = []
    for index, turn in enumerate(turns):
        role = _SHAREGPT_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: turn {index} is not {{from: human|gpt|system, "
                            f"value: str}}: {str(turn)[:80]}")
        messages.append({"role": role.value, "content": _sharegpt_parts(turn["value"])})
    if placed < n_images:  # LLaVA's rule: images without a token go before the first user text
        first_user = next((m for m in messages if m["role"] == ChatRole.USER.value), None)
        if first_user is None:
            raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: images but no human turn to show them in")
        first_user["content"][:0] = [{"type": "image"}] * (n_images - placed)
    return messages


def _sharegpt_parts(value: str) -> list[dict[str, str]]:
    pieces = _IMAGE_SPLIT.split(value)
    parts: list[dict[str, str]] = []
    for index, piece in enumerate(pieces):
        if index:
            parts.append({"type": "image"})
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
    return parts or [{"type": "text", "text": ""}]


def messages_conversation(messages: Any, n_images: int, at: str) -> tuple[list[Message], list[int]]:
    """HF messages -> (our messages, the image index each image part shows, in order of appearance)."""
    if not isinstance(messages, list) or not messages:
        raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: 'messages' must be a non-empty list of {{role, content}}")
    out, order = [], []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in {r.value for r in ChatRole}:
            raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: message {index} has role {role!r}")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": [{"type": "text", "text": content.strip()}]})
            continue
        parts = []
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image":
                order.append(part["index"] if isinstance(part.get("index"), int) else len(order))
                parts.append({"type": "image"})
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"].strip()})
        if not parts:
            raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: message {index} has no image or text part")
        out.append({"role": role, "content": parts})
    if any(i >= n_images or i < 0 for i in order):
        raise RowReject(DropReason.MISSING_IMAGE, f"{at}: image parts show images {order} but the row has "
                        f"{n_images}; add the images or drop the row")
    return out, order


def require_answer(conversation: list[Message], at: str) -> None:
    """RowReject(NO_ASSISTANT_TURN) unless some assistant turn has text."""
    for message in conversation:
        if message["role"] == ChatRole.ASSISTANT.value and any(
                p.get("type") == "text" and p.get("text", "").strip() for p in message["content"]):
            return
    raise RowReject(DropReason.NO_ASSISTANT_TURN, f"{at}: no assistant turn with text; there is nothing to learn")


def image_bytes(value: Any, image_root: pathlib.Path, at: str) -> bytes:
    """Bytes of one image given as bytes, an HF Image struct {bytes, path}, or a path under `image_root`."""
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise RowReject(DropReason.MISSING_IMAGE, f"{at}: an image is empty (no bytes and no path)")
    root = image_root.resolve()
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise RowReject(DropReason.BAD_RECORD, f"{at}: image path {value!r} leaves the image root {root}; refused")
    try:
        return path.read_bytes()
    except OSError as error:
        raise RowReject(DropReason.MISSING_IMAGE, f"{at}: image {value!r} cannot be read under {root} "
                        f"({type(error).__name__}); fix --image-root or drop the row") from None


def pick(templates: tuple[str, ...], key: str) -> str:
    """A template chosen by a hash of `key`: varied phrasing, identical on every rerun."""
    return templates[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(templates)]


def caption_conversation(caption: str, key: str, at: str) -> list[Message]:
    """One image, a caption question, the caption as the answer; RowReject when the caption is empty."""
    text = caption.strip() if isinstance(caption, str) else ""
    if not text:
        raise RowReject(DropReason.NO_ASSISTANT_TURN, f"{at}: the caption is empty; there is nothing to learn")
    return [{"role": ChatRole.USER.value, "content": [{"type": "image"}, {"type": "text",
                                                                          "text": pick(CAPTION_PROMPTS, key)}]},
            {"role": ChatRole.ASSISTANT.value, "content": [{"type": "text", "text": text}]}]


def image_size(image: bytes, at: str) -> tuple[int, int]:
    """(height, width) from the image's header (JPEG) or by opening it (anything else); RowReject when it does not
    decode."""
    try:
        return jpeg_shape(image)
    except BadImageError:
        pass
    try:
        with Image.open(io.BytesIO(image)) as opened:
            width, height = opened.size
    except (UnidentifiedImageError, OSError) as error:
        raise RowReject(DropReason.BAD_IMAGE, f"{at}: its image does not decode ({error}), so its boxes cannot be "
                        "placed; fix or drop the row") from None
    return height, width
