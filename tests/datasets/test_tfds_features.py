"""TFDS metadata: features.json flattened like the serialized keys, dataset_info.json, and step decoding."""

import numpy as np
import pytest

from vlaforge.datasets.synth.droid import droid_dataset_info, droid_features
from vlaforge.datasets.tf_example import decode_example, encode_example
from vlaforge.datasets.tfds_features import (
    FeatureKind,
    FeaturesError,
    InconsistentStepsError,
    RecordFeatureError,
    decode_episode,
    parse_dataset_info,
    parse_features,
)


def test_droid_features_flatten_to_the_serialized_keys():
    specs = parse_features(droid_features())
    observation = ["exterior_image_1_left", "exterior_image_2_left", "wrist_image_left", "cartesian_position",
                   "gripper_position", "joint_position"]
    action_dict = ["cartesian_position", "cartesian_velocity", "gripper_position", "gripper_velocity",
                   "joint_position", "joint_velocity"]
    steps = ["is_first", "is_last", "is_terminal", "language_instruction", "language_instruction_2",
             "language_instruction_3", "reward", "discount", "action"]
    assert set(specs) == {  # every DROID 1.0.1 feature listed in FORMATS.md
        *(f"steps/{k}" for k in steps), *(f"steps/observation/{k}" for k in observation),
        *(f"steps/action_dict/{k}" for k in action_dict), "episode_metadata/file_path",
        "episode_metadata/recording_folderpath",
    }
    wrist = specs["steps/observation/wrist_image_left"]
    assert (wrist.kind, wrist.shape, wrist.encoding, wrist.per_step) == (FeatureKind.IMAGE, (180, 320, 3), "jpeg", True)
    action = specs["steps/action"]
    assert (action.kind, action.shape, action.dtype, action.values_per_item) == (FeatureKind.TENSOR, (7,), "float64", 7)
    assert specs["steps/is_first"].kind is FeatureKind.SCALAR and specs["steps/is_first"].shape == ()
    assert specs["steps/action_dict/gripper_position"].values_per_item == 1
    file_path = specs["episode_metadata/file_path"]
    assert file_path.kind is FeatureKind.TEXT and not file_path.per_step


@pytest.mark.parametrize("doc", [{"pythonClassName": "something.Else"}, ["not", "a", "dict"]])
def test_a_document_that_is_not_a_features_dict_is_refused(doc):
    with pytest.raises(FeaturesError, match="expected a FeaturesDict"):
        parse_features(doc)


def test_a_malformed_feature_names_its_key():
    doc = droid_features()
    metadata = doc["featuresDict"]["features"]["episode_metadata"]["featuresDict"]["features"]
    metadata["file_path"] = {
        "pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
        "tensor": {"dtype": "float32", "shape": "seven"},
    }
    with pytest.raises(FeaturesError, match="feature episode_metadata/file_path"):
        parse_features(doc)


def test_dataset_info_lists_shards_from_the_template():
    info = parse_dataset_info(droid_dataset_info("r2d2_faceblur", "1.0.0", [2, 3, 1, 0], 1234))
    split = info.split("train")
    assert (info.name, info.version, split.num_bytes) == ("r2d2_faceblur", "1.0.0", 1234)
    assert split.shard_lengths == (2, 3, 1, 0)
    assert split.shard_files(info.name, info.file_format) == [
        f"r2d2_faceblur-train.tfrecord-0000{i}-of-00004" for i in range(4)
    ]
    with pytest.raises(FeaturesError, match="no split 'test'.*'train'"):
        info.split("test")


def _episode(n=3, **overrides):
    features = {
        "steps/action": np.arange(n * 7, dtype=np.float64),
        "steps/is_first": np.arange(n) == 0,
        "steps/language_instruction": [b"open the drawer"] * n,
        "steps/observation/wrist_image_left": [b"jpeg%d" % i for i in range(n)],
        "episode_metadata/file_path": [b"/a/success/trajectory.h5"],
    }
    return {**features, **overrides}


SPECS = {k: v for k, v in parse_features(droid_features()).items() if k in _episode()}


def test_steps_are_decoded_per_spec():
    decoded = decode_episode(decode_example(encode_example(_episode(4))), SPECS)
    assert decoded.n_steps == 4
    action = decoded.values["steps/action"]
    assert action.shape == (4, 7) and action.dtype == np.float32  # float64 features are stored as float32
    assert decoded.values["steps/is_first"].tolist() == [True, False, False, False]
    assert decoded.values["steps/observation/wrist_image_left"][3] == b"jpeg3"
    assert decoded.values["episode_metadata/file_path"] == [b"/a/success/trajectory.h5"]


def test_per_step_lists_that_disagree_raise_the_named_error():
    bad = _episode(3, **{"steps/observation/wrist_image_left": [b"a", b"b"]})
    with pytest.raises(InconsistentStepsError, match="wrist_image_left: 2 values = 2 steps"):
        decode_episode(decode_example(encode_example(bad)), SPECS)
    with pytest.raises(InconsistentStepsError, match="steps/action: 20 values"):
        decode_episode(decode_example(encode_example(_episode(3, **{"steps/action": np.zeros(20)}))), SPECS)


def test_a_feature_in_the_wrong_list_or_missing_is_a_record_error():
    wrong = _episode(3, **{"steps/action": [b"x"] * 21})
    with pytest.raises(RecordFeatureError, match="steps/action is stored in bytes_list"):
        decode_episode(decode_example(encode_example(wrong)), SPECS)
    missing = {k: v for k, v in _episode(3).items() if k != "steps/is_first"}
    with pytest.raises(RecordFeatureError, match="no feature steps/is_first"):
        decode_episode(decode_example(encode_example(missing)), SPECS)
