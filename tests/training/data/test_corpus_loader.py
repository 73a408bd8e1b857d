"""The corpus loader: a DataLoader with 2 workers over a real corpus manifest of DROID shards and VL shards."""

from __future__ import annotations

import collections
import gc
import itertools
import json
import multiprocessing
import os
import re
import shutil
import tarfile
import threading

import pytest

from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset
from vlaforge.pipelines.corpus_manifest import (
    ComponentKind,
    CorpusConfig,
    CorpusInput,
    build_corpus,
    write_corpus,
)
from vlaforge.pipelines.shards.members import iter_samples
from vlaforge.training.data.bad_samples import BadSampleBudget, BadSampleBudgetError
from vlaforge.training.data.collate import Batcher, MixPolicy
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.robot_transform import RobotSampleTransform

ROBOT = RobotSampleTransform.Config(cameras=("exterior_1", "wrist"), image_size=(32, 32), chunk_len=8)

# A worker that fails, or exits non-zero, while the DataLoader shuts it down surfaces only as an "Exception ignored
# in _MultiProcessingDataLoaderIter.__del__": make that fail the test that caused it.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory, processor):
    directory = tmp_path_factory.mktemp("processor")
    processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, droid_shards):
    """A corpus manifest of the DROID shards and a 42-sample VL caption dataset, VL:robot 1:6."""
    root = tmp_path_factory.mktemp("corpus")
    robot_dir, _ = droid_shards
    vl_dir = write_vl_dataset(root / "vl", n_samples=42, image_size=(64, 64), shard_samples=8,
                              validation_fraction=0.0)
    inputs = [CorpusInput(path=robot_dir, kind=ComponentKind.ROBOT, name="droid"),
              CorpusInput(path=vl_dir, kind=ComponentKind.VL, name="captions")]
    path = root / "corpus.json"
    write_corpus(build_corpus(inputs, path, CorpusConfig(seed=5)), path)
    return path


@pytest.fixture(scope="module")
def eval_corpus(tmp_path_factory, droid_shards):
    """DROID shards (about a third of the episodes in validation) and a VL dataset with half its samples there."""
    root = tmp_path_factory.mktemp("eval-corpus")
    vl_dir = write_vl_dataset(root / "vl", n_samples=40, image_size=(32, 32), shard_samples=8,
                              validation_fraction=0.5)
    inputs = [CorpusInput(path=droid_shards[0], kind=ComponentKind.ROBOT, name="droid"),
              CorpusInput(path=vl_dir, kind=ComponentKind.VL, name="captions")]
    path = root / "corpus.json"
    write_corpus(build_corpus(inputs, path, CorpusConfig(seed=5)), path)
    return path


def split_keys(corpus_path, split="train"):
    """{component: every sample key of `split`}, read straight from the shards."""
    manifest = json.loads(corpus_path.read_text())
    keys = {}
    for component in manifest["components"]:
        keys[component["name"]] = set()
        for shard in component["shards"]:
            if shard["split"] == split:
                with open(corpus_path.parent / shard["url"], "rb") as handle:
                    keys[component["name"]] |= {s["__key__"] for s in iter_samples(handle, shard["url"], ("x",))}
    return keys


def make_loader(corpus_path, processor_dir, **options):
    batch = Batcher.Config(batch_size=options.pop("batch_size", 7), policy=options.pop("policy", MixPolicy.MIXED))
    rank, world_size = options.pop("rank", 0), options.pop("world_size", 1)
    config = CorpusLoader.Config(corpus_url=str(corpus_path), processor=processor_dir, robot=ROBOT, batch=batch,
                                 robot_vlm_inputs=options.pop("robot_vlm_inputs", False),
                                 **{"num_workers": 2, "seed": 11, **options})
    return CorpusLoader(config, rank=rank, world_size=world_size)


def samples_of(batch):
    """(component, epoch, key) of each sample, in batch order (robot part, then VL part)."""
    parts = [part for part in (batch.robot, batch.vl) if part is not None]
    return [s for part in parts for s in zip(part.components, part.epochs, part.keys)]


def take(loader, n):
    return [samples_of(batch) for batch in itertools.islice(loader, n)]


def until_epoch_done(loader, expected, limit=200):
    """Batches until every component has delivered as many epoch-0 samples as it holds."""
    seen = collections.defaultdict(list)
    for batch in itertools.islice(loader, limit):
        for component, epoch, key in samples_of(batch):
            if epoch == 0:
                seen[component].append(key)
        if all(len(seen[c]) >= len(keys) for c, keys in expected.items()):
            return seen
    raise AssertionError(f"epoch 0 incomplete after {limit} batches: {({c: len(v) for c, v in seen.items()})}")


def test_two_workers_deliver_every_sample_exactly_once_per_epoch_in_the_ratio(corpus, processor_dir):
    expected = split_keys(corpus)
    loader = make_loader(corpus, processor_dir)
    seen = until_epoch_done(loader, expected)
    for component, keys in expected.items():
        assert sorted(seen[component]) == sorted(keys), component  # complete, and no key twice
    assert set(loader.stream_stats) == {0, 1}  # both workers delivered
    assert not loader.quarantined


def test_batches_mix_both_kinds_and_carry_model_ready_tensors(corpus, processor_dir):
    loader = make_loader(corpus, processor_dir, robot_vlm_inputs=True, batch_size=14)
    batches = list(itertools.islice(loader, 6))
    robot = sum(len(b.robot) for b in batches if b.robot)
    vl = sum(len(b.vl) for b in batches if b.vl)
    assert robot + vl == 6 * 14 and abs(vl - robot / 6) <= 2  # the corpus's 1:6, within a draw per worker
    first = next(b for b in batches if b.robot is not None and b.vl is not None)
    assert first.robot.images.shape[1:] == (2, 32, 32, 3) and first.robot.actions.shape[1:] == (8, 32)
    assert first.robot.vlm_inputs["image_grid_thw"].shape[0] == 2 * len(first.robot)
    assert (first.vl.labels != -100).any(dim=1).all()


@pytest.mark.parametrize("policy", list(MixPolicy))
def test_resume_through_the_loader_state_gives_exactly_the_uninterrupted_batches(corpus, processor_dir, policy):
    uninterrupted = take(make_loader(corpus, processor_dir, policy=policy), 14)
    first = make_loader(corpus, processor_dir, policy=policy)
    before = take(first, 5)  # odd: the next batch is worker 1's; several more sit prefetched, not consumed
    state = json.loads(json.dumps(first.state_dict()))
    assert state["next_worker"] == 1 and before == uninterrupted[:5]
    resumed = make_loader(corpus, processor_dir, policy=policy)
    resumed.load_state_dict(state)
    assert take(resumed, 9) == uninterrupted[5:]


def test_a_state_taken_before_any_batch_resumes_from_the_start(corpus, processor_dir):
    fresh = make_loader(corpus, processor_dir)
    state = fresh.state_dict()
    assert set(state["workers"]) == {"0", "1"}
    resumed = make_loader(corpus, processor_dir)
    resumed.load_state_dict(state)
    assert take(resumed, 3) == take(make_loader(corpus, processor_dir), 3)


def test_elastic_resume_from_two_workers_to_one_neither_repeats_nor_skips(corpus, processor_dir):
    expected = split_keys(corpus)
    first = make_loader(corpus, processor_dir)
    before = [s for batch in take(first, 6) for s in batch]
    state = json.loads(json.dumps(first.state_dict()))
    single = make_loader(corpus, processor_dir, num_workers=0)
    single.load_state_dict(state)  # one rank held every slot: its state is a whole checkpoint
    remaining = {c: keys - {k for comp, epoch, k in before if comp == c and epoch == 0} for c, keys in
                 expected.items()}
    after = until_epoch_done(single, remaining)
    for component, keys in expected.items():
        got = [k for c, e, k in before if c == component and e == 0] + after[component]
        assert sorted(got) == sorted(keys), component


def test_a_corrupt_frame_is_quarantined_by_reason_or_stops_the_run(tmp_path, corpus, droid_shards, processor_dir):
    # Copy both datasets and break one JPEG inside one robot shard, keeping its size (no sha256 check here).
    shutil.copytree(droid_shards[0], tmp_path / "droid")
    shutil.copytree(corpus.parent / "vl", tmp_path / "vl")
    inputs = [CorpusInput(path=tmp_path / "droid", kind=ComponentKind.ROBOT, name="droid"),
              CorpusInput(path=tmp_path / "vl", kind=ComponentKind.VL, name="captions")]
    copy = tmp_path / "tree"
    copy.mkdir()
    write_corpus(build_corpus(inputs, copy / "corpus.json", CorpusConfig(seed=5)), copy / "corpus.json")
    manifest = json.loads((copy / "corpus.json").read_text())
    shard = next(s for c in manifest["components"] if c["name"] == "droid" for s in c["shards"]
                 if s["split"] == "train")
    path = copy / shard["url"]
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("wrist.jpg"))
    bad_key = member.name.split(".")[0]
    data = bytearray(path.read_bytes())
    data[member.offset_data:member.offset_data + member.size] = b"\x00" * member.size
    path.write_bytes(bytes(data))

    loader = make_loader(copy / "corpus.json", processor_dir, bad_samples="skip")
    seen = until_epoch_done(loader, {"droid": split_keys(copy / "corpus.json")["droid"] - {bad_key}})
    assert bad_key not in seen["droid"]
    assert loader.quarantine_counts() == {"bad_image": 1}
    drop = next(iter(loader.quarantined.values()))
    assert drop.episode == bad_key and shard["url"].split("/")[-1] in drop.file and "wrist.jpg" in drop.message

    strict = make_loader(copy / "corpus.json", processor_dir)
    with pytest.raises(Exception, match=bad_key):
        until_epoch_done(strict, split_keys(copy / "corpus.json"))


def test_a_run_that_skips_more_than_its_budget_stops(tmp_path, droid_shards, processor_dir, caplog):
    """Every other frame of one camera in one train shard zeroed: each skip is logged with its shard and key and the
    running count, and once the skips pass 5% of the draws (judged over at least 20) the run stops, saying how many
    and which."""
    shutil.copytree(droid_shards[0], tmp_path / "droid")
    path = tmp_path / "corpus.json"
    write_corpus(build_corpus([CorpusInput(path=tmp_path / "droid", kind=ComponentKind.ROBOT, name="droid")], path,
                              CorpusConfig(seed=5)), path)
    shard = next(s for c in json.loads(path.read_text())["components"] for s in c["shards"] if s["split"] == "train")
    data = bytearray((tmp_path / shard["url"]).read_bytes())
    with tarfile.open(tmp_path / shard["url"]) as tar:
        for member in [m for m in tar.getmembers() if m.name.endswith("wrist.jpg")][::2]:
            if member.name.endswith("wrist.jpg"):
                data[member.offset_data:member.offset_data + member.size] = b"\x00" * member.size
    (tmp_path / shard["url"]).write_bytes(bytes(data))

    budget = BadSampleBudget(max_fraction=0.05, min_samples=20)
    loader = make_loader(path, processor_dir, num_workers=0, bad_samples="skip", bad_sample_budget=budget)
    with caplog.at_level("WARNING"), pytest.raises(BadSampleBudgetError) as stopped:
        for _ in itertools.islice(loader, 200):
            pass
    message = str(stopped.value)
    skipped, drawn = (int(n.replace(",", "")) for n in re.search(r"(\d+) of ([\d,]+) samples drawn", message).groups())
    assert skipped > 0.05 * max(20, drawn) and "over the limit of 5.00%" in message
    assert shard["url"].split("/")[-1] in message and "wrist.jpg" in message
    logged = [r.getMessage() for r in caplog.records if "skipped a bad sample (bad_image)" in r.getMessage()]
    assert len(logged) == skipped and "wrist.jpg" in logged[0] and shard["url"].split("/")[-1] in logged[0]
    assert "1 skipped of" in logged[0] and f"{skipped} skipped of {drawn} drawn" in logged[-1]


def test_vl_samples_over_the_token_budget_are_quarantined_as_too_many_tokens(corpus, processor_dir):
    loader = make_loader(corpus, processor_dir, num_workers=0, vl_max_length=16, bad_samples="skip")
    batches = list(itertools.islice(loader, 3))
    assert all(batch.vl is None for batch in batches) and sum(len(batch) for batch in batches) == 3 * 7
    counts = loader.quarantine_counts()
    assert list(counts) == ["too_many_tokens"] and counts["too_many_tokens"] >= 3  # 1 VL draw in 7
    assert all("exceed max_length 16" in drop.message for drop in loader.quarantined.values())


@pytest.fixture
def trainer_exit_hook():
    """A thread-exit hook like the ones Prefect's log and event services register in a process that ran a flow: it
    drains a service thread of this process, and fails in a forked process (a DataLoader worker), where that thread
    does not exist. Before the loader forgave such hooks, every worker exited with code 1 at shutdown."""
    owner = os.getpid()

    def drain() -> None:
        if os.getpid() != owner:
            raise AssertionError("the service thread this hook drains does not exist in a forked process")

    threading._register_atexit(drain)  # the private hook list Prefect registers in
    yield
    threading._threading_atexits[:] = [hook for hook in threading._threading_atexits if hook.func is not drain]


@pytest.mark.parametrize("how", ["with", "break"])
def test_leaving_a_loop_early_shuts_the_workers_down_cleanly(corpus, processor_dir, trainer_exit_hook, how):
    before = set(multiprocessing.active_children())
    loader = make_loader(corpus, processor_dir)
    if how == "with":
        with loader:
            batches = iter(loader)
            first = next(batches)  # `batches` stays alive: the end of the block shuts the workers down
    else:
        for first in loader:
            break
    # The workers are gone, having exited 0 (a worker exiting 1 makes the shutdown raise, here or in __del__).
    assert set(multiprocessing.active_children()) == before
    gc.collect()  # whatever still holds the first iteration goes now, while this test runs
    again = next(iter(loader))  # the loader goes on from its position after the early exit
    loader.close()
    assert len(first) == len(again) == 7 and not set(first.keys) & set(again.keys)
    assert set(multiprocessing.active_children()) == before


def test_an_evaluation_loader_gives_every_validation_sample_once_over_2_ranks_by_2_workers_and_ends(
        eval_corpus, processor_dir, trainer_exit_hook):
    expected = split_keys(eval_corpus, "validation")
    assert all(expected.values())
    loaders = [make_loader(eval_corpus, processor_dir, split="validation", one_pass=True, rank=rank, world_size=2)
               for rank in (0, 1)]
    passes = [[samples_of(batch) for batch in loader] for loader in loaders]  # each `for` ends by itself
    for component, keys in expected.items():
        got = [key for batches in passes for batch in batches for c, _, key in batch if c == component]
        assert sorted(got) == sorted(keys), component  # every sample once, whatever the 1:6 ratio would draw
    assert {epoch for batches in passes for batch in batches for _, epoch, _ in batch} == {0}
    assert set(loaders[0].stream_stats) == {0, 1}  # both workers of a rank took part
    assert [samples_of(batch) for batch in loaders[0]] == passes[0]  # the next `for` is the same whole pass


def test_config_and_state_errors_name_the_problem(corpus, processor_dir):
    with pytest.raises(ValueError, match="num_workers"):
        CorpusLoader.Config(corpus_url=str(corpus), num_workers=-1)
    with pytest.raises(ValueError, match="processor"):
        CorpusLoader(CorpusLoader.Config(corpus_url=str(corpus)))
    other = make_loader(corpus, processor_dir)
    state = other.state_dict()
    with pytest.raises(ValueError, match="every rank"):
        CorpusLoader.combine([dict(state, rank=1, world_size=2)])
    with pytest.raises(ValueError, match="pass CorpusLoader.combine"):
        other.load_state_dict(dict(state, world_size=2))  # one rank of two cannot resume a different layout alone
    with pytest.raises(ValueError, match="rank 1's"):
        other.load_state_dict(dict(state, rank=1))


def test_a_robot_only_loader_gives_robot_batches_only(corpus, processor_dir):
    loader = make_loader(corpus, processor_dir, kinds=("robot",), num_workers=1)
    batches = list(itertools.islice(loader, 4))
    assert all(b.vl is None and len(b.robot) == 7 for b in batches)


def test_robot_pixels_made_on_the_device_equal_the_processors_and_ship_as_uint8(corpus, processor_dir):
    import pickle

    import torch

    from vlaforge.training.data.corpus_loader import RobotPixels

    options = dict(kinds=("robot",), num_workers=0, robot_vlm_inputs=True)
    on_device = make_loader(corpus, processor_dir, robot_pixels=RobotPixels.DEVICE, **options)
    in_worker = make_loader(corpus, processor_dir, robot_pixels=RobotPixels.WORKER, **options)
    shipped, reference = next(iter(on_device)), next(iter(in_worker))
    assert "pixel_values" not in shipped.robot.vlm_inputs
    with pytest.raises(ValueError, match="pass it through CorpusLoader.to_device"):
        shipped.robot.require_vlm_inputs()
    ready = on_device.to_device(shipped, "cpu").robot.require_vlm_inputs()
    expected = reference.robot.vlm_inputs
    assert set(ready) == set(expected)
    for name in expected:
        assert torch.equal(ready[name], expected[name]), name
    assert len(pickle.dumps(shipped)) < 0.5 * len(pickle.dumps(reference))
