"""Phrase extraction: the rules on real robot instructions, the ontology and negatives, the VLM extractor."""

import json

import numpy as np
import pytest

from vlaforge.annotators.grounding_frame import GroundingFrame
from vlaforge.annotators.phrases import PhraseStage, parse_vlm_phrases, rule_phrases
from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_text
from vlaforge.annotators.vlm_http import HttpVlm


@pytest.mark.parametrize("instruction, phrases", [
    ("put the red mug on the shelf", ["red mug", "shelf"]),
    ("Pick up the blue block and place it in the bowl.", ["blue block", "bowl"]),
    ("move the pot to the left side of the stove", ["pot", "stove"]),
    ("open the top drawer", ["top drawer"]),
    ("Put the marker inside the cup, then close the drawer", ["marker", "cup", "drawer"]),
    ("take the bag of chips out of the basket", ["bag of chips", "basket"]),
    ("turn the faucet to the right", ["faucet"]),
    ("wipe the table with the green sponge", ["table", "green sponge"]),
    ("wipe the table using the blue cloth", ["table", "blue cloth"]),
    ("shut the laptop", ["laptop"]),
    ("", []),
])
def test_rule_phrases_on_robot_instructions(instruction, phrases):
    assert rule_phrases(instruction) == phrases


def test_long_phrases_keep_their_head_noun():
    assert rule_phrases("grab the small shiny round metal bottle cap", max_words=3) == ["metal bottle cap"]


def _frames(instructions, episode="ep-1", n=2):
    return [GroundingFrame(dataset="d", episode_id=episode, source_file="f.tar", step=i, camera="wrist", jpeg=b"",
                           pixels=np.zeros((4, 4, 3), np.uint8), selected_by="first", instructions=instructions)
            for i in range(n)]


def test_stage_adds_the_ontology_and_negatives_and_caps_the_count():
    stage = PhraseStage.Config(ontology=("Robot Gripper", "shelf"), negatives=("elephant",), max_phrases=3).build()
    frames = stage(_frames(["put the red mug on the shelf", "place the mug on the shelf"]))
    assert frames[0].phrases == ["red mug", "shelf", "mug"]  # instruction phrases first, deduplicated, capped
    assert frames[0].negatives == ["elephant"] and frames[0].queried == ["red mug", "shelf", "mug", "elephant"]
    assert stage.ledger.take() == []


def test_an_episode_with_nothing_to_ground_is_dropped_once_with_a_reason():
    stage = PhraseStage.Config().build()
    assert stage(_frames(["go there"], "ep-empty", n=3) + _frames(["push the can"], "ep-2")) != []
    (drop,) = stage.ledger.take()
    assert drop.reason.value == "no_phrases" and drop.episode == "ep-empty" and "--class" in drop.message


def test_config_rejects_empty_and_clashing_phrases():
    with pytest.raises(ValueError, match=r"ontology holds '  '"):
        PhraseStage.Config(ontology=("  ",))
    with pytest.raises(ValueError, match="both in the ontology and a negative"):
        PhraseStage.Config(ontology=("cat",), negatives=("Cat",))


def test_parse_vlm_phrases():
    assert parse_vlm_phrases('{"objects": ["The Red Mug", "shelf", "shelf"]}') == ["the red mug", "shelf"]
    assert parse_vlm_phrases('Sure! ```json\n["mug"]\n```') == ["mug"]
    assert parse_vlm_phrases("I cannot help with that.") is None
    assert parse_vlm_phrases('{"objects": [1, 2]}') is None


def test_vlm_extractor_through_a_chat_completions_server_with_rule_fallback():
    def responder(body):
        text = request_text(body)
        if "push the can" in text:
            return "no idea"  # garbage: the rules take over
        return json.dumps({"objects": ["ceramic mug", "wooden shelf"]})

    with ScriptedVlmServer(responder) as server:
        stage = PhraseStage.Config(vlm=HttpVlm.Config(base_url=server.url, model="scripted-vlm")).build()
        stage.setup()
        mug = stage(_frames(["put the red mug on the shelf"]))
        can = stage(_frames(["push the can"], "ep-2"))
    assert mug[0].phrases == ["ceramic mug", "wooden shelf"]
    assert can[0].phrases == ["can"] and stage.vlm_fallbacks == 1
    assert len(server.requests) == 2  # one request per distinct instruction, not per frame
