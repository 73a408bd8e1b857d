"""Observation maps read each robot client's own keys: openpi's LIBERO layout (flat keys with `/`), its ALOHA layout
(nested dicts, [3, H, W] frames), frames resized to the training size in the loader's camera order."""

import numpy as np
import pytest

from vlaforge.training.policy.observation_map import ObservationError, ObservationMap

LIBERO = ObservationMap(embodiment="franka_libero", state="observation/state",
                        cameras={"observation/wrist_image": "wrist", "observation/image": "exterior_1"},
                        image_size=(32, 48))


def libero_observation(**changes):
    observation = {"observation/image": np.full((256, 256, 3), 10, np.uint8),
                   "observation/wrist_image": np.full((224, 224, 3), 200, np.uint8),
                   "observation/state": np.arange(8, dtype=np.float64), "prompt": "put the bowl on the plate"}
    return {**observation, **changes}


def test_openpis_libero_layout_is_read_resized_and_in_the_loaders_camera_order():
    observation, prefix = LIBERO.parse(libero_observation(), state_dim=8, action_dim=7)
    assert prefix is None and observation.embodiment == "franka_libero"
    assert [image.shape for image in observation.images] == [(32, 48, 3), (32, 48, 3)]
    # exterior_1 comes before wrist in the model's slots, whatever order the map lists them in
    assert observation.images[0].mean() == 10 and observation.images[1].mean() == 200
    assert observation.state.dtype == np.float32 and observation.instruction == "put the bowl on the plate"
    prompt_array = libero_observation(prompt=np.array("open the drawer"))  # a NumPy string scalar, as sent by some
    assert LIBERO.parse(prompt_array, 8, 7)[0].instruction == "open the drawer"


def test_openpis_aloha_layout_nested_and_channels_first():
    aloha = ObservationMap(embodiment="bimanual_2x6dof", cameras={"images/cam_high": "exterior_1"},
                           default_prompt="fold the towel", image_size=(16, 16))
    frame = np.zeros((3, 224, 224), np.uint8)
    frame[0] = 255  # red, channels first
    observation, _ = aloha.parse({"images": {"cam_high": frame}, "state": list(np.zeros(14))}, 14, 14)
    assert observation.images[0].shape == (16, 16, 3)
    assert observation.images[0][..., 0].min() == 255 and observation.images[0][..., 1:].max() == 0
    assert observation.instruction == "fold the towel"  # the default prompt when the client sends none


@pytest.mark.parametrize(("changes", "message"), [
    ({"observation/state": np.zeros(7)}, r"'observation/state': expected a float32 array of shape \[8\], got "
                                         r"float64 array of shape \[7\]"),
    ({"observation/image": np.zeros((4, 4), np.uint8)}, r"'observation/image': expected a uint8 image of shape "
                                                        r"\[H, W, 3\] \(or \[3, H, W\]\), got uint8 array of shape "
                                                        r"\[4, 4\]"),
    ({"prompt": None}, r"'prompt' is missing: expected the instruction \(a string\); this server has no default"),
    ({"prompt": 3}, r"'prompt': expected a string, got int"),
    ({"action_prefix": np.zeros((2, 6))}, r"'action_prefix': expected a float32 array of shape \[N, 7\]"),
    ({"observation/state": ["a", "b"]}, r"'observation/state': expected a float32 array of shape \[8\], got a list"),
])
def test_errors_name_the_key_the_expected_shape_and_what_arrived(changes, message):
    with pytest.raises(ObservationError, match=message):
        LIBERO.parse(libero_observation(**changes), state_dim=8, action_dim=7)


def test_a_missing_camera_lists_what_the_observation_has():
    observation = libero_observation()
    del observation["observation/wrist_image"]
    with pytest.raises(ObservationError, match=r"'observation/wrist_image' is missing.*the observation has "
                                               r"\['observation/image', 'observation/state', 'prompt'\]"):
        LIBERO.parse(observation, 8, 7)


def test_the_map_file_round_trips_and_bad_maps_are_refused(tmp_path):
    assert ObservationMap.load(LIBERO.save(tmp_path / "observation_map.json")) == LIBERO
    (tmp_path / "bad.json").write_text('{"embodiment": "x", "cameras": {"a": "exterior_1"}, "camera": {}}')
    with pytest.raises(ValueError, match=r"bad.json: observation map: unknown field\(s\) \['camera'\]"):
        ObservationMap.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cameras must map observation keys to cameras of"):
        ObservationMap(embodiment="x", cameras={"image": "front"})


def test_metadata_describes_every_key_a_client_must_send():
    described = LIBERO.describe(state_dim=8, action_dim=7, chunk_len=10)
    assert list(described) == ["observation/image", "observation/wrist_image", "observation/state", "prompt",
                               "action_prefix"]
    assert described["observation/state"]["shape"] == [8]
    assert described["action_prefix"] == {"kind": "action_prefix", "dtype": "float32", "shape": [None, 7],
                                          "max_len": 9, "required": False}
    assert described["prompt"]["required"] is True
