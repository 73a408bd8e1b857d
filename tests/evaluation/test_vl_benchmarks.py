"""The VL benchmark readers on files written in their published formats, scored from known answers exactly as the
benchmarks' own evaluation scripts score them."""

import json

import pytest

from vlaforge.datasets.synth.vl_benchmarks import write_mmbench, write_mme, write_pope
from vlaforge.evaluation.mmbench import MMBenchBenchmark, match_option
from vlaforge.evaluation.mme import MMEBenchmark, read_answer
from vlaforge.evaluation.pope import PopeBenchmark, answer_is_yes
from vlaforge.evaluation.vl_question import JPEG_MAGIC


def test_pope_reads_its_json_lines_and_scores_like_pope(tmp_path):
    questions_file, _ = write_pope(tmp_path)
    pope = PopeBenchmark(questions_file)
    questions = list(pope.questions())
    assert [q.qid for q in questions] == [str(i) for i in range(1, 9)]
    assert questions[0].prompt == ("Is there a person in the image?\nAnswer the question using a single word or "
                                   "phrase.")
    assert questions[0].images[0].startswith(JPEG_MAGIC)
    # POPE's reading: first sentence, commas dropped, "no"/"not"/"No" anywhere in it means no
    assert [answer_is_yes(a) for a in ("Yes.", "No, there is not.", "There is not a cat", "yes. No", "Nope")] == [
        True, False, False, True, True]
    labels = [json.loads(line)["label"] for line in questions_file.read_text().splitlines()]
    answers = {str(i + 1): "Yes" for i in range(8)}  # always yes: 4 right (the yes questions), 4 false positives
    assert pope.score(answers) == {"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "yes_ratio": 1.0,
                                   "questions": 8}
    truthful = {str(i + 1): label for i, label in enumerate(labels)}
    assert pope.score(truthful)["accuracy"] == 1.0 and pope.score(truthful)["f1"] == 1.0


def test_pope_names_a_missing_image(tmp_path):
    questions_file, images = write_pope(tmp_path)
    next(images.iterdir()).unlink()
    with pytest.raises(ValueError, match=r"coco_pope_random.json: question \d names image COCO_val2014_\d{12}.jpg"):
        list(PopeBenchmark(questions_file).questions())


@pytest.mark.parametrize("circular_file", [False, True])
def test_mmbench_circular_evaluation(tmp_path, circular_file):
    """Rotations come from the file's copies or are made here; either way a question counts only when every
    rotation is right, and the copies' images resolve to their original row's."""
    bench = MMBenchBenchmark(write_mmbench(tmp_path / "MMBench_DEV_EN.tsv", circular=circular_file))
    questions = list(bench.questions())
    assert len(questions) == 4 + 2 + 3 and bench.score({})["questions"] == 3
    first = next(q for q in questions if q.qid == "0")
    assert first.prompt.startswith("Question: Which animal is in the image?\nOptions:\nA. cat\nB. dog\nC. horse\n")
    second = next(q for q in questions if q.qid == "1")
    assert second.prompt.startswith("Hint: The photo was taken by NASA.\nQuestion: What is the person wearing?\n")
    assert "C." not in second.prompt  # a 2-option question shows 2 options
    rotated = next(q for q in questions if q.qid == "1000000")
    assert rotated.images == first.images and "A. dog\nB. horse\nC. bird\nD. cat" in rotated.prompt

    right = {q.qid: bench.rows[int(q.qid)]["answer"] for q in questions}
    assert bench.score(right)["accuracy"] == 1.0
    always_a = {q.qid: "A" for q in questions}  # right only on the rotations whose answer is A
    scored = bench.score(always_a)
    assert scored["accuracy"] == 0.0 and scored["vanilla_accuracy"] == pytest.approx(1 / 3)
    by_text = {q.qid: f"The answer is {bench.rows[int(q.qid)]['options'][bench.rows[int(q.qid)]['answer']]}."
               for q in questions}
    assert bench.score(by_text)["accuracy"] == 1.0 and bench.score(by_text)["unmatched"] == 0


def test_mmbench_option_matching():
    options = {"A": "a swimsuit", "B": "a space suit"}
    assert match_option("B", options) == "B" and match_option("(B) a space suit", options) == "B"
    assert match_option("A or B", options) is None and match_option("I am wearing a space suit", options) == "B"
    assert match_option("Certainly", options) is None


def test_mme_reads_both_layouts_and_scores_acc_plus(tmp_path):
    mme = MMEBenchmark(write_mme(tmp_path))
    questions = list(mme.questions())
    assert len(questions) == 8 and all(q.images[0].startswith(JPEG_MAGIC) for q in questions)  # PNG re-encoded
    assert {q.qid.split("/")[0] for q in questions} == {"existence", "artwork", "commonsense_reasoning"}
    assert [read_answer(a) for a in ("Yes", "no.", "Yes, it is", "Nope", "maybe")] == ["yes", "no", "yes", "no",
                                                                                        "other"]
    yes = mme.score({q.qid: "Yes" for q in questions})
    assert yes["subtasks"]["existence"] == {"acc": 0.5, "acc_plus": 0.0, "score": 50.0}
    right = {q.qid: ("Yes" if q.qid.endswith("/1") else "No") for q in questions}
    scored = mme.score(right)
    assert scored["accuracy"] == 1.0 and scored["subtasks"]["artwork"]["score"] == 200.0
    assert scored["perception"] == 400.0 and scored["cognition"] == 200.0


def test_mme_refuses_a_malformed_line(tmp_path):
    root = write_mme(tmp_path)
    (root / "existence" / "0001.txt").write_text("Is there a cat?\tMaybe\n")
    with pytest.raises(ValueError, match=r"existence/0001.txt line 1: expected 'question<TAB>Yes\|No'"):
        MMEBenchmark(root)
