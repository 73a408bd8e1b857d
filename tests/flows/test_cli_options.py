"""Options several verbs share, parsed as a user types them."""

import argparse

import pytest

from vlaforge.flows.cli_options import stage_pool


def test_a_stage_pool_option_names_the_stage_and_its_placement():
    assert stage_pool("grounding_dino=num_gpus=0.5,actors=2") == ("grounding_dino", {"num_gpus": 0.5, "actors": 2})
    assert stage_pool("vlm=num_cpus=4") == ("vlm", {"num_cpus": 4.0})


@pytest.mark.parametrize("text, message", [
    ("sam", "takes NAME=num_gpus=G"),
    ("sam=gpus=1", "'gpus' is not one of num_gpus, num_cpus, actors"),
    ("sam=actors=two", "actors takes a number, got 'two'"),
])
def test_a_malformed_stage_pool_says_what_it_takes(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        stage_pool(text)
