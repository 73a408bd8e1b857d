"""EQA generator: the prompt states the robot's own state at the frame; valid pairs become a multi-turn sample."""

import json

from vlaforge.annotators.eqa_generator import EqaGenerator
from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_text
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.synth.pick_place import pick_place_episode


def _holding(body):
    text = request_text(body)
    holding = "the gripper is closed" in text
    return json.dumps({"qa": [
        {"question": "What is the robot holding?", "answer": "The red mug." if holding else "Nothing."},
        {"question": "Is the task finished?", "answer": "No, the mug is not on the shelf yet."},
    ]})


def _generator(server, **options):
    vlm = HttpVlm.Config(base_url=server.url, model=server.model, backoff_s=0.01, concurrency=1)
    stage = EqaGenerator.Config(dataset="robot-eqa", vlm=vlm, **options).build()
    stage.setup()
    return stage


def test_sensor_facts_reach_the_prompt_and_answers_follow_them():
    with ScriptedVlmServer(_holding) as server:
        samples = _generator(server, frames_per_episode=3)([pick_place_episode("ep-1")])
    prompts = [request_text(body) for body in server.requests]
    # Steps 0, 44 and 89: open and moving at the start; closed, moving, half-way, in sub-task 2 of 4 (reach, carry,
    # place, retreat) in the middle; open again at the end.
    assert "the gripper is open; the arm is moving; 0 percent" in prompts[0] and "step 1 of 4" in prompts[0]
    assert "the gripper is closed; the arm is moving; 49 percent" in prompts[1] and "step 2 of 4" in prompts[1]
    assert "the gripper is open" in prompts[2] and "100 percent" in prompts[2] and "step 4 of 4" in prompts[2]
    middle = json.loads(samples[1].members["conversation.json"])
    assert middle[1]["content"][0]["text"] == "The red mug."
    meta = json.loads(samples[1].members["meta.json"])
    assert meta["task"] == "eqa" and meta["extra"]["facts"]["gripper"] == "closed"
    assert meta["provenance"][0]["prompt_version"] == "eqa@v1"


def test_still_arm_and_unrecorded_gripper_are_said_as_such():
    episode = pick_place_episode("ep-2")
    episode.state_names[-1] = "finger_width"  # no dimension named like "gripper"
    with ScriptedVlmServer(_holding) as server:
        stage = _generator(server, frames_per_episode=1)
        facts = stage.facts(episode)
    assert facts[65]["motion"] == "still" and facts[65]["gripper"] == "not recorded"
    assert facts[40]["motion"] == "moving"


def test_truncated_json_is_rejected():
    with ScriptedVlmServer(lambda body: '{"qa": [{"question": "What is' + " very" * 600) as server:
        stage = _generator(server, frames_per_episode=1)
        assert stage([pick_place_episode("ep-3")]) == []
    assert [d.reason for d in stage.ledger.take()] == [DropReason.ANSWER_TRUNCATED]
