"""Small general VL datasets in the layouts the hub publishes, with the bad rows real dumps contain.

- `write_llava_json`: LLaVA-Instruct style: one JSON list (`{"id", "image": relative path, "conversations":
  [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}`) beside an image folder.
- `write_vl_parquet`: a hub Parquet file with HF `datasets` schema metadata, images embedded as `Image` structs
  `{bytes, path}`; conversations either as HF messages (`messages` + `images`, as `llava-instruct-mix-vsft`) or
  ShareGPT (`conversations` + `image`, as LLaVA-OneVision-Data).

Row kinds, cycled: normal rows over real photos (some multi-turn, some PNG), and, when `bad_rows` is set, a row whose
image is missing, a row with no assistant turn, a row repeating an earlier image under another id, and a text-only
row (valid: no image); `synth_rows` says which row is which. A duplicate repeats the image (and text) of the row
before it.
"""

from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import CAPTIONS, PHOTOS, QUESTIONS, camera_frames

MISSING, NO_ANSWER, DUPLICATE, TEXT_ONLY = "missing-image", "no-answer", "duplicate", "text-only"
BAD_KINDS = (MISSING, NO_ANSWER, DUPLICATE, TEXT_ONLY)

_STRING = {"dtype": "string", "_type": "Value"}
_HF_MESSAGES = {"feature": {
    "content": {"feature": {"index": {"dtype": "int64", "_type": "Value"}, "text": _STRING, "type": _STRING},
                "_type": "List"},
    "role": _STRING}, "_type": "List"}
_HF_SHAREGPT = {"feature": {"from": _STRING, "value": _STRING}, "_type": "List"}


def synth_rows(n_rows: int, bad_rows: bool) -> list[str]:
    """The kind of each row: "good" or one of BAD_KINDS (every fifth row from row 3 on, when `bad_rows`)."""
    kinds = []
    for row in range(n_rows):
        bad = bad_rows and row >= 3 and row % 5 == 3
        kinds.append(BAD_KINDS[(row // 5) % len(BAD_KINDS)] if bad else "good")
    return kinds


def _image(row: int, size: tuple[int, int]) -> tuple[bytes, str]:
    """(encoded bytes, extension): photo `row % len(PHOTOS)` seen from a row-specific angle (distinct for the
    first 96 rows); every 4th is PNG."""
    frame = np.ascontiguousarray(camera_frames(row % len(PHOTOS), 24, *size)[(row // len(PHOTOS)) % 24])
    if row % 4 == 1:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, "PNG")
        return buffer.getvalue(), "png"
    return encode_jpeg(frame, FrameConfig(quality=90)), "jpg"


def _turns(row: int, kind: str) -> list[dict[str, str]]:
    photo = PHOTOS[row % len(PHOTOS)]
    question, answer = QUESTIONS[photo]
    turns = [{"from": "human", "value": ("" if kind == TEXT_ONLY else "<image>\n") + question}]
    if kind != NO_ANSWER:
        turns.append({"from": "gpt", "value": answer})
    if row % 3 == 0 and kind == "good":
        turns += [{"from": "human", "value": "Describe the image in one sentence."},
                  {"from": "gpt", "value": CAPTIONS[photo]}]
    return turns


def write_llava_json(directory: str | pathlib.Path, *, n_rows: int = 20, bad_rows: bool = True,
                     image_size: tuple[int, int] = (96, 128)) -> pathlib.Path:
    """`<directory>/llava_instruct.json` and `<directory>/images/`; returns the JSON file."""
    directory = pathlib.Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for row, kind in enumerate(synth_rows(n_rows, bad_rows)):
        entry: dict = {"id": f"{row:012d}"}
        if kind != TEXT_ONLY:
            data, extension = _image(row - 1 if kind == DUPLICATE else row, image_size)
            name = f"images/coco_{row:06d}.{extension}"
            if kind != MISSING:
                (directory / name).write_bytes(data)
            entry["image"] = name
        entry["conversations"] = _turns(row - 1, "good") if kind == DUPLICATE else _turns(row, kind)
        rows.append(entry)
    path = directory / "llava_instruct.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_vl_parquet(path: str | pathlib.Path, *, n_rows: int = 20, layout: str = "messages", bad_rows: bool = True,
                     image_size: tuple[int, int] = (96, 128), row_group_size: int = 8) -> pathlib.Path:
    """A hub-style Parquet file (HF `datasets` metadata included) in the "messages" or "sharegpt" layout."""
    if layout not in ("messages", "sharegpt"):
        raise ValueError(f"write_vl_parquet: layout must be 'messages' or 'sharegpt', got {layout!r}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [_parquet_record(row, kind, layout, image_size) for row, kind in enumerate(synth_rows(n_rows, bad_rows))]
    table = pa.Table.from_pylist(records, schema=_schema(layout))
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _parquet_record(row: int, kind: str, layout: str, size: tuple[int, int]) -> dict:
    images = []
    if kind not in (TEXT_ONLY, MISSING):
        data, extension = _image(row - 1 if kind == DUPLICATE else row, size)
        images.append({"bytes": data, "path": f"{row:06d}.{extension}"})
    elif kind == MISSING:
        images.append({"bytes": None, "path": None})
    turns = _turns(row - 1, "good") if kind == DUPLICATE else _turns(row, kind)
    if layout == "sharegpt":
        return {"id": f"{row:06d}", "image": images[0] if images else None, "conversations": turns}
    return {"id": f"{row:06d}", "messages": [_message(turn) for turn in turns], "images": images}


def _message(turn: dict[str, str]) -> dict:
    role = "user" if turn["from"] == "human" else "assistant"
    text = turn["value"].replace("<image>\n", "")
    parts = [{"index": 0, "text": None, "type": "image"}] if turn["value"].startswith("<image>") else []
    return {"role": role, "content": [*parts, {"index": None, "text": text, "type": "text"}]}


def _schema(layout: str) -> pa.Schema:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if layout == "messages":
        part = pa.struct([("index", pa.int64()), ("text", pa.string()), ("type", pa.string())])
        fields = [("id", pa.string()), ("messages", pa.list_(pa.struct([("content", pa.list_(part)),
                                                                         ("role", pa.string())]))),
                  ("images", pa.list_(image))]
        features = {"id": {"dtype": "string", "_type": "Value"}, "messages": _HF_MESSAGES,
                    "images": {"feature": {"_type": "Image"}, "_type": "List"}}
    else:
        turn = pa.struct([("from", pa.string()), ("value", pa.string())])
        fields = [("id", pa.string()), ("image", image), ("conversations", pa.list_(turn))]
        features = {"id": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"},
                    "conversations": _HF_SHAREGPT}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.schema(fields, metadata=metadata)


MIX_IMAGE = "coco/train2017/000000033471.jpg"
MIX_OBJECTS = {"the cup on the left": (8.0, 30.0, 48.0, 80.0), "the person in white": (50.0, 10.0, 110.0, 90.0)}
"""Pixel boxes [x1, y1, x2, y2] of the objects the mix's grounding rows refer to, in its 96x128 image."""


def llava_box(box: tuple[float, float, float, float], height: int, width: int) -> str:
    """A pixel box as LLaVA-1.5's mix writes it: 0-1 with two decimals, relative to the image padded to a square
    (the short side padded equally on both sides)."""
    side = max(height, width)
    dx, dy = (side - width) / 2, (side - height) / 2
    x1, y1, x2, y2 = ((box[0] + dx) / side, (box[1] + dy) / side, (box[2] + dx) / side, (box[3] + dy) / side)
    return f"[{x1:.2f}, {y1:.2f}, {x2:.2f}, {y2:.2f}]"


def write_llava_mix_json(directory: str | pathlib.Path, *, image_size: tuple[int, int] = (96, 128)) -> pathlib.Path:
    """Rows of LLaVA-1.5's mix sharing one COCO image: an instruct conversation, a VQAv2 short answer, a RefCOCO
    box question (0-1 boxes), a region description, and an exact repeat of the VQAv2 row; returns the JSON file."""
    directory = pathlib.Path(directory)
    (directory / pathlib.Path(MIX_IMAGE).parent).mkdir(parents=True, exist_ok=True)
    frame = np.ascontiguousarray(camera_frames(0, 2, *image_size)[0])
    (directory / MIX_IMAGE).write_bytes(encode_jpeg(frame, FrameConfig(quality=90)))
    height, width = image_size
    (cup, cup_box), (person, person_box) = MIX_OBJECTS.items()
    vqa = [{"from": "human", "value": "<image>\nWhat is the person wearing?\nAnswer the question using a single "
                                      "word or phrase."}, {"from": "gpt", "value": "Spacesuit"}]
    rows = [
        {"id": "000000033471", "image": MIX_IMAGE, "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the picture?"},
            {"from": "gpt", "value": CAPTIONS["astronaut"]}]},
        {"id": "000000033471-vqa", "image": MIX_IMAGE, "conversations": vqa},
        {"id": "000000033471-ref", "image": MIX_IMAGE, "conversations": [
            {"from": "human", "value": "<image>\nPlease provide the bounding box coordinate of the region this "
                                       f"sentence describes: {cup}."},
            {"from": "gpt", "value": llava_box(cup_box, height, width)},
            {"from": "human", "value": "Please provide the bounding box coordinate of the region this sentence "
                                       f"describes: {person}."},
            {"from": "gpt", "value": llava_box(person_box, height, width)}]},
        {"id": "000000033471-reg", "image": MIX_IMAGE, "conversations": [
            {"from": "human", "value": "<image>\nPlease provide a short description for this region: "
                                       f"{llava_box(person_box, height, width)}."},
            {"from": "gpt", "value": person}]},
        {"id": "000000033471-vqa-again", "image": MIX_IMAGE, "conversations": vqa},
    ]
    path = directory / "llava_v1_5_mix665k.json"
    path.write_text(json.dumps(rows, indent=1))
    return path
