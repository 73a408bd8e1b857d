"""Multi-turn VL datasets in The Cauldron's layout, as FineVision also publishes it.

Both are hub Parquet (one config per subset, `train-00000-of-00001.parquet`): `images` is a list of HF `Image`
structs `{bytes, path}` and `texts` a list of turns `{"user": ..., "assistant": ..., "source": ...}`; the images
belong before the first user turn. FineVision adds, per row, a rating of each turn on four qualities (1-5):
`relevance_ratings`, `visual_dependency_ratings`, `image_correspondence_ratings`, `formatting_ratings` (one value
per turn) with their minimum beside each (`relevance_min`, ...). Quirks when `bad_rows`: a row without images whose
turns still talk about one, and a row whose last turn has an empty answer (rated 1 for relevance).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import CAPTIONS, PHOTOS, QUESTIONS, camera_frames

RATINGS = ("relevance", "visual_dependency", "image_correspondence", "formatting")
NO_IMAGE, EMPTY_ANSWER = "no-image", "empty-answer"


def row_kinds(n_rows: int, bad_rows: bool) -> list[str]:
    """"good", or a quirk: row 3 has no image, row 5 an empty last answer (when `bad_rows`)."""
    return [NO_IMAGE if bad_rows and i == 3 else EMPTY_ANSWER if bad_rows and i == 5 else "good"
            for i in range(n_rows)]


def _turns(index: int, kind: str, subset: str) -> list[dict]:
    photo = PHOTOS[index % len(PHOTOS)]
    question, answer = QUESTIONS[photo]
    turns = [{"user": question, "assistant": answer, "source": subset},
             {"user": "Describe the image in one sentence.", "assistant": CAPTIONS[photo], "source": subset}]
    if kind == EMPTY_ANSWER:
        turns[-1]["assistant"] = ""
    return turns


def write_cauldron_parquet(path: str | pathlib.Path, *, n_rows: int = 8, finevision: bool = False,
                           bad_rows: bool = True, subset: str = "vqav2",
                           image_size: tuple[int, int] = (96, 128)) -> pathlib.Path:
    """A Cauldron (or, with `finevision`, FineVision) subset file; returns it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for index, kind in enumerate(row_kinds(n_rows, bad_rows)):
        frame = np.ascontiguousarray(camera_frames(index % len(PHOTOS), 8, *image_size)[(index // 4) % 8])
        images = [] if kind == NO_IMAGE else [{"bytes": encode_jpeg(frame, FrameConfig(quality=90)), "path": None}]
        turns = _turns(index, kind, subset)
        record = {"images": images, "texts": turns}
        if finevision:
            for rating in RATINGS:
                values = [1 if kind == EMPTY_ANSWER and t is turns[-1] and rating == "relevance" else 5 - (i % 2)
                          for i, t in enumerate(turns)]
                record[f"{rating}_ratings"], record[f"{rating}_min"] = values, min(values)
        records.append(record)
    pq.write_table(pa.Table.from_pylist(records, schema=_schema(finevision)), path, row_group_size=4)
    return path


def _schema(finevision: bool) -> pa.Schema:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn = pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())])
    fields = [("images", pa.list_(image)), ("texts", pa.list_(turn))]
    value = {"dtype": "string", "_type": "Value"}
    features = {"images": {"feature": {"_type": "Image"}, "_type": "List"},
                "texts": {"feature": {"user": value, "assistant": value, "source": value}, "_type": "List"}}
    if finevision:
        for rating in RATINGS:
            fields += [(f"{rating}_ratings", pa.list_(pa.int64())), (f"{rating}_min", pa.int64())]
            features[f"{rating}_ratings"] = {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "List"}
            features[f"{rating}_min"] = {"dtype": "int64", "_type": "Value"}
    return pa.schema(fields, metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()})
