"""LLaVA's grounding boxes (0-1 floats) rewritten into Qwen3-VL's 0-1000 convention, so one convention reaches
training.

LLaVA-1.5's mix (`llava_v1_5_mix665k.json`) carries RefCOCO and Visual Genome rows such as

    human: "Please provide the bounding box coordinate of the region this sentence describes: a man in red."
    gpt:   "[0.39, 0.24, 0.68, 0.71]"

and the reverse ("Please provide a short description for this region: [0.12, 0.30, 0.55, 0.90]"). The numbers are
[x1, y1, x2, y2] relative to the image *padded to a square* (LLaVA pads the short side equally on both sides before
its encoder and normalised its boxes to that square; haotian-liu/LLaVA issues #606 and #623), so `box_frame`
"padded_square" undoes the padding; "image" takes them as relative to the image itself.

An answer that is nothing but a box becomes our grounding answer (a fenced JSON list of `bbox_2d` and `label`, the
label taken from the question's referring expression); a box inside other text (a question about a region) becomes
"[x1, y1, x2, y2]" in 0-1000 integers.
"""

from __future__ import annotations

import re

from vlaforge.datasets.qwen_coordinates import grounding_answer, to_qwen_box
from vlaforge.datasets.schema import ChatRole
from vlaforge.datasets.vl_rows import Message, image_size

BOX_FRAMES = ("padded_square", "image")
_NUMBER = r"(?:0(?:\.\d+)?|1(?:\.0+)?|\.\d+)"
_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
_EXPRESSION = re.compile(r"describes:\s*(.+?)\s*\.?\s*$", re.IGNORECASE | re.DOTALL)


def convert_llava_boxes(conversation: list[Message], image: bytes, frame: str, at: str) -> list[Message]:
    """The conversation with every 0-1 box in Qwen3-VL's convention (unchanged when it has none)."""
    if not any(_BOX.search(part.get("text", "")) for m in conversation for part in m["content"]):
        return conversation
    height, width = image_size(image, at)
    converted, question = [], ""
    for message in conversation:
        parts = []
        for part in message["content"]:
            text = part.get("text")
            if part.get("type") != "text" or not text:
                parts.append(part)
                continue
            whole = _BOX.fullmatch(text.strip())
            if whole and message["role"] == ChatRole.ASSISTANT.value:
                label = _label(question)
                parts.append({"type": "text", "text": grounding_answer([(_qwen(whole, frame, height, width), label)])})
            else:
                parts.append({"type": "text", "text": _BOX.sub(lambda m: str(_qwen(m, frame, height, width)), text)})
        if message["role"] == ChatRole.USER.value:
            question = " ".join(p.get("text", "") for p in message["content"] if p.get("type") == "text")
        converted.append({**message, "content": parts})
    return converted


def _qwen(match: re.Match, frame: str, height: int, width: int) -> list[int]:
    x1, y1, x2, y2 = (float(v) for v in match.groups())
    if frame == "padded_square":
        side = max(height, width)
        dx, dy = (side - width) / 2, (side - height) / 2
        x1, x2 = x1 * side - dx, x2 * side - dx
        y1, y2 = y1 * side - dy, y2 * side - dy
    else:
        x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    return to_qwen_box([x1, y1, x2, y2], height, width)


def _label(question: str) -> str:
    found = _EXPRESSION.search(question)
    return found.group(1).strip() if found else "region"
