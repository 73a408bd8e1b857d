"""The content gates on answers that should and should not pass: refusals, answers the robot's recorded state
contradicts, relabels that change a short or multiple-choice answer, near-duplicate answers, and a VLM judge that
catches a fluent hallucinated caption; each gate's counts reach the gates table."""

import json

import pytest

from vlaforge.annotators.answer_judge import AnswerJudge
from vlaforge.annotators.answer_validation import AnswerValidation
from vlaforge.annotators.caption_generator import CaptionGenerator
from vlaforge.annotators.eqa_generator import EqaGenerator
from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_text
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.annotators.vqa_generator import VqaGenerator
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.synth.pick_place import pick_place_episode
from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset
from vlaforge.pipelines.shards.vl_source import VlShardSource

VALIDATE = AnswerValidation(AnswerValidation.Config())


def _http(server):
    return HttpVlm.Config(base_url=server.url, model=server.model, backoff_s=0.01, concurrency=1)


@pytest.mark.parametrize(("text", "refused"), [
    ("I'm sorry, but I can't help with that.", True),
    ("As an AI language model, I cannot see images.", True),
    ("Sorry, I cannot assist with this request.", True),
    ("I cannot help with that, but the mug is red.", True),
    ("I can't see a cup in the image; the table is empty.", False),
    ("The mug is red and sits left of the gripper.", False),
])
def test_refusals_are_told_from_answers(text, refused):
    verdict = VALIDATE.text(text)
    assert (verdict.reason == DropReason.ANSWER_REFUSAL) is refused


@pytest.mark.parametrize(("answer", "facts", "contradicts"), [
    ("The gripper is holding the red mug.", {"gripper": "open"}, True),
    ("It is carrying the mug to the shelf.", {"gripper": "open"}, True),
    ("The gripper is not holding anything.", {"gripper": "open"}, False),
    ("Nothing; the gripper is empty.", {"gripper": "open"}, False),
    ("The gripper is holding the red mug.", {"gripper": "closed"}, False),
    ("The gripper is open.", {"gripper": "closed"}, True),
    ("The arm is not moving.", {"motion": "moving"}, True),
    ("The arm is moving toward the shelf.", {"motion": "still"}, True),
    ("The task is complete.", {"progress": "30"}, True),
    ("The task is complete.", {"progress": "100"}, False),
    ("The task has not started yet.", {"progress": "80"}, True),
])
def test_claims_are_checked_against_the_recorded_state(answer, facts, contradicts):
    verdict = VALIDATE.facts(answer, facts)
    assert (verdict.reason == DropReason.ANSWER_CONTRADICTS_STATE) is contradicts


def test_eqa_answers_the_recorded_state_contradicts_are_dropped():
    def confident(body):  # says "holding" whatever the facts in its prompt say
        return json.dumps({"qa": [{"question": "What is the robot holding?", "answer": "The robot is holding the "
                                   "red mug."}, {"question": "Is the arm moving?", "answer": "Yes, it is moving."}]})

    with ScriptedVlmServer(confident) as server:
        stage = EqaGenerator.Config(dataset="eqa", vlm=_http(server), frames_per_episode=3).build()
        stage.setup()
        samples = stage([pick_place_episode("ep-1")])
    # steps 0 and 89 have the gripper open: their "holding" answer goes; step 44 (closed) keeps it
    assert [len(json.loads(s.members["conversation.json"])) for s in samples] == [2, 4, 2]
    assert [d.reason for d in stage.ledger.take()] == [DropReason.ANSWER_CONTRADICTS_STATE] * 2
    gates = {row["gate"]: row for row in stage.take_tables()["gates"]}
    assert gates["facts"] == {"gate": "facts", "checked": 6, "dropped": 2}


@pytest.mark.parametrize(("question", "reference", "relabel", "agrees"), [
    ("Which is red?\n(A) the mug\n(B) the shelf\n(C) the towel", "A", "(A) The mug.", True),
    ("Which is red?\n(A) the mug\n(B) the shelf\n(C) the towel", "A", "B", False),
    ("Which is red?\n(A) the mug\n(B) the shelf", "(A)", "The answer is (B).", False),
    ("Is the mug red?", "Yes", "Yes, it is red.", True),
    ("Is the mug red?", "Yes", "No, it is blue.", False),
    ("How many mugs are there?", "two", "There are 2 mugs.", True),
    ("What animal is this?", "A cat.", "It is not a cat.", False),
    ("Describe the scene.", "A kitchen with a red mug on the table and a towel folded beside it.",
     "A bright kitchen: a red mug stands on the wooden table.", True),  # long answers may be rewritten
])
def test_relabels_of_short_and_multiple_choice_answers_must_agree(question, reference, relabel, agrees):
    verdict = VALIDATE.reference(question, reference, relabel)
    assert (verdict.reason == DropReason.ANSWER_DISAGREES_WITH_REFERENCE) is (not agrees)


def test_a_relabel_that_changes_a_short_answer_drops_the_record(tmp_path):
    general = write_vl_dataset(tmp_path / "general", n_samples=2, task=VlTask.VQA, dataset="general-vqa")
    source = VlShardSource.Config(root=str(general)).build()
    records = [r for unit in source.plan() for r in source.read(unit, DropLedger())]
    answers = iter(["Clearly: a white spacesuit.", "A dog."])  # the references: "A white spacesuit.", "A cat."
    with ScriptedVlmServer(lambda body: next(answers)) as server:
        stage = VqaGenerator.Config(dataset="relabelled", vlm=_http(server)).build()
        stage.setup()
        samples = stage(records)
    assert len(samples) == 1
    assert [d.reason for d in stage.ledger.take()] == [DropReason.ANSWER_DISAGREES_WITH_REFERENCE]


def test_near_duplicate_answers_about_one_image_are_dropped():
    pairs = {"qa": [{"question": "Where is the mug?", "answer": "The red mug is on the table."},
                    {"question": "What is on the table?", "answer": "The red mug is on the table!"},
                    {"question": "What color is the mug?", "answer": "Red."}]}
    with ScriptedVlmServer(lambda body: json.dumps(pairs)) as server:
        stage = VqaGenerator.Config(dataset="vqa", vlm=_http(server), frames_per_episode=1).build()
        stage.setup()
        [sample] = stage([pick_place_episode("ep-1")])
    assert len(json.loads(sample.members["conversation.json"])) == 4
    assert [d.reason for d in stage.ledger.take()] == [DropReason.ANSWER_NEAR_DUPLICATE]


def test_a_judge_drops_a_fluent_hallucinated_caption():
    hallucinated = "A golden retriever sleeps on a blue sofa beside a lit fireplace."
    captions = iter(["A red mug stands on a wooden table next to the gripper.", hallucinated])

    def judge(body):
        return json.dumps({"score": 2 if "golden retriever" in request_text(body) else 9, "reason": "..."})

    with ScriptedVlmServer(lambda body: next(captions)) as captioner, ScriptedVlmServer(judge) as judge_server:
        generator = CaptionGenerator.Config(dataset="captions", vlm=_http(captioner), frames_per_episode=2).build()
        generator.setup()
        samples = generator([pick_place_episode("ep-1")])
        assert len(samples) == 2  # both pass the form checks
        stage = AnswerJudge.Config(vlm=_http(judge_server), threshold=6).build()
        kept = stage(samples)
    assert len(kept) == 1 and hallucinated not in kept[0].members["conversation.json"].decode()
    [drop] = stage.ledger.take()
    assert drop.reason == DropReason.ANSWER_JUDGED_UNSUPPORTED and "scored answer 0 2 of 10" in drop.message
    provenance = json.loads(kept[0].members["meta.json"])["provenance"]
    assert provenance[-1]["prompt_version"] == "judge@v1" and provenance[-1]["settings"]["scores"] == [9.0]
    assert stage.take_tables() == {"gates": [{"gate": "judge", "checked": 2, "dropped": 1}]}


def test_an_unreadable_judge_verdict_drops_the_sample():
    with ScriptedVlmServer(lambda body: "A red mug.") as captioner, \
            ScriptedVlmServer(lambda body: "I think it is fine.") as judge_server:
        generator = CaptionGenerator.Config(dataset="c", vlm=_http(captioner), frames_per_episode=1).build()
        generator.setup()
        stage = AnswerJudge.Config(vlm=_http(judge_server)).build()
        assert stage(generator([pick_place_episode("ep-1")])) == []
    assert [d.reason for d in stage.ledger.take()] == [DropReason.ANSWER_JUDGE_UNREADABLE]
