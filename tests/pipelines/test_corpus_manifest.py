"""The corpus manifest: built from real dataset outputs (an ingest, a VL writer), checked inputs, weights, and the
same format at the recipe's 200M robot / 80M VL scale (metadata only)."""

import hashlib
import json
import pathlib
import tracemalloc

import pytest

from vlaforge.pipelines.corpus_manifest import (
    CORPUS_FORMAT,
    ComponentKind,
    CorpusConfig,
    CorpusError,
    CorpusInput,
    CorpusManifest,
    build_corpus,
    write_corpus,
)
from vlaforge.pipelines.corpus_plan import RECIPE_BATCH, RECIPE_STEPS, scale_plan
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.mixture_schedule import MixtureEntry, MixtureSchedule
from vlaforge.training.data.shard_assignment import Plan, PlanSpec

SCALE_ROBOT = {"droid": 27_000_000, "molmoact": 2_000_000, "teleop_lego": 36_504_000, "teleop_towel": 43_200_000,
               "open_mix": 91_296_000}
SCALE_VL = {"grounding": 20_000_000, "vqa": 20_000_000, "caption": 15_000_000, "embodied": 10_000_000,
            "general": 15_000_000}


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(corpus: pathlib.Path) -> CorpusManifest:
    return CorpusManifest.from_json(corpus.read_bytes(), str(corpus))


@pytest.fixture(scope="module")
def droid_and_vl(droid_shards, tmp_path_factory):
    """A corpus of the real DROID ingest output and a synthetic VL dataset, with the corpus file in its own folder."""
    from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset

    droid, report = droid_shards
    vl = write_vl_dataset(tmp_path_factory.mktemp("vl") / "captions", n_samples=24, image_size=(16, 16))
    corpus = tmp_path_factory.mktemp("corpora") / "mix" / "corpus.json"
    inputs = [CorpusInput(path=droid, kind=ComponentKind.ROBOT), CorpusInput(path=vl, kind=ComponentKind.VL)]
    write_corpus(build_corpus(inputs, corpus, CorpusConfig(seed=11)), corpus)
    return corpus, droid, vl, report


def test_every_shard_is_listed_with_counts_hashes_and_a_url_relative_to_the_corpus(droid_and_vl):
    corpus, droid, vl, report = droid_and_vl
    manifest = load(corpus)
    robot, captions = manifest.components
    assert (robot.name, robot.kind, captions.name, captions.kind) == (
        "droid", ComponentKind.ROBOT, "synth-vl-caption", ComponentKind.VL)
    for split, steps in report.steps_by_split.items():
        assert robot.samples_of(split) == steps
    assert captions.task == "caption" and captions.stats_url is None
    assert (corpus.parent / robot.stats_url).resolve() == (droid / "stats.json").resolve()
    for component, root in ((robot, droid), (captions, vl)):
        rows = {(root / r.url).resolve(): r for r in read_manifest(root / "manifest.parquet")}
        assert len(component.shards) == len(rows)
        for shard in component.shards:
            path = (corpus.parent / shard.url).resolve()
            assert not pathlib.PurePath(shard.url).is_absolute()
            assert (shard.samples, shard.bytes, shard.sha256) == (rows[path].samples, path.stat().st_size,
                                                                  sha256(path))
    assert manifest.ratio == {"vl": 1.0, "robot": 6.0} and manifest.seed == 11
    assert manifest.created_by.startswith("vlaforge==")
    lineage = {(e["component"], e["file"]): e["sha256"] for e in manifest.lineage}
    assert lineage[("droid", robot.stats_url)] == sha256(droid / "stats.json")
    assert sha256(droid / "manifest.parquet") in lineage.values() and sha256(vl / "manifest.parquet") in \
        lineage.values()


def test_the_same_inputs_give_the_same_bytes(droid_and_vl, tmp_path):
    corpus, droid, vl, _ = droid_and_vl
    again = corpus.parent / "again.json"
    inputs = [CorpusInput(path=droid, kind=ComponentKind.ROBOT), CorpusInput(path=vl, kind=ComponentKind.VL)]
    write_corpus(build_corpus(inputs, again, CorpusConfig(seed=11)), again)
    assert again.read_bytes() == corpus.read_bytes()
    assert json.loads(corpus.read_bytes())["format"] == CORPUS_FORMAT


def test_default_weights_follow_train_samples_and_given_weights_are_shares(small_corpus):
    manifest = load(small_corpus)
    weights = {c.name: c.weight for c in manifest.components}
    assert weights["arm_a"] == pytest.approx(150 / 250) and weights["arm_b"] == pytest.approx(100 / 250)
    assert weights["synth-vl-caption"] == 1.0
    root = small_corpus.parent
    inputs = [CorpusInput(path=root / n, kind=ComponentKind.ROBOT) for n in ("arm_a", "arm_b")]
    given = build_corpus(inputs, root / "c.json", CorpusConfig(weights={"arm_b": 0.75}))
    assert {c.name: c.weight for c in given.components} == {"arm_a": 0.25, "arm_b": 0.75}
    with pytest.raises(CorpusError, match="sum to 0.9"):
        build_corpus(inputs, root / "c.json", CorpusConfig(weights={"arm_a": 0.5, "arm_b": 0.4}))
    with pytest.raises(CorpusError, match="arm_b"):
        build_corpus(inputs, root / "c.json", CorpusConfig(weights={"arm_bb": 0.5}))


def test_inputs_are_checked_with_errors_that_say_what_to_do(small_corpus, tmp_path):
    root = small_corpus.parent
    with pytest.raises(CorpusError, match="says kind 'vl'; pass it with --vl"):
        build_corpus([CorpusInput(path=root / "vl", kind=ComponentKind.ROBOT)], tmp_path / "c.json", CorpusConfig())
    with pytest.raises(CorpusError, match="no manifest.parquet"):
        build_corpus([CorpusInput(path=tmp_path, kind=ComponentKind.ROBOT)], tmp_path / "c.json", CorpusConfig())
    with pytest.raises(CorpusError, match="repeat"):
        build_corpus([CorpusInput(path=root / "arm_a", kind=ComponentKind.ROBOT)] * 2, tmp_path / "c.json",
                      CorpusConfig())
    (tmp_path / "no_stats").mkdir()
    (tmp_path / "no_stats" / "manifest.parquet").write_bytes((root / "arm_a" / "manifest.parquet").read_bytes())
    with pytest.raises(CorpusError, match="needs stats.json"):
        build_corpus([CorpusInput(path=tmp_path / "no_stats", kind=ComponentKind.ROBOT)], tmp_path / "c.json",
                      CorpusConfig())
    with pytest.raises(CorpusError, match="ratio"):
        CorpusConfig(ratio={"vl": 1, "audio": 2})


def test_a_file_that_is_not_a_corpus_manifest_is_refused_by_name(tmp_path):
    with pytest.raises(CorpusError, match=r"x.json: format is 'other'"):
        CorpusManifest.from_json(b'{"format": "other"}', "x.json")
    with pytest.raises(CorpusError, match="x.json: not JSON"):
        CorpusManifest.from_json(b"PK\x03\x04", "x.json")
    with pytest.raises(CorpusError, match="x.json: malformed"):
        CorpusManifest.from_json(json.dumps({"format": CORPUS_FORMAT, "components": []}).encode(), "x.json")


def test_the_recipe_scale_corpus_counts_weights_and_plan(scale_corpus):
    manifest = load(scale_corpus)
    robot = [c for c in manifest.components if c.kind is ComponentKind.ROBOT]
    vl = [c for c in manifest.components if c.kind is ComponentKind.VL]
    assert sum(c.samples_of("train") for c in robot) == 200_000_000
    assert sum(c.samples_of("train") for c in vl) == 80_000_000
    assert sum(len(c.shards) for c in manifest.components) == 94_056
    for components, sizes in ((robot, SCALE_ROBOT), (vl, SCALE_VL)):
        total = sum(sizes.values())
        for component in components:
            assert component.weight == pytest.approx(sizes[component.name] / total)
    assert scale_corpus.stat().st_size < 250 * 94_056  # one line a shard
    plan = {row.component: row for row in scale_plan(manifest)}
    run = RECIPE_STEPS * RECIPE_BATCH
    assert sum(row.draws for row in plan.values() if row.kind == "vl") == pytest.approx(run / 7, abs=10)
    assert plan["droid"].draw_share == pytest.approx(6 / 7 * 27 / 200)
    assert plan["teleop_towel"].epochs == pytest.approx(run * 6 / 7 / 200_000_000, rel=1e-6)
    assert plan["vqa"].epochs == pytest.approx(run / 7 / 80_000_000, rel=1e-6)


def test_the_draw_schedule_and_slot_plans_stay_cheap_at_recipe_scale(scale_corpus):
    manifest = load(scale_corpus)
    tracemalloc.start()
    schedule = MixtureSchedule(manifest.kind_shares(),
                               [MixtureEntry(c.name, c.kind.value, c.weight) for c in manifest.components])
    kinds = {c.name: c.kind.value for c in manifest.components}
    for _ in range(30_000):
        name = schedule.peek()
        schedule.advance(name, kinds[name])
    biggest = manifest.component("open_mix")
    sizes = [shard.samples for shard in biggest.shards]
    plan = Plan(PlanSpec(epoch=3, seed=0, slots=1024, block=256, interleave=4), biggest.name, sizes)
    pieces, order = plan.sequence(777)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert order.length in (91_296_000 // 1024, 91_296_000 // 1024 + 1)
    assert len(pieces) <= 91_296_000 // 1024 // 3700 + 2
    assert schedule.state_dict()["kinds"] == {"robot": 25_714, "vl": 4_286}
    # A list of 91M sample ids alone would take 730 MB; the plan holds one small object per shard.
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_a_stream_starts_on_the_full_scale_manifest_with_a_small_state(scale_corpus):
    stream = CorpusStream(str(scale_corpus), rank=17, world_size=128, worker_id=3, num_workers=8)
    state = stream.state_dict()
    assert state["world"]["slots"] == 1024 and state["slot"] == 17 * 8 + 3
    assert len(json.dumps(state)) < 4096
