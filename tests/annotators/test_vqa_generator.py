"""VQA generator against the scripted server: QA pairs for robot frames, and relabelling a general VL dataset."""

import json

from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_images, request_text
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.annotators.vqa_generator import VqaGenerator
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.schema import VlTask, sample_key
from vlaforge.datasets.synth.pick_place import pick_place_episode
from vlaforge.datasets.synth.scenes import QUESTIONS
from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset
from vlaforge.pipelines.shards.vl_source import VlShardSource

PAIRS = {"qa": [
    {"question": "What color is the mug?", "answer": "The mug is red."},
    {"question": "what color is the mug?", "answer": "Red."},  # the same question again
    {"question": "Is the gripper holding anything?", "answer": ""},  # an empty answer
    {"question": "Where is the mug?", "answer": "On the table, left of the gripper."},
]}


def _generator(server, **options):
    vlm = HttpVlm.Config(base_url=server.url, model=server.model, backoff_s=0.01, concurrency=1)
    stage = VqaGenerator.Config(dataset="robot-vqa", vlm=vlm, **options).build()
    stage.setup()
    return stage


def test_valid_pairs_become_one_multi_turn_sample_and_bad_pairs_are_counted():
    with ScriptedVlmServer(lambda body: json.dumps(PAIRS)) as server:
        stage = _generator(server, frames_per_episode=1, qa_per_frame=4)
        [sample] = stage([pick_place_episode("ep-1")])
    assert server.requests[0]["response_format"] == {"type": "json_object"}
    assert "Write 4 different question-answer pairs" in request_text(server.requests[0])
    conversation = json.loads(sample.members["conversation.json"])
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    assert conversation[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What color is the mug?"}]
    assert conversation[2]["content"] == [{"type": "text", "text": "Where is the mug?"}]
    assert conversation[3]["content"][0]["text"] == "On the table, left of the gripper."
    meta = json.loads(sample.members["meta.json"])
    assert meta["task"] == "vqa" and meta["source_key"] == sample_key("ep-1", 0)
    assert meta["provenance"][0]["prompt_version"] == "vqa@v1"
    assert [d.reason for d in stage.ledger.take()] == [DropReason.ANSWER_EMPTY]


def test_an_answer_that_is_not_the_asked_json_is_rejected_by_name():
    answers = iter(["Sure! The mug is red.", json.dumps({"questions": []}), json.dumps({"qa": "none"})])
    with ScriptedVlmServer(lambda body: next(answers)) as server:
        stage = _generator(server, frames_per_episode=3)
        assert stage([pick_place_episode("ep-2")]) == []
    assert [d.reason for d in stage.ledger.take()] == [
        DropReason.ANSWER_NOT_JSON, DropReason.ANSWER_JSON_SHAPE, DropReason.ANSWER_JSON_SHAPE]


def test_relabelling_a_general_dataset_keeps_questions_and_images_and_rewrites_answers(tmp_path):
    general = write_vl_dataset(tmp_path / "general", n_samples=4, task=VlTask.VQA, dataset="general-vqa")
    source = VlShardSource.Config(root=str(general)).build()
    records = [r for unit in source.plan() for r in source.read(unit, DropLedger())]

    def better(body):
        reference = request_text(body).split("Reference answer: ", 1)[1].split("\n", 1)[0]
        return f"Clearly: {reference}"

    with ScriptedVlmServer(better) as server:
        stage = _generator(server)
        samples = stage(records)
    assert sorted(s.key for s in samples) == sorted(r.key for r in records)
    by_key = {r.key: r for r in records}
    for sample in samples:
        record = by_key[sample.key]
        conversation = json.loads(sample.members["conversation.json"])
        assert conversation[0] == record.conversation[0]  # the question, images first, unchanged
        old_answer = record.conversation[1]["content"][0]["text"]
        assert conversation[1]["content"][0]["text"] == f"Clearly: {old_answer}"
        assert old_answer in {a for _, a in QUESTIONS.values()}
        assert [sample.members[f"{i}.jpg"] for i in range(len(record.images))] == list(record.images)
        meta = json.loads(sample.members["meta.json"])
        assert [p["model"] for p in meta["provenance"]] == ["vlaforge-synth", "scripted-vlm"]
        assert meta["provenance"][1]["prompt_version"] == "relabel@v1"
        assert meta["task"] == "vqa" and meta["extra"]["relabelled_from"] == "general-vqa"
        assert meta["source_group"] == record.meta["source_group"] and meta["split"] == record.meta["split"]
    assert all(len(request_images(body)) == 1 for body in server.requests)


def test_a_rejected_relabel_drops_the_record_whole(tmp_path):
    general = write_vl_dataset(tmp_path / "general", n_samples=2, task=VlTask.CAPTION, dataset="general-cap")
    source = VlShardSource.Config(root=str(general)).build()
    records = [r for unit in source.plan() for r in source.read(unit, DropLedger())]
    answers = iter(["Write the best answer to the question for this image, please.", "A cat with green eyes."])
    with ScriptedVlmServer(lambda body: next(answers)) as server:
        stage = _generator(server)
        samples = stage(records)
    assert len(samples) == 1
    [drop] = stage.ledger.take()
    assert drop.reason == DropReason.ANSWER_ECHOES_PROMPT and drop.episode == records[0].key
