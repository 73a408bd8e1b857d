"""MME (Fu et al.): yes/no perception and cognition questions, two per image, scored per subtask.

Read from `MME_Benchmark_release_version/`: a folder per subtask holding either its images and one `<stem>.txt` per
image side by side, or `images/` and `questions_answers_YN/`; each txt has two lines `question<TAB>Yes|No`. The
question is the prompt as written (it ends "Please answer yes or no."). Scoring follows MME's `calculation.py`: an
answer reads as yes or no when it is exactly that (lowercase, periods dropped), else by which of the two its first
four characters contain, else "other"; per subtask, acc (questions right) and acc+ (images with both right), and
score = 100 * (acc + acc+); perception and cognition are the sums of their subtasks' scores.
"""

from __future__ import annotations

import pathlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from vlaforge.evaluation.vl_question import VlQuestion, as_jpeg

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


def read_answer(text: str) -> str:
    """MME's reading of a free-text answer: "yes", "no" or "other"."""
    answer = text.lower().strip().replace(".", "")
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


class MMEBenchmark:
    """The MME release folder (every subtask folder it holds)."""

    name = "mme"

    def __init__(self, root: str | pathlib.Path) -> None:
        self.root = pathlib.Path(root)
        self.items = self._read()

    @classmethod
    def from_path(cls, path: str | pathlib.Path) -> "MMEBenchmark":
        return cls(path)

    def _read(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: not a directory; pass MME_Benchmark_release_version/")
        items = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            split = (folder / "questions_answers_YN").is_dir() and (folder / "images").is_dir()
            texts, images = (folder / "questions_answers_YN", folder / "images") if split else (folder, folder)
            for text in sorted(texts.glob("*.txt")):
                image = next((images / f"{text.stem}{s}" for s in IMAGE_SUFFIXES
                              if (images / f"{text.stem}{s}").is_file()), None)
                if image is None:
                    raise ValueError(f"{text}: no image {text.stem}.jpg/.png beside it in {images}")
                for number, line in enumerate(text.read_text().splitlines(), 1):
                    if not line.strip():
                        continue
                    question, _, answer = line.rstrip("\n").partition("\t")
                    if answer.strip().lower() not in ("yes", "no"):
                        raise ValueError(f"{text} line {number}: expected 'question<TAB>Yes|No', got {line!r}")
                    items.append({"qid": f"{folder.name}/{text.stem}/{number}", "subtask": folder.name,
                                  "image_id": f"{folder.name}/{text.stem}", "question": question, "image": image,
                                  "answer": answer.strip().lower()})
        if not items:
            raise ValueError(f"{self.root}: no MME subtask folder with question files found")
        return items

    def questions(self) -> Iterator[VlQuestion]:
        for item in self.items:
            yield VlQuestion(qid=item["qid"], prompt=item["question"],
                             images=(as_jpeg(item["image"].read_bytes(), str(item["image"])),))

    def score(self, answers: Mapping[str, str]) -> dict[str, Any]:
        by_subtask: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for item in self.items:
            by_subtask[item["subtask"]][item["image_id"]].append(read_answer(answers.get(item["qid"], ""))
                                                                 == item["answer"])
        subtasks = {}
        for name, images in sorted(by_subtask.items()):
            flat = [ok for results in images.values() for ok in results]
            acc, acc_plus = sum(flat) / len(flat), sum(all(r) for r in images.values()) / len(images)
            subtasks[name] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * (acc + acc_plus)}
        every = [ok for images in by_subtask.values() for results in images.values() for ok in results]
        return {"accuracy": sum(every) / len(every), "subtasks": subtasks,
                "perception": sum(s["score"] for n, s in subtasks.items() if n in PERCEPTION),
                "cognition": sum(s["score"] for n, s in subtasks.items() if n in COGNITION),
                "questions": len(every)}
