"""RefCOCO-style referring-expression grounding rows as `lmms-lab/RefCOCO` publishes them on the hub.

Parquet (`data/val-00000-of-00004.parquet`), one row per referred object: `question_id` (string), `image` (HF
`Image` struct `{bytes, path}`), `question` (the task prompt), `answer` (a list of referring expressions, all naming
the same object), `segmentation` (the COCO polygon, flat floats), `bbox` (COCO [x, y, width, height] in pixels, as
float32), `iscrowd` (int8) and `file_name` (the COCO image file). One image is referred to by several rows.
Quirks when `bad_rows`: a box of zero width, and a row whose expressions are an empty list.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import camera_frames

QUESTION = "Please carefully observe the area circled in the image and come up with a caption for the area."
OBJECTS = [
    (["the cup on the left", "left cup"], (8.0, 30.0, 40.0, 50.0)),
    (["the person in white", "astronaut"], (50.0, 10.0, 60.0, 80.0)),
    (["the top right corner", "upper right"], (100.0, 0.0, 28.0, 24.0)),
]
"""(expressions, COCO bbox [x, y, w, h]) of the objects referred to in each image."""
ZERO_WIDTH, NO_EXPRESSION = "zero-width", "no-expression"


def write_refcoco_parquet(path: str | pathlib.Path, *, n_images: int = 3, bad_rows: bool = True,
                          image_size: tuple[int, int] = (96, 128)) -> pathlib.Path:
    """Rows referring to `len(OBJECTS)` objects in each of `n_images` images; returns the file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for image_index in range(n_images):
        frame = np.ascontiguousarray(camera_frames(image_index, 2, *image_size)[0])
        jpeg = encode_jpeg(frame, FrameConfig(quality=90))
        file_name = f"COCO_train2014_{image_index:012d}.jpg"
        for object_index, (expressions, (x, y, w, h)) in enumerate(OBJECTS):
            row = len(records)
            kind = ZERO_WIDTH if bad_rows and row == 4 else NO_EXPRESSION if bad_rows and row == 7 else "good"
            records.append({
                "question_id": str(row), "image": {"bytes": jpeg, "path": file_name}, "question": QUESTION,
                "answer": [] if kind == NO_EXPRESSION else list(expressions),
                "segmentation": [x, y, x + w, y, x + w, y + h, x, y + h],
                "bbox": [x, y, 0.0 if kind == ZERO_WIDTH else w, h], "iscrowd": 0, "file_name": file_name,
            })
    pq.write_table(pa.Table.from_pylist(records, schema=_schema()), path, row_group_size=4)
    return path


def _schema() -> pa.Schema:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    string, floats = {"dtype": "string", "_type": "Value"}, {"feature": {"dtype": "float32", "_type": "Value"},
                                                             "_type": "List"}
    features = {"question_id": string, "image": {"_type": "Image"}, "question": string,
                "answer": {"feature": string, "_type": "List"}, "segmentation": floats, "bbox": floats,
                "iscrowd": {"dtype": "int8", "_type": "Value"}, "file_name": string}
    return pa.schema([("question_id", pa.string()), ("image", image), ("question", pa.string()),
                      ("answer", pa.list_(pa.string())), ("segmentation", pa.list_(pa.float32())),
                      ("bbox", pa.list_(pa.float32())), ("iscrowd", pa.int8()), ("file_name", pa.string())],
                     metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()})
