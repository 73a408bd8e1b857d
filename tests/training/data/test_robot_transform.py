"""Robot samples from real ingested DROID shards -> normalized, padded, sliced arrays."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import simplejpeg
import webdataset as wds
from PIL import Image

from vlaforge.datasets.drops import DropReason
from vlaforge.training.data.bad_samples import BadSampleError
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.normalization import NormKind
from vlaforge.training.data.robot_transform import RobotSampleTransform, decode_frame

CAMERAS = ("exterior_1", "exterior_2", "wrist", "left_wrist")


@pytest.fixture(scope="module")
def shards(droid_shards):
    output, _ = droid_shards
    urls = sorted(str(p) for p in (output / "train").glob("*.tar"))
    stats = json.loads((output / "stats.json").read_text())
    return urls, stats


@pytest.fixture(scope="module")
def raw_samples(shards):
    """Every train sample as webdataset reads it with no decoder: members are bytes."""
    urls, _ = shards
    return [dict(sample, component="droid") for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False)]


def build(stats, **options):
    config = RobotSampleTransform.Config(cameras=CAMERAS, image_size=(96, 128), chunk_len=8, **options)
    return config.build({"droid": stats})


def npy(sample, member):
    return np.load(io.BytesIO(sample[member]), allow_pickle=False)


def test_state_and_actions_are_normalized_with_the_datasets_stats_and_padded_to_32(shards, raw_samples):
    _, stats = shards
    transform = build(stats)
    sample = raw_samples[5]
    meta = json.loads(sample["meta.json"])
    entry = stats["embodiments"][meta["embodiment"]]
    example = transform(sample)

    state = npy(sample, "state.npy")
    expected_state = (state - np.array(entry["state"]["mean"])) / (np.array(entry["state"]["std"]) + 1e-6)
    ds = len(state)
    np.testing.assert_allclose(example.state[:ds], expected_state, rtol=1e-5, atol=1e-5)
    assert example.state.shape == (32,) and not example.state[ds:].any()
    assert example.state_mask.tolist() == [True] * ds + [False] * (32 - ds)

    chunk = npy(sample, "action.npy")
    da = chunk.shape[1]
    expected = (chunk[:8] - np.array(entry["action"]["mean"])) / (np.array(entry["action"]["std"]) + 1e-6)
    assert example.actions.shape == (8, 32)
    np.testing.assert_allclose(example.actions[:, :da], expected, rtol=1e-5, atol=1e-5)
    assert not example.actions[:, da:].any()
    assert example.action_mask.tolist() == [True] * da + [False] * (32 - da)
    assert example.instruction == meta["instruction"] and example.instruction
    assert (example.key, example.component, example.embodiment) == (sample["__key__"], "droid", meta["embodiment"])


def test_chunk_is_sliced_to_T_with_the_valid_len_from_meta(shards, raw_samples):
    _, stats = shards
    transform = build(stats)
    tail = [s for s in raw_samples if json.loads(s["meta.json"])["valid_len"] < 8]
    assert tail, "the fixture has episode ends"
    for sample in tail:
        valid = json.loads(sample["meta.json"])["valid_len"]
        example = transform(sample)
        assert example.valid_len == valid
        assert example.actions[:valid, :8].any() and not example.actions[valid:].any()
    full = next(s for s in raw_samples if json.loads(s["meta.json"])["valid_len"] == 32)
    assert transform(full).valid_len == 8


def test_quantile_option_maps_q01_to_minus_one_and_q99_to_plus_one(shards, raw_samples):
    _, stats = shards
    sample = raw_samples[3]
    embodiment = json.loads(sample["meta.json"])["embodiment"]
    entry = stats["embodiments"][embodiment]["state"]
    q01, q99 = np.array(entry["q01"]), np.array(entry["q99"])
    state = npy(sample, "state.npy")
    example = build(stats, norm=NormKind.QUANTILE)(sample)
    expected = 2 * (state - q01) / (q99 - q01 + 1e-6) - 1
    np.testing.assert_allclose(example.state[:len(state)], expected, rtol=1e-4, atol=1e-4)
    low = dict(sample, **{"state.npy": _npy_bytes(q01.astype(np.float32))})
    np.testing.assert_allclose(build(stats, norm="quantile")(low).state[:len(q01)], -1, atol=1e-4)


def test_frames_are_decoded_to_the_model_size_in_camera_slots_with_a_mask(shards, raw_samples):
    _, stats = shards
    sample = raw_samples[0]
    example = build(stats)(sample)
    assert example.images.shape == (4, 96, 128, 3) and example.images.dtype == np.uint8
    assert example.image_mask.tolist() == [True, True, True, False]  # DROID has no left wrist camera
    assert not example.images[3].any()
    reference = np.asarray(Image.fromarray(simplejpeg.decode_jpeg(sample["wrist.jpg"])).resize((128, 96),
                                                                                               Image.BILINEAR))
    assert np.abs(example.images[2].astype(int) - reference).mean() < 1.0


def test_large_frames_take_the_reduced_scale_path_and_match_a_full_decode(camera):
    frame = np.asarray(Image.fromarray(camera("astronaut", 512)).resize((640, 480)))
    data = simplejpeg.encode_jpeg(frame, quality=92)
    fast = decode_frame(data, (112, 112))
    full = np.asarray(Image.fromarray(simplejpeg.decode_jpeg(data)).resize((112, 112), Image.BILINEAR))
    assert fast.shape == (112, 112, 3)
    assert np.abs(fast.astype(int) - full).mean() < 3.0  # same picture, different resampling path
    assert decode_frame(data, (480, 640)).shape == (480, 640, 3)


@pytest.mark.parametrize(
    ("damage", "reason", "words"),
    [
        ({"wrist.jpg": b"\xff\xd8 not a jpeg"}, DropReason.BAD_IMAGE, "wrist.jpg does not decode"),
        ({"state.npy": None}, DropReason.BAD_RECORD, "state.npy is missing"),
        ({"meta.json": b"{not json"}, DropReason.BAD_RECORD, "meta.json is not JSON"),
    ],
)
def test_a_bad_sample_raises_naming_the_shard_the_sample_and_the_fix(shards, raw_samples, damage, reason, words):
    _, stats = shards
    sample = {k: v for k, v in raw_samples[1].items() if damage.get(k, ...) is not None}
    sample.update({k: v for k, v in damage.items() if v is not None})
    with pytest.raises(BadSampleError) as caught:
        build(stats)(sample)
    assert caught.value.reason is reason
    assert words in str(caught.value) and sample["__key__"] in str(caught.value)
    assert sample["__url__"] in str(caught.value)


def test_a_pickled_npy_member_is_refused_not_unpickled(shards, raw_samples):
    _, stats = shards
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    sample = dict(raw_samples[1], **{"action.npy": buffer.getvalue()})
    with pytest.raises(BadSampleError, match="action.npy is not a plain .npy array"):
        build(stats)(sample)


def test_unknown_embodiment_and_too_short_chunks_are_explained(shards, raw_samples):
    _, stats = shards
    meta = json.loads(raw_samples[1]["meta.json"])
    other = dict(raw_samples[1], **{"meta.json": json.dumps(dict(meta, embodiment="aloha")).encode()})
    with pytest.raises(BadSampleError, match="no normalization statistics for embodiment 'aloha'"):
        build(stats)(other)
    transform = RobotSampleTransform.Config(cameras=CAMERAS, image_size=(32, 32), chunk_len=40).build(
        {"droid": stats})
    with pytest.raises(BadSampleError, match="--chunk-len >= 40"):
        transform(raw_samples[1])


def test_samples_from_a_corpus_stream_keep_their_component_epoch_and_shard(small_corpus):
    stream = CorpusStream(str(small_corpus), config=CorpusStream.Config(block=16))
    samples = [s for s in (next(stream) for _ in range(400)) if s["kind"] == "robot"]
    stats = {name: json.loads((small_corpus.parent / name / "stats.json").read_text()) for name in ("arm_a", "arm_b")}
    transform = RobotSampleTransform.Config(image_size=(16, 16), chunk_len=4).build(stats)
    picked = [next(s for s in samples if (s["component"], s["epoch"]) == pair) for pair in
              [("arm_a", 0), ("arm_b", 0), ("arm_b", 1)]]  # arm_b (100 samples) is in its second epoch by now
    assert [(e.key, e.component, e.epoch) for e in map(transform, picked)] == [
        (s["__key__"], s["component"], s["epoch"]) for s in picked]
    broken = dict(picked[2], **{"meta.json": b"{"})
    with pytest.raises(BadSampleError, match="arm_b/train/") as caught:
        transform(broken)
    assert caught.value.url == picked[2]["__url__"] and caught.value.url.endswith(".tar")


def test_config_names_the_bad_field():
    with pytest.raises(ValueError, match="cameras"):
        RobotSampleTransform.Config(cameras=("front",))
    with pytest.raises(ValueError, match="chunk_len"):
        RobotSampleTransform.Config(chunk_len=0)
    with pytest.raises(ValueError, match="quantile"):
        RobotSampleTransform.Config(norm=NormKind.QUANTILE).build(
            {"c": {"embodiments": {"arm": {"state": {"mean": [0.0], "std": [1.0]}, "action": {}}}}})


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
