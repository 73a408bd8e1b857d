"""The data steps of `vlaforge demo`: each writes built-in sample data or tiny random-weight models, runs the flow the
matching CLI verb runs, prints what that verb prints, and returns the datasets it made (`DemoDataset`).

Thin wiring like every module in `flows/`: the work happens in the flows and the components they build.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections import Counter
from typing import Any

from rich.console import Console

from vlaforge.datasets.synth.droid import write_droid_dataset
from vlaforge.datasets.synth.lerobot import write_lerobot_dataset
from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_dataset
from vlaforge.datasets.synth.teleop_mcap import write_teleop_mcap_dataset
from vlaforge.flows.cli_options import print_vl_summary
from vlaforge.pipelines.corpus_manifest import ComponentKind

RELABELLED = "droid"
"""The robot dataset the VL generators and the grounding run on (its poses project through a calibration)."""
NO_CHECKS = {"language": None, "reject_truncated": False, "max_words": 10_000, "max_chars": 100_000,
             "echo_ngram": 100}
"""Answer checks that pass anything (as `benchmarks/vl_data.py` runs the tiny VLM): its noise still makes samples."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoSizes:
    """How much sample data the demo writes; `quick()` is the smallest that still exercises every step."""

    droid_episodes: int = 6
    """DROID episodes (2 TFRecord shards); the VL generators and the grounding run on them."""
    lerobot_episodes: tuple[int, int] = (4, 3)
    """Episodes of the LeRobot v3.0 ("molmoact-v3") and v2.1 datasets."""
    teleop: tuple[int, float] = (2, 3.0)
    """Teleop recordings per format (MCAP, ALOHA HDF5) and their length in seconds."""
    vl_rows: int = 24
    """Rows of the general VL Parquet file (every fifth from row 3 on is a bad row)."""
    caption_frames: int = 2
    """Frames the tiny VLM captions per DROID episode."""
    grounding_frames: tuple[str, ...] = ("first", "gripper")
    """Frame selection policies of the grounding run."""
    batches: int = 3
    """Loader batches streamed, one optimizer step each."""
    batch_size: int = 12
    """Samples per batch (both kinds, at the corpus's 1:6)."""
    closed_loop_steps: int = 24
    """Control steps of the closed-loop episode in gym-aloha at the end."""
    eval_during_training: tuple[int, int] = (2, 4)
    """(K, steps): `vlaforge train --eval-sim` runs one gym-aloha episode of `steps` control steps on the policy of
    every K-th optimizer step, while the training waits."""

    @classmethod
    def quick(cls) -> "DemoSizes":
        # DROID keeps its 6 episodes: the random detectors' few chance agreements (the grounding samples) are on
        # those frames, and fewer would leave the grounding dataset empty.
        return cls(lerobot_episodes=(2, 2), teleop=(1, 2.0), vl_rows=12, caption_frames=1, closed_loop_steps=12)


@dataclasses.dataclass(frozen=True)
class DemoDataset:
    """One dataset the demo wrote: a corpus component."""

    name: str
    kind: ComponentKind
    path: pathlib.Path
    samples: int
    task: str | None = None


def write_robot_samples(raw: pathlib.Path, sizes: DemoSizes) -> dict[str, tuple[str, pathlib.Path]]:
    """Sample robot datasets by name: (source format, dataset path)."""
    molmo, lerobot = sizes.lerobot_episodes
    recordings, seconds = sizes.teleop
    return {
        "droid": ("droid", write_droid_dataset(raw / "droid", n_episodes=sizes.droid_episodes, n_shards=2)),
        "molmoact-v3": ("lerobot", write_lerobot_dataset(raw / "molmoact_v30", version="v3.0", n_episodes=molmo)),
        "lerobot-v21": ("lerobot", write_lerobot_dataset(raw / "lerobot_v21", version="v2.1", n_episodes=lerobot)),
        "teleop-mcap": ("teleop-mcap", write_teleop_mcap_dataset(raw / "teleop_mcap", n_episodes=recordings,
                                                                 duration_s=seconds)),
        "teleop-hdf5": ("teleop-hdf5", write_aloha_dataset(raw / "teleop_aloha", n_episodes=recordings,
                                                           duration_s=seconds)),
    }


def ingest_robot(output: pathlib.Path, sizes: DemoSizes, run: dict[str, Any], console: Console) -> list[DemoDataset]:
    """Step 1: five robot datasets written in their published formats, each through the `ingest` flow."""
    from vlaforge.flows.ingest import ingest
    from vlaforge.flows.ingest_cli import print_report

    console.rule("1. robot datasets -> shards (the `ingest` flow, as `vlaforge ingest SOURCE`)")
    console.print(f"writing sample DROID RLDS, LeRobot v3.0 / v2.1, teleop MCAP and ALOHA HDF5 under {output / 'raw'}")
    datasets = []
    for name, (source, path) in write_robot_samples(output / "raw", sizes).items():
        target = output / "shards" / name
        report = ingest(source=source, input_path=str(path), output=str(target),
                        options={"shard_max_samples": 200, "validation_fraction": 0.2}, **run)
        print_report(report, console)
        datasets.append(DemoDataset(name, ComponentKind.ROBOT, target, sum(report["steps_by_split"].values())))
    console.print(f"shards, manifests, statistics and quarantine tables are under {output / 'shards'}")
    return datasets


def ingest_general_vl(output: pathlib.Path, sizes: DemoSizes, run: dict[str, Any], console: Console) -> DemoDataset:
    """Step 2: a hub-style LLaVA Parquet file (bad rows included) through the `ingest-vl` flow."""
    from vlaforge.datasets.synth.llava import write_vl_parquet
    from vlaforge.datasets.vl_parquet import VlParquetSource
    from vlaforge.flows.vl_ingest import ingest_vl

    console.rule(f"2. general VL data -> VL shards (the `ingest-vl` flow, as `vlaforge ingest {VlParquetSource.name}`)")
    source = write_vl_parquet(output / "raw" / "vl" / "llava-instruct-mix.parquet", n_rows=sizes.vl_rows)
    target = output / "vl" / "llava-instruct-mix"
    summary = ingest_vl(input_path=str(source), output=str(target), dataset="llava-instruct-mix",
                        sample_options={"validation_fraction": 0.2}, **run)
    print_vl_summary(summary, console, f"ingest {VlParquetSource.name}")
    console.print(f"{source} (its missing-image, no-answer and duplicate rows are quarantined by reason) -> {target}")
    return DemoDataset("llava-instruct-mix", ComponentKind.VL, target, summary["samples"], summary["task"])


def relabel_robot(output: pathlib.Path, sizes: DemoSizes, run: dict[str, Any], console: Console) -> list[DemoDataset]:
    """Step 3: VL samples from the DROID shards with the `relabel` flow: trajectories (projected, no VLM) and
    captions by a tiny random-weight Qwen3-VL."""
    from vlaforge.datasets.synth.pick_place import write_calibration
    from vlaforge.flows.relabel import relabel
    from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl

    console.rule("3. VL data from robot trajectories (the `relabel` flow, as `vlaforge relabel`)")
    shards = output / "shards" / RELABELLED
    calibration = write_calibration(output / "raw" / "calibration.json")
    console.print(f"trajectory: the gripper's next second projected through the camera calibration {calibration} "
                  "(sample data: one overhead camera for every episode); no VLM")
    trajectory = relabel(shards=str(shards), output=str(output / "vl" / f"{RELABELLED}-trajectory"),
                         generator="trajectory", options={"calibration": str(calibration), "min_visible": 0.5}, **run)
    print_vl_summary(trajectory, console, "relabel trajectory")
    vlm = write_tiny_qwen3_vl(output / "models" / "tiny-qwen3-vl")
    console.print(f"caption: a tiny RANDOM-WEIGHT Qwen3-VL ({vlm}, through local:DIR like a real checkpoint). Its "
                  "captions are NOISE: this shows the plumbing (batching, provenance, shards), not content; answer "
                  "checks are off for this run so the noise still becomes samples", style="bold yellow")
    caption = relabel(shards=str(shards), output=str(output / "vl" / f"{RELABELLED}-caption"), generator="caption",
                      vlm=f"local:{vlm}", options={"frames_per_episode": sizes.caption_frames, "max_new_tokens": 12,
                                                   "validation": NO_CHECKS}, **run)
    print_vl_summary(caption, console, "relabel caption")
    console.print(f"one noise caption: {_first_answer(output / 'vl' / f'{RELABELLED}-caption')!r}", markup=False)
    return [DemoDataset(s["dataset"], ComponentKind.VL, output / "vl" / s["dataset"], s["samples"], s["task"])
            for s in (trajectory, caption)]


def _first_answer(dataset: pathlib.Path) -> str:
    """The assistant's text in the first sample of a VL dataset (or "" when it has none)."""
    from vlaforge.pipelines.shards.manifest import MANIFEST_NAME, read_manifest
    from vlaforge.pipelines.shards.members import iter_samples

    for record in read_manifest(dataset / MANIFEST_NAME):
        with open(dataset / record.url, "rb") as handle:
            for sample in iter_samples(handle, record.url, ("conversation.json",)):
                return sample["conversation.json"][-1]["content"][0]["text"]
    return ""


def ground(output: pathlib.Path, sizes: DemoSizes, run: dict[str, Any], console: Console) -> tuple[DemoDataset, str]:
    """Step 4: the `annotate` flow on the DROID shards with tiny random-weight Grounding DINO, LLMDet and SAM (no
    hosted detector: no token), then the auditor's report. Returns the grounding dataset and the report's path."""
    from vlaforge.annotators.annotate_recipe import default_recipe
    from vlaforge.flows.annotate import annotate
    from vlaforge.flows.annotate_cli import print_summary
    from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector, write_tiny_sam

    console.rule("4. grounding by detector consensus (the `annotate` flow, as `vlaforge annotate --without hosted`)")
    models = output / "models"
    # Low thresholds: random detectors score everything low; this way they propose boxes for consensus to judge.
    local = {"device": "cpu", "box_threshold": 0.05, "text_threshold": 0.0}
    recipe = {
        **default_recipe(),
        "detectors": [{"kind": "grounding_dino", "model": str(write_tiny_detector(models / "tiny-grounding-dino")),
                       **local},
                      {"kind": "llmdet", "model": str(write_tiny_detector(models / "tiny-llmdet", seed=1,
                                                                          architecture="mm_grounding_dino")), **local}],
        "sam": {"model": str(write_tiny_sam(models / "tiny-sam")), "device": "cpu"},
        "frames": {"policies": list(sizes.grounding_frames), "cameras": ["exterior_1"]},
        "source": {"shards_per_unit": 1, "split": None},
        "shards": {"max_samples": 200},
    }
    console.print(f"tiny RANDOM-WEIGHT Grounding DINO, LLMDet (MM-Grounding-DINO) and SAM under {models}: their boxes "
                  "are noise, so they mostly disagree and consensus (2 of 2) rejects; the report shows why",
                  style="bold yellow")
    result = annotate(shards=[str(output / "shards" / RELABELLED)], output=str(output / "grounding"), recipe=recipe,
                      **run)
    print_summary(result, console)
    summary = result["datasets"][RELABELLED]
    reasons = _audit_reasons(output / "grounding" / RELABELLED)
    console.print("candidates by decision: " + ", ".join(f"{n} {d} ({r})" for (d, r), n in reasons.most_common()))
    report = result["report"]["path"]
    console.print(f"the auditor's report: {report}")
    return DemoDataset(summary["dataset"], ComponentKind.VL, output / "grounding" / RELABELLED, summary["samples"],
                       summary["task"]), report


def _audit_reasons(dataset: pathlib.Path) -> Counter:
    import pyarrow.parquet as pq

    rows = pq.read_table(dataset / "audit.parquet", columns=["decision", "reason"]).to_pylist()
    return Counter((row["decision"], row["reason"]) for row in rows)


def build_demo_corpus(output: pathlib.Path, datasets: list[DemoDataset], sizes: DemoSizes,
                      console: Console) -> tuple[pathlib.Path, list[DemoDataset]]:
    """Step 5: a corpus manifest over every dataset with samples (as `vlaforge corpus build`), then what
    `vlaforge corpus inspect` prints. Returns the manifest's path and the datasets in it."""
    from vlaforge.flows.cli import build_parser
    from vlaforge.flows.corpus_cli import run as corpus_verb
    from vlaforge.pipelines.corpus_manifest import CorpusConfig, CorpusInput, build_corpus, write_corpus

    console.rule("5. the corpus: every robot and VL dataset, drawn VL:robot 1:6 (as `vlaforge corpus build`)")
    included = [d for d in datasets if d.samples > 0]
    for empty in (d for d in datasets if d.samples == 0):
        console.print(f"{empty.name}: no samples (nothing accepted), so not a component: a corpus lists shards")
    path = output / "corpus" / "corpus.json"
    inputs = [CorpusInput(path=d.path, kind=d.kind, name=d.name) for d in included]
    manifest = build_corpus(inputs, path, CorpusConfig())
    write_corpus(manifest, path, overwrite=True)  # each run of the demo builds it anew
    console.print(f"wrote {path}: {len(manifest.components)} components, "
                  f"{sum(len(c.shards) for c in manifest.components)} shards", markup=False)
    console.print(f"$ vlaforge corpus inspect {path} --samples 0 --steps {sizes.batches} "
                  f"--batch-size {sizes.batch_size}", markup=False)
    inspect = build_parser().parse_args(["corpus", "inspect", str(path), "--samples", "0", "--steps",
                                         str(sizes.batches), "--batch-size", str(sizes.batch_size)])
    corpus_verb(inspect, console)
    return path, included


def component_counts(corpus: pathlib.Path) -> dict[str, dict[str, Any]]:
    """{component: {"kind", "samples"}} of a corpus manifest (train split)."""
    body = json.loads(corpus.read_text())
    return {c["name"]: {"kind": c["kind"], "samples": sum(s["samples"] for s in c["shards"] if s["split"] == "train")}
            for c in body["components"]}
