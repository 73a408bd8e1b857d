"""Plan generator: segments at known events, each named by the (scripted) VLM, one plan sample per episode."""

import base64
import json
import re

from vlaforge.annotators.plan_generator import PlanGenerator
from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_images, request_text
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.synth.pick_place import pick_place_episode

NAMES = {1: "reach for the red mug", 2: "carry the mug to the shelf", 3: "place the mug on the shelf",
         4: "move the arm away."}


def _namer(body):
    index = int(re.search(r"step (\d) of 4", request_text(body)).group(1))
    return NAMES[index]


def _generator(server, **options):
    vlm = HttpVlm.Config(base_url=server.url, model=server.model, backoff_s=0.01)
    stage = PlanGenerator.Config(dataset="robot-plans", vlm=vlm, **options).build()
    stage.setup()
    return stage


def test_plan_from_named_segments():
    episode = pick_place_episode("ep-1")
    with ScriptedVlmServer(_namer) as server:
        [sample] = _generator(server, variants=["whole"])([episode])
    conversation = json.loads(sample.members["conversation.json"])
    assert '"put the red mug on the shelf"' in conversation[0]["content"][1]["text"]
    assert conversation[1]["content"][0]["text"] == (
        "1. reach for the red mug\n2. carry the mug to the shelf\n3. place the mug on the shelf\n4. move the arm away")
    assert sample.members["0.jpg"] == episode.frames["exterior_1"][0]
    meta = json.loads(sample.members["meta.json"])
    assert meta["task"] == "planning"
    assert [(s["start"], s["stop"], s["ends_with"]) for s in meta["extra"]["segments"]] == [
        (0, 30, "gripper_closes"), (30, 60, "pause"), (60, 80, "gripper_opens"), (80, 90, "episode_end")]
    # Each segment was shown as its first and last frames, with what ends it.
    by_step = {int(re.search(r"step (\d) of 4", request_text(b)).group(1)): b for b in server.requests}
    frames = episode.frames["exterior_1"]
    shown = [base64.b64decode(u.split(",", 1)[1]) for u in request_images(by_step[1])]
    assert shown == [frames[0], frames[29]]
    assert "which ends when the gripper closes" in request_text(by_step[1])
    assert "which ends when the arm stops moving" in request_text(by_step[2])


def test_one_rejected_name_drops_the_plan_and_missing_instructions_are_named():
    rambling = "first of all the robot should carefully consider " * 2  # 16 words: more than a step name
    with ScriptedVlmServer(lambda body: rambling if "step 3 of 4" in request_text(body) else _namer(body)) as server:
        stage = _generator(server)
        no_instruction = pick_place_episode("ep-3", instruction="")
        assert stage([pick_place_episode("ep-2"), no_instruction]) == []
    reasons = sorted(d.reason.value for d in stage.ledger.take())
    assert reasons == [DropReason.ANSWER_TOO_LONG.value, DropReason.NO_INSTRUCTION.value]


def test_an_episode_without_events_has_no_plan():
    episode = pick_place_episode("ep-4")
    episode.state[:, -1] = 0.0  # the gripper never closes
    episode.extras["cartesian_position"][:, 0] = 0.4 + 0.1 * episode.timestamps  # and the arm never stops
    with ScriptedVlmServer(_namer) as server:
        stage = _generator(server)
        assert stage([episode]) == []
    [drop] = stage.ledger.take()
    assert drop.reason == DropReason.TOO_FEW_SEGMENTS and "1 segments" in drop.message


def test_next_sub_task_samples_from_the_frame_where_each_starts():
    episode = pick_place_episode("ep-5")
    with ScriptedVlmServer(_namer) as server:
        samples = _generator(server)([episode])
    whole, *following = samples
    assert json.loads(whole.members["meta.json"])["extra"]["segments"][0]["name"] == NAMES[1]
    assert len(following) == 4 and len(server.requests) == 4  # the same four names: no extra VLM call
    frames = episode.frames["exterior_1"]
    for index, (sample, start) in enumerate(zip(following, (0, 30, 60, 80))):
        question, answer = (m["content"][-1]["text"] for m in json.loads(sample.members["conversation.json"]))
        assert sample.members["0.jpg"] == frames[start] and answer == NAMES[index + 1].rstrip(".")
        assert '"put the red mug on the shelf"' in question
        meta = json.loads(sample.members["meta.json"])
        assert meta["extra"]["variant"] == "next" and meta["extra"]["subtask"] == index + 1
        assert meta["provenance"][0]["prompt_version"] == "plan@v1+plan_next@v1"
    assert "Nothing is done yet." in json.loads(following[0].members["conversation.json"])[0]["content"][1]["text"]
    third = json.loads(following[2].members["conversation.json"])[0]["content"][1]["text"]
    assert "Done so far: reach for the red mug; carry the mug to the shelf." in third
