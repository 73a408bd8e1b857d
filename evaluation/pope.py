"""POPE (Li et al., 2023): object-hallucination polling, "Is there a <object> in the image?", answered yes or no.

Read from its published files: a question file of JSON lines `{"question_id", "image", "text", "label"}` (for
example RUCAIBox/POPE's `coco_pope_random.json`, `_popular`, `_adversarial`) and the COCO val2014 images it names,
beside it or in `val2014/` beside it. The prompt appends LLaVA-1.5's "Answer the question using a single word or
phrase.". Scoring follows POPE's own evaluation: keep the answer's first sentence, drop commas, split on
spaces; "No", "no" or "not" among the words reads as no, anything else as yes. Metrics: accuracy, precision, recall and F1 with yes as the positive
class, and the share of yes answers.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

from vlaforge.evaluation.vl_question import VlQuestion, as_jpeg

PROMPT_SUFFIX = "\nAnswer the question using a single word or phrase."
LABELS = ("yes", "no")


def answer_is_yes(text: str) -> bool:
    """POPE's reading of a free-text answer."""
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return not ({"No", "no", "not"} & set(words))


class PopeBenchmark:
    """One POPE question file with its image folder."""

    name = "pope"

    def __init__(self, questions_file: str | pathlib.Path) -> None:
        self.questions_file = pathlib.Path(questions_file)
        self.rows = self._read()

    @classmethod
    def from_path(cls, path: str | pathlib.Path) -> "PopeBenchmark":
        """A question file; its images are beside it or in `val2014/` beside it."""
        return cls(path)

    def _read(self) -> list[dict[str, Any]]:
        rows = []
        for number, line in enumerate(self.questions_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                missing = [k for k in ("question_id", "image", "text", "label") if k not in row]
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.questions_file} line {number}: not JSON ({error}); POPE question files "
                                 "hold one JSON object per line") from None
            if missing or row["label"] not in LABELS:
                raise ValueError(f"{self.questions_file} line {number}: needs question_id, image, text and a "
                                 f"label of yes or no; missing {missing}, label {row.get('label')!r}")
            rows.append(row)
        return rows

    def questions(self) -> Iterator[VlQuestion]:
        folder = self.questions_file.parent
        for row in self.rows:
            image = next((p for p in (folder / row["image"], folder / "val2014" / row["image"]) if p.is_file()), None)
            if image is None:
                raise ValueError(f"{self.questions_file}: question {row['question_id']} names image {row['image']}, "
                                 f"found neither beside the file nor in {folder / 'val2014'}; put the COCO val2014 "
                                 "images there")
            yield VlQuestion(qid=str(row["question_id"]), prompt=row["text"] + PROMPT_SUFFIX,
                             images=(as_jpeg(image.read_bytes(), str(image)),))

    def score(self, answers: Mapping[str, str]) -> dict[str, Any]:
        truth = [row["label"] == "yes" for row in self.rows]
        said = [answer_is_yes(answers.get(str(row["question_id"]), "")) for row in self.rows]
        tp = sum(t and s for t, s in zip(truth, said))
        fp = sum(s and not t for t, s in zip(truth, said))
        fn = sum(t and not s for t, s in zip(truth, said))
        correct = sum(t == s for t, s in zip(truth, said))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"accuracy": correct / len(self.rows) if self.rows else 0.0, "precision": precision,
                "recall": recall, "f1": f1, "yes_ratio": sum(said) / len(self.rows) if self.rows else 0.0,
                "questions": len(self.rows)}
