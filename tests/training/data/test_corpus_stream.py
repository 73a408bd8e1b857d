"""CorpusStream over a real corpus (two ingest-shaped robot datasets, one VL dataset): slots, ratio, resume, bad shards.

Keys and bytes are compared with what an independent reader (`pipelines.shard_reader`) finds in the shards.
"""

import collections
import hashlib
import io
import itertools
import json
import pathlib
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
from vlaforge.pipelines.shards.manifest import ShardRecord, code_version, read_manifest, write_manifest
from vlaforge.pipelines.shards.members import iter_samples
from vlaforge.pipelines.shards.reader import BadShardError
from vlaforge.training.data.component_cursor import BadShardPolicy, CorpusStreamError
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.stream_state import StreamStateError, combine_states

CONFIG = CorpusStream.Config(block=16, interleave=3)
SIZES = {"arm_a": 150, "arm_b": 100, "synth-vl-caption": 64}


def open_streams(corpus, ranks, workers, config=CONFIG, **options):
    return [CorpusStream(str(corpus), rank=r, world_size=ranks, worker_id=w, num_workers=workers, config=config,
                         **options) for r in range(ranks) for w in range(workers)]


def take(stream, n):
    return [next(stream) for _ in range(n)]


def keys_in_shards(dataset: pathlib.Path) -> set[str]:
    keys = set()
    for record in read_manifest(dataset / "manifest.parquet"):
        with open(dataset / record.url, "rb") as handle:
            keys |= {sample["__key__"] for sample in iter_samples(handle, record.url, wanted=())}
    return keys


@pytest.fixture(scope="module")
def all_keys(small_corpus):
    root = small_corpus.parent
    return {"arm_a": keys_in_shards(root / "arm_a"), "arm_b": keys_in_shards(root / "arm_b"),
            "synth-vl-caption": keys_in_shards(root / "vl")}


def by_epoch(samples):
    seen = collections.defaultdict(list)
    for sample in samples:
        seen[sample["component"], sample["epoch"]].append(sample["__key__"])
    return seen


def test_two_ranks_by_two_workers_read_disjoint_slots_that_cover_every_epoch(small_corpus, all_keys):
    slots = [take(stream, 260) for stream in open_streams(small_corpus, 2, 2)]
    for component, keys in all_keys.items():
        assert len(keys) == SIZES[component]
        for epoch in (0, 1):
            per_slot = [by_epoch(samples)[component, epoch] for samples in slots]
            assert all(per_slot), f"every slot reads part of {component} epoch {epoch}"
            for a, b in itertools_pairs(per_slot):
                assert not set(a) & set(b), "two slots read the same sample in one epoch"
            assert sorted(k for keys_ in per_slot for k in keys_) == sorted(keys), f"{component} epoch {epoch}"


def itertools_pairs(items):
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]


def test_samples_are_raw_members_with_their_component(small_corpus):
    samples = take(open_streams(small_corpus, 1, 1)[0], 40)
    robot = next(s for s in samples if s["kind"] == "robot")
    vl = next(s for s in samples if s["kind"] == "vl")
    assert robot["__url__"].startswith(str(small_corpus.parent)) and robot["__url__"].endswith(".tar")
    state = np.load(io.BytesIO(robot["state.npy"]), allow_pickle=False)
    assert state.dtype == np.float32 and state.shape == (8,)
    assert json.loads(robot["meta.json"])["embodiment"] == robot["component"]
    assert robot["wrist.jpg"][:2] == b"\xff\xd8"
    assert json.loads(vl["conversation.json"])[0]["role"] == "user" and vl["0.jpg"][:2] == b"\xff\xd8"
    assert all(isinstance(v, bytes) for s in samples for k, v in s.items() if "." in k)


def test_vl_to_robot_draws_stay_within_one_percent_of_one_to_six_over_10000_samples(small_corpus):
    samples = take(open_streams(small_corpus, 1, 1, config=CorpusStream.Config(block=64, interleave=2))[0], 10_000)
    counts = collections.Counter(s["component"] for s in samples)
    vl = counts["synth-vl-caption"] / 10_000
    assert abs(vl - 1 / 7) < 0.01 * (1 / 7), counts  # within 1 % of the target share, relative
    robot = counts["arm_a"] + counts["arm_b"]
    assert abs(counts["arm_a"] / robot - 150 / 250) < 0.01 * (150 / 250)


def test_a_seed_fixes_the_order_and_another_seed_changes_it(small_corpus):
    first = [s["__key__"] for s in take(open_streams(small_corpus, 2, 1)[1], 300)]
    again = [s["__key__"] for s in take(open_streams(small_corpus, 2, 1)[1], 300)]
    other = [s["__key__"] for s in take(open_streams(small_corpus, 2, 1, seed=4)[1], 300)]
    assert first == again
    assert first != other


@pytest.mark.parametrize("via_checkpoint", [False, True])
def test_resume_gives_exactly_the_next_1000_samples(small_corpus, via_checkpoint):
    streams = open_streams(small_corpus, 2, 2)
    for stream in streams:
        take(stream, 437)  # mid-block, mid-epoch
    states = [json.loads(json.dumps(stream.state_dict())) for stream in streams]
    uninterrupted = take(streams[2], 1000)
    resumed = open_streams(small_corpus, 2, 2)[2]
    resumed.load_state_dict(combine_states(reversed(states)) if via_checkpoint else states[2])
    assert take(resumed, 1000) == uninterrupted


@pytest.mark.parametrize("new_ranks", [3, 1])
def test_elastic_resume_neither_repeats_nor_skips_a_sample_of_the_epochs_under_way(small_corpus, all_keys,
                                                                                   new_ranks):
    old = open_streams(small_corpus, 2, 2)
    seen = []
    for stream, n in zip(old, (90, 170, 40, 133)):  # uneven: slots end up in different epochs of a component
        seen += take(stream, n)
    checkpoint = combine_states(stream.state_dict() for stream in old)
    epochs = {c: max(s["components"][c]["epoch"] for s in checkpoint["slots"]) for c in SIZES}
    assert len({s["components"]["synth-vl-caption"]["epoch"] for s in checkpoint["slots"]}) > 1

    for stream in open_streams(small_corpus, new_ranks, 2):
        stream.load_state_dict(json.loads(json.dumps(checkpoint)))
        samples = take(stream, 700)
        for component, last in epochs.items():  # the slot went past every epoch under way
            assert any(s["component"] == component and s["epoch"] > last for s in samples)
        seen += samples
    grouped = by_epoch(seen)
    for component, last in epochs.items():
        for epoch in range(last + 1):
            keys = grouped[component, epoch]
            assert len(keys) == len(set(keys)), f"{component} epoch {epoch} repeats samples"
            assert set(keys) == all_keys[component], f"{component} epoch {epoch} skips samples"


def test_checkpoints_are_checked_before_they_are_used(small_corpus, tmp_path):
    streams = open_streams(small_corpus, 2, 1)
    states = [stream.state_dict() for stream in streams]
    with pytest.raises(StreamStateError, match=r"missing \[1\]"):
        combine_states(states[:1])
    with pytest.raises(StreamStateError, match="every old slot"):
        open_streams(small_corpus, 3, 1)[0].load_state_dict(states[0])
    with pytest.raises(StreamStateError, match="split"):
        CorpusStream(str(small_corpus), rank=0, world_size=2, config=CONFIG).load_state_dict(
            {**states[0], "split": "validation"})
    other = tmp_path / "corpus.json"
    other.write_bytes(small_corpus.read_bytes().replace(b'"seed": 3', b'"seed": 5'))
    other_stream = CorpusStream(str(other), rank=0, world_size=2, config=CONFIG)
    with pytest.raises(StreamStateError, match="different corpus manifest"):
        other_stream.load_state_dict(states[0])


def test_a_component_smaller_than_the_slots_is_refused(small_corpus):
    with pytest.raises(ValueError, match="fewer than the 66"):
        CorpusStream(str(small_corpus), world_size=33, num_workers=2, config=CONFIG)


# Evaluation: one pass over the validation split.


@pytest.fixture(scope="module")
def eval_corpus(tmp_path_factory, droid_shards):
    """DROID shards (about a third of the episodes in validation) and a VL dataset with half its samples there."""
    from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset

    root = tmp_path_factory.mktemp("eval-corpus")
    vl = write_vl_dataset(root / "vl", n_samples=40, image_size=(16, 16), shard_samples=8, validation_fraction=0.5)
    inputs = [CorpusInput(path=droid_shards[0], kind=ComponentKind.ROBOT, name="droid"),
              CorpusInput(path=vl, kind=ComponentKind.VL, name="captions")]
    corpus = root / "corpus.json"
    write_corpus(build_corpus(inputs, corpus, CorpusConfig(seed=2)), corpus)
    return corpus


def split_keys(corpus, split):
    """{component: [every key of `split`]}, read from the shards the manifest lists."""
    keys = {}
    for component in json.loads(corpus.read_text())["components"]:
        keys[component["name"]] = []
        for shard in component["shards"]:
            if shard["split"] == split:
                url = corpus.parent / shard["url"] if not pathlib.Path(shard["url"]).is_absolute() else shard["url"]
                with open(url, "rb") as handle:
                    keys[component["name"]] += [s["__key__"] for s in iter_samples(handle, str(url), wanted=())]
    return keys


def drain(stream, limit=5_000):
    """Every sample up to the stream's end, which must come before `limit` samples."""
    samples = list(itertools.islice(stream, limit))
    assert len(samples) < limit, "the stream did not end"
    return samples


def test_one_pass_gives_every_validation_sample_once_over_2_ranks_by_2_workers_then_stops(eval_corpus):
    expected = split_keys(eval_corpus, "validation")
    assert all(expected.values())
    slots = [drain(stream) for stream in open_streams(eval_corpus, 2, 2, split="validation", one_pass=True)]
    for component, keys in expected.items():
        got = [s["__key__"] for samples in slots for s in samples if s["component"] == component]
        assert sorted(got) == sorted(keys), component  # complete, and no sample twice
    for samples in slots:
        assert all(s["epoch"] == 0 for s in samples)
        # No mixture draw: a slot hands out its part of each component in full, in the manifest's order.
        order = [s["component"] for s in samples]
        assert order == sorted(order, key=list(expected).index)
    again = [drain(stream) for stream in open_streams(eval_corpus, 2, 2, split="validation", one_pass=True)]
    assert [[s["__key__"] for s in samples] for samples in again] == [[s["__key__"] for s in x] for x in slots]


def test_a_one_pass_stream_stays_ended_and_resumes_within_its_pass(eval_corpus):
    stream = open_streams(eval_corpus, 1, 2, split="validation", one_pass=True)[1]
    head = take(stream, 9)
    state = json.loads(json.dumps(stream.state_dict()))
    rest = drain(stream)
    with pytest.raises(StopIteration):
        next(stream)
    resumed = open_streams(eval_corpus, 1, 2, split="validation", one_pass=True)[1]
    resumed.load_state_dict(state)
    assert [s["__key__"] for s in drain(resumed)] == [s["__key__"] for s in rest] and head and rest
    training = open_streams(eval_corpus, 1, 2, split="validation")[1]
    with pytest.raises(StreamStateError, match="one_pass=True"):
        training.load_state_dict(state)


# Bad shards: a copy of the corpus tree with one shard damaged.


@pytest.fixture
def corpus_copy(small_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(small_corpus.parent, root)
    return root / "corpus.json"


def damaged(corpus: pathlib.Path, how) -> tuple[str, set[str]]:
    """Damage arm_b's second shard with `how(path)`; returns its URL and the keys it held."""
    path = corpus.parent / "arm_b" / read_manifest(corpus.parent / "arm_b" / "manifest.parquet")[1].url
    with open(path, "rb") as handle:
        keys = {s["__key__"] for s in iter_samples(handle, str(path), wanted=())}
    how(path)
    return str(path), keys


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[3000] ^= 0xFF  # inside a member's data: the tar still parses
    path.write_bytes(bytes(data))


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_shard_failing_sha256_is_reported_and_never_used(corpus_copy, all_keys, caplog):
    url, bad_keys = damaged(corpus_copy, flip_a_byte)
    stream = open_streams(corpus_copy, 1, 1, verify_sha256=True)[0]
    samples = take(stream, 700)
    arm_b = by_epoch(samples)["arm_b", 0]
    assert not set(arm_b) & bad_keys
    assert set(arm_b) == all_keys["arm_b"] - bad_keys
    assert stream.stats["bad_shards"]["sha256_mismatch"] >= 1
    assert stream.stats["skipped_samples"] >= len(bad_keys)
    assert url in caplog.text and "sha256" in caplog.text


def test_a_truncated_shard_is_refused_before_any_of_its_samples_is_used(corpus_copy, all_keys):
    _, bad_keys = damaged(corpus_copy, cut_in_half)
    stream = open_streams(corpus_copy, 1, 1)[0]
    arm_b = by_epoch(take(stream, 700))["arm_b", 0]
    assert set(arm_b) == all_keys["arm_b"] - bad_keys
    assert stream.stats["bad_shards"]["size_mismatch"] >= 1
    strict = open_streams(corpus_copy, 1, 1, config=CorpusStream.Config(on_bad_shard=BadShardPolicy.RAISE))[0]
    with pytest.raises(BadShardError, match="manifest says"):
        take(strict, 700)


def test_a_stream_whose_every_shard_is_refused_stops_with_a_clear_error(corpus_copy):
    for tar in (corpus_copy.parent / "vl").rglob("*.tar"):
        flip_a_byte(tar)
    stream = open_streams(corpus_copy, 1, 1, verify_sha256=True)[0]
    with pytest.raises(CorpusStreamError, match="synth-vl-caption"):
        take(stream, 2000)


# Hostile shards: written with tarfile directly, as an attacker would, and listed truthfully in the manifest.


class _Touch:
    """Unpickling this creates a file: proof that something unpickled the member."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def hostile_corpus(tmp_path, members) -> pathlib.Path:
    """A one-component corpus: a good shard of 3 samples, then a shard made of `members` [(name, bytes)]."""
    dataset = tmp_path / "hostile"
    records = []
    for name, entries in (("good", [(f"k{i}.meta.json", b"{}") for i in range(3)]), ("bad", members)):
        path = dataset / "train" / f"{name}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for member, data in entries:
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        samples = len({m.split(".", 1)[0] for m, _ in entries})
        records.append(ShardRecord(url=f"train/{name}.tar", split="train", samples=samples,
                                   bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                   episodes=[], source_files=[], dataset="hostile", unit=0,
                                   code_version=code_version()))
    write_manifest(dataset, records)
    (dataset / "stats.json").write_text("{}")
    corpus = tmp_path / "corpus.json"
    write_corpus(build_corpus([CorpusInput(path=dataset, kind=ComponentKind.ROBOT)], corpus, CorpusConfig()), corpus)
    return corpus


@pytest.mark.parametrize("name, reason", [
    ("../x.jpg", "unsafe_member"),
    ("/etc/x.jpg", "unsafe_member"),
    ("k0.notes.txt", "unknown_extension"),
])
def test_a_shard_with_a_hostile_or_unknown_member_is_refused(tmp_path, name, reason):
    corpus = hostile_corpus(tmp_path, [("k0.meta.json", b"{}"), (name, b"\xff\xd8payload")])
    strict = CorpusStream(str(corpus), config=CorpusStream.Config(on_bad_shard=BadShardPolicy.RAISE))
    with pytest.raises(BadShardError, match="refused") as error:
        take(strict, 10)
    assert error.value.reason.value == reason and name in str(error.value)
    lenient = CorpusStream(str(corpus))
    keys = [s["__key__"] for s in take(lenient, 9)]
    assert sorted(set(keys)) == ["k0", "k1", "k2"] and lenient.stats["bad_shards"][reason] >= 1


def test_a_shard_with_a_pyd_member_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    corpus = hostile_corpus(tmp_path, [("k0.meta.json", b"{}"), ("k0.payload.pyd", pickle.dumps(_Touch(marker)))])
    stream = CorpusStream(str(corpus))
    samples = take(stream, 12)
    assert {s["__url__"].rsplit("/", 1)[1] for s in samples} == {"good.tar"}
    assert stream.stats["bad_shards"]["unsafe_member"] >= 1
    assert not marker.exists()


def test_a_robot_only_stream_never_opens_a_vl_shard_and_keeps_the_robot_weights(small_corpus, monkeypatch):
    """Step 2 and post-training read robot data only: the stream leaves the VL component out before reading, so
    no VL shard is opened and no VL sample is decoded and thrown away."""
    from vlaforge.pipelines.shards.reader import ShardReader

    opened = []
    original = ShardReader.samples
    monkeypatch.setattr(ShardReader, "samples", lambda self, shard, wanted: opened.append(shard.url) or
                        original(self, shard, wanted))
    stream = CorpusStream(str(small_corpus), config=CONFIG, kinds=("robot",))
    samples = take(stream, 500)
    assert {s["kind"] for s in samples} == {"robot"}
    assert opened and not any("/vl/" in url for url in opened)
    counts = collections.Counter(s["component"] for s in samples)
    # the robot components keep their weights (by size, 150:100) with the VL share gone
    assert counts["arm_a"] / counts["arm_b"] == pytest.approx(SIZES["arm_a"] / SIZES["arm_b"], abs=0.02)
    with pytest.raises(ValueError, match="'text' is not a valid ComponentKind"):
        CorpusStream(str(small_corpus), config=CONFIG, kinds=("text",))
