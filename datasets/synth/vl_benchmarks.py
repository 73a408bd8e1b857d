"""Small VL benchmark files in their published on-disk formats, over real photographs (scikit-image's), for tests
and demos of `vlaforge eval vl`.

- POPE (RUCAIBox/POPE `output/coco/coco_pope_<split>.json`): JSON lines `{"question_id", "image", "text",
  "label"}`, the label "yes" or "no", the image a COCO val2014 file name (`COCO_val2014_<12 digits>.jpg`) in an
  image folder.
- MMBench (the TSV VLMEvalKit and OpenCompass distribute, e.g. `MMBench_DEV_EN.tsv`): columns `index, question,
  hint, A, B, C, D, answer, category, image, source, l2-category, comment, split`, tab-separated as pandas writes
  it; `image` is the base64 of the encoded image; options a question lacks are empty; `hint` may be empty. In the
  circular file, row `k * 1000000 + i` is question `i` with its options rotated by k, and its `image` is the text of
  `i` (a reference to the row holding the image).
- MME (`MME_Benchmark_release_version/<subtask>/`): either the image files and one `<image stem>.txt` per image
  side by side, or `images/` and `questions_answers_YN/`; each txt has two lines `question<TAB>Yes|No`, the
  questions ending "Please answer yes or no.".
"""

from __future__ import annotations

import base64
import io
import json
import pathlib

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
"""scikit-image photographs used as benchmark images."""


def _photo(name: str, size: int = 96) -> Image.Image:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return Image.fromarray(image[..., :3]).resize((size, size))


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_pope(root: pathlib.Path, split: str = "random") -> tuple[pathlib.Path, pathlib.Path]:
    """`coco_pope_<split>.json` (8 questions, 4 yes and 4 no, 2 per image) and `val2014/`; returns both paths."""
    root = pathlib.Path(root)
    images = root / "val2014"
    images.mkdir(parents=True, exist_ok=True)
    lines, question_id = [], 1
    objects = {"astronaut": ("person", "giraffe"), "chelsea": ("cat", "surfboard"), "coffee": ("cup", "zebra"),
               "rocket": ("sky", "toaster")}
    for index, photo in enumerate(PHOTOS):
        name = f"COCO_val2014_{310196 + index:012d}.jpg"
        (images / name).write_bytes(_jpeg(_photo(photo)))
        present, absent = objects[photo]
        for thing, label in ((present, "yes"), (absent, "no")):
            lines.append({"question_id": question_id, "image": name, "text": f"Is there a {thing} in the image?",
                          "label": label})
            question_id += 1
    questions = root / f"coco_pope_{split}.json"
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return questions, images


MMBENCH_QUESTIONS = (
    ("Which animal is in the image?", None, ("cat", "dog", "horse", "bird"), "A", "chelsea", "object_localization"),
    ("What is the person wearing?", "The photo was taken by NASA.", ("a swimsuit", "a space suit"), "B", "astronaut",
     "attribute_recognition"),
    ("What is in the cup?", None, ("tea", "coffee", "milk"), "B", "coffee", "image_scene"),
)
"""(question, hint, options, answer, photo, category)."""
MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split")


def write_mmbench(path: pathlib.Path, *, circular: bool = False) -> pathlib.Path:
    """An MMBench dev TSV of 3 questions (2, 3 and 4 options); `circular` adds the rotated copies."""
    import pandas as pd

    rows = []
    for index, (question, hint, options, answer, photo, category) in enumerate(MMBENCH_QUESTIONS):
        image = base64.b64encode(_jpeg(_photo(photo))).decode()
        for shift in range(len(options) if circular else 1):
            rotated = options[shift:] + options[:shift]
            letter = "ABCD"[(("ABCD".index(answer)) - shift) % len(options)]
            rows.append({"index": shift * 1_000_000 + index, "question": question, "hint": hint,
                         **{c: (rotated[i] if i < len(rotated) else None) for i, c in enumerate("ABCD")},
                         "answer": letter, "category": category, "image": image if shift == 0 else str(index),
                         "source": "synth", "l2-category": "perception", "comment": None, "split": "dev"})
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(MMBENCH_COLUMNS)).to_csv(path, sep="\t", index=False)
    return path


def write_mme(root: pathlib.Path) -> pathlib.Path:
    """`MME_Benchmark_release_version/` with a side-by-side subtask (`existence`), a split one (`artwork`, PNG
    images) and a cognition subtask (`commonsense_reasoning`); two questions per image, one Yes and one No."""
    root = pathlib.Path(root) / "MME_Benchmark_release_version"
    subtasks = {
        "existence": (False, "jpg", [("chelsea", "Is there a cat in this image?", "Is there a train in this image?"),
                                     ("coffee", "Is there a cup in this image?", "Is there a dog in this image?")]),
        "artwork": (True, "png", [("astronaut", "Is this a photograph?", "Is this an oil painting?")]),
        "commonsense_reasoning": (False, "jpg", [("rocket", "Is this object used to reach space?",
                                                  "Is this object used to cook dinner?")]),
    }
    for subtask, (split_layout, extension, items) in subtasks.items():
        folder = root / subtask
        image_dir, text_dir = (folder / "images", folder / "questions_answers_YN") if split_layout else (folder,
                                                                                                        folder)
        image_dir.mkdir(parents=True, exist_ok=True)
        text_dir.mkdir(parents=True, exist_ok=True)
        for number, (photo, yes, no) in enumerate(items):
            stem = f"{number + 1:04d}"
            _photo(photo).save(image_dir / f"{stem}.{extension}")
            (text_dir / f"{stem}.txt").write_text(f"{yes} Please answer yes or no.\tYes\n"
                                                  f"{no} Please answer yes or no.\tNo\n")
    return root
