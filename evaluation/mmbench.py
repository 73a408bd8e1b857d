"""MMBench (Liu et al., 2024): multiple-choice questions over images, scored with circular evaluation.

Read from the TSV VLMEvalKit and OpenCompass distribute (`MMBench_DEV_EN.tsv` and its kin): columns `index,
question, hint, A, B, C, D, answer, category, image, ...`; `image` is a base64 image, or, on a circular copy, the
index of the row holding the image. Circular evaluation asks a question of n options n times with its options
rotated, and counts it correct only if every rotation is answered correctly: row `k * 1000000 + i` is rotation k
of question i. A file of originals only (the dev TSV without copies) is rotated here the same way.

The prompt is VLMEvalKit's: "Hint: ...\\nQuestion: ...\\nOptions:\\nA. ...\\n" and "Please select the correct answer
from the options above.". An answer is matched to an option without a judge model (VLMEvalKit falls back to a GPT
judge where its rules fail; here such answers count as wrong and are reported as `unmatched`): a single option
letter standing alone in the answer, else a single option whose text the answer contains.
"""

from __future__ import annotations

import base64
import binascii
import csv
import pathlib
import re
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from vlaforge.evaluation.vl_question import VlQuestion, as_jpeg

LETTERS = "ABCDEFGHI"
CIRCULAR_STRIDE = 1_000_000
INSTRUCTION = "Please select the correct answer from the options above. \n"


def _blank(value: str | None) -> bool:
    return value is None or value.strip() == "" or value == "nan"


def match_option(answer: str, options: Mapping[str, str]) -> str | None:
    """The option letter an answer names, or None when it names none or several."""
    letters = set(re.findall(r"(?<![A-Za-z])([A-I])(?![A-Za-z])", answer)) & set(options)
    if len(letters) == 1:
        return letters.pop()
    text = answer.lower()
    named = [letter for letter, option in options.items() if option.lower() in text]
    return named[0] if len(named) == 1 else None


class MMBenchBenchmark:
    """One MMBench TSV, its rotations and its circular score."""

    name = "mmbench"

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.rows = self._rotations(self._read())

    @classmethod
    def from_path(cls, path: str | pathlib.Path) -> "MMBenchBenchmark":
        return cls(path)

    def _read(self) -> dict[int, dict[str, Any]]:
        csv.field_size_limit(sys.maxsize)  # base64 images are long fields
        rows = {}
        with self.path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, delimiter="\t")
            missing = {"index", "question", "answer", "image", "A", "B"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{self.path}: not an MMBench TSV, columns {sorted(missing)} are missing")
            for row in reader:
                options = {c: row[c] for c in LETTERS if c in row and not _blank(row[c])}
                if row["answer"] not in options:
                    raise ValueError(f"{self.path}: row index {row['index']}: answer {row['answer']!r} is not one of "
                                     f"its options {sorted(options)}")
                rows[int(float(row["index"]))] = {"question": row["question"], "options": options,
                                                   "hint": None if _blank(row.get("hint")) else row["hint"],
                                                   "answer": row["answer"], "image": row["image"],
                                                   "category": row.get("category") or "-"}
        return rows

    def _rotations(self, rows: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Every rotation of every question; the file's own copies are kept, missing ones are made."""
        full = dict(rows)
        for index, row in rows.items():
            if index >= CIRCULAR_STRIDE:
                continue
            letters = list(row["options"])
            for shift in range(1, len(letters)):
                if shift * CIRCULAR_STRIDE + index in rows:
                    continue
                texts = [row["options"][letters[(i + shift) % len(letters)]] for i in range(len(letters))]
                answer = letters[(letters.index(row["answer"]) - shift) % len(letters)]
                full[shift * CIRCULAR_STRIDE + index] = {**row, "options": dict(zip(letters, texts)),
                                                         "answer": answer, "image": str(index)}
        return dict(sorted(full.items()))

    def _image(self, index: int) -> bytes:
        value = self.rows[index]["image"]
        if len(value) <= 64 and value.strip().isdigit():  # a circular copy names the row that holds the image
            value = self.rows[int(value)]["image"]
        try:
            return as_jpeg(base64.b64decode(value, validate=True), f"{self.path} row index {index}")
        except binascii.Error:
            raise ValueError(f"{self.path}: row index {index}: the image column is not base64") from None

    def questions(self) -> Iterator[VlQuestion]:
        for index, row in self.rows.items():
            prompt = f"Hint: {row['hint']}\n" if row["hint"] else ""
            prompt += f"Question: {row['question']}\nOptions:\n"
            prompt += "".join(f"{letter}. {text}\n" for letter, text in row["options"].items()) + INSTRUCTION
            yield VlQuestion(qid=str(index), prompt=prompt, images=(self._image(index),))

    def score(self, answers: Mapping[str, str]) -> dict[str, Any]:
        hits: dict[int, list[bool]] = defaultdict(list)
        unmatched = 0
        for index, row in self.rows.items():
            choice = match_option(answers.get(str(index), ""), row["options"])
            unmatched += choice is None
            hits[index % CIRCULAR_STRIDE].append(choice == row["answer"])
        passed = {question: all(results) for question, results in hits.items()}
        by_category: dict[str, list[bool]] = defaultdict(list)
        for question, ok in passed.items():
            by_category[self.rows[question]["category"]].append(ok)
        return {"accuracy": sum(passed.values()) / len(passed) if passed else 0.0,
                "vanilla_accuracy": sum(h[0] for h in hits.values()) / len(hits) if hits else 0.0,
                "categories": {name: sum(v) / len(v) for name, v in sorted(by_category.items())},
                "questions": len(passed), "prompts": len(self.rows), "unmatched": unmatched}
