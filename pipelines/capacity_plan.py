"""A capacity plan: the cluster, hours, storage and egress that the corpus and the training run need.

Arithmetic over named rates, nothing more. Each rate carries where its number comes from: measured by a benchmark on
this CPU, taken from the report or the release, or assumed. `vlaforge plan` prints every one of them beside the
plan, and each can be replaced: by a benchmark's JSON output (`--rates FILE`, a flat `{name: value}` object) or by
hand (`--set name=value`). The defaults size the report's recipe: 200M robot steps, 80M VL samples, pre-training
40k steps at batch 32,768, post-training 40k steps at batch 2,048.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from vlaforge.datasets.configurable import did_you_mean

HOUR = 3600.0
TB = 1e12


@dataclasses.dataclass(frozen=True)
class Rate:
    """One number the plan rests on."""

    value: float
    unit: str
    source: str
    """Where the number comes from: "measured: ...", "report: ...", "release: ..." or "assumed: ..."."""


DEFAULT_RATES: dict[str, Rate] = {
    # Ingest, per CPU core (one unit per core; units run in parallel).
    "ingest.droid.steps_per_core_s": Rate(9165, "steps/s/core",
                                          "measured: benchmarks/ingest.py, DROID pass-through, this CPU"),
    "ingest.lerobot.steps_per_core_s": Rate(400, "steps/s/core",
                                            "assumed: MP4 decode + JPEG encode of 3 cameras at 224x224"),
    "ingest.teleop-mcap.steps_per_core_s": Rate(1027, "steps/s/core", "measured: benchmarks/teleop.py, MCAP"),
    "ingest.teleop-hdf5.steps_per_core_s": Rate(3804, "steps/s/core",
                                                "measured: benchmarks/teleop.py, HDF5 with JPEG frames"),
    "ingest.vl.samples_per_core_s": Rate(300, "samples/s/core",
                                         "assumed: VL rows re-encoded to JPEG, deduplicated by hash"),
    # VL data on GPUs.
    "annotate.grounding_dino.images_per_gpu_s": Rate(12, "images/s/GPU",
                                                     "assumed: Swin-B Grounding DINO, 800 px, bf16, A10G"),
    "annotate.llmdet.images_per_gpu_s": Rate(8, "images/s/GPU", "assumed: LLMDet large, 800 px, bf16, A10G"),
    "annotate.sam.images_per_gpu_s": Rate(10, "images/s/GPU",
                                          "assumed: SAM ViT-H, every candidate box of an image, A10G"),
    "annotate.hosted.images_per_s": Rate(10, "images/s", "assumed: the hosted API's quota for one account"),
    "relabel.vlm.samples_per_gpu_s": Rate(15, "samples/s/GPU", "assumed: Qwen3-VL-4B on vLLM, bf16, A10G"),
    # Training.
    "train.gpu_peak_flops": Rate(989e12, "FLOP/s", "H100 SXM dense bf16 peak"),
    "train.mfu": Rate(0.35, "fraction", "assumed: model FLOPs utilisation of a ZeRO-2 run"),
    "train.vlm_params": Rate(4_437_815_808, "parameters", "measured: Qwen3-VL-4B, meta-device count"),
    "train.dit_params": Rate(281_497_632, "parameters", "measured: the report-scale DiT, meta-device count"),
    "train.tokens_per_image": Rate(49, "tokens", "Qwen3-VL: 224x224, 16 px patches merged 2x2"),
    "train.cameras": Rate(3, "images/sample", "report: two wrist cameras and one external"),
    "train.text_tokens": Rate(32, "tokens/sample", "assumed: instruction and template"),
    "train.chunk_len": Rate(30, "actions", "report: 1 s at 30 Hz on the real robot"),
    "train.noise_samples": Rate(4, "per VLM pass", "release: training_repeat = 4 noise samples share one VLM pass"),
    # Storage and traffic.
    "shard.robot.bytes_per_step": Rate(66_000, "bytes/step",
                                       "measured: DROID shards, 3 JPEG cameras at 180x320, quality 90"),
    "shard.vl.bytes_per_sample": Rate(60_000, "bytes/sample", "assumed: one 448 px JPEG and its conversation"),
    "raw.robot.bytes_per_step": Rate(120_000, "bytes/step", "assumed: raw logs read once at ingest"),
}
"""Every rate the plan uses, with its default and where that comes from."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorpusTarget:
    """The corpus to build."""

    robot_steps: float = 200e6
    """Robot timesteps in all (the report: about 200M)."""
    robot_mix: tuple[tuple[str, float], ...] = (("droid", 0.15), ("lerobot", 0.25), ("teleop-mcap", 0.3),
                                                ("teleop-hdf5", 0.3))
    """(ingest format, share of the robot steps); shares sum to 1."""
    vl_samples: float = 80e6
    """VL samples in all (the report: more than 80M)."""
    vl_mix: tuple[tuple[str, float], ...] = (("general", 0.6), ("grounding", 0.15), ("relabel", 0.25))
    """(kind, share of the VL samples): general VL datasets (CPU ingest), grounding (detectors), VLM relabeling."""
    grounding_samples_per_image: float = 3.0
    """Grounding samples an annotated image yields (objects agreed on)."""
    detectors: tuple[str, ...] = ("grounding_dino", "llmdet", "sam", "hosted")
    """The detector stages every annotated image goes through."""

    def __post_init__(self) -> None:
        for name, mix in (("robot_mix", self.robot_mix), ("vl_mix", self.vl_mix)):
            if not math.isclose(sum(share for _, share in mix), 1.0, abs_tol=1e-6):
                raise ValueError(f"CorpusTarget.{name} shares must sum to 1, got {dict(mix)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingTarget:
    """The training run: (phase, optimizer steps, global batch) in order."""

    phases: tuple[tuple[str, int, int], ...] = (("step1_choice", 40_000, 32_768), ("step2_dit", 40_000, 32_768),
                                                ("posttrain_async", 40_000, 2_048))
    """The report: pre-training 40k steps at batch 32,768; post-training batch 2,048 for 40k (or 80k) steps."""
    vl_share: float = 1 / 7
    """Share of step 1's samples that are VL (1:6), which cost the VLM only."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cluster:
    """What the work runs on."""

    cpu_cores: int = 512
    """Cores for ingest and CPU stages."""
    gpus: int = 32
    """GPUs for the annotation and relabeling model stages."""
    train_gpus: int = 256
    """GPUs of the training run."""


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """One piece of work: how much, at what rate, how long on the cluster."""

    stage: str
    work: float
    unit: str
    rate: str
    resource_hours: float
    """Core-hours or GPU-hours."""
    resource: str
    wall_hours: float


def resolve_rates(overrides: Mapping[str, float] | None = None, source: str = "given",
                  base: Mapping[str, Rate] | None = None) -> dict[str, Rate]:
    """`base` (the default rates) with `overrides` (name -> value) in their place, marked as coming from `source`;
    an unknown name is refused with the closest known one."""
    rates = dict(DEFAULT_RATES if base is None else base)
    for name, value in (overrides or {}).items():
        if name not in rates:
            raise ValueError(f"unknown rate {name!r}{did_you_mean(name, rates) or '.'} Known: {', '.join(rates)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"rate {name} must be a positive number, got {value!r}")
        rates[name] = Rate(float(value), rates[name].unit, source)
    return rates


def plan(rates: Mapping[str, Rate], corpus: CorpusTarget = CorpusTarget(), training: TrainingTarget = TrainingTarget(),
         cluster: Cluster = Cluster()) -> dict[str, Any]:
    """The plan: rows of work (ingest, VL data, training), storage and traffic, and the rates it used."""
    rows = _ingest_rows(rates, corpus, cluster) + _vl_rows(rates, corpus, cluster) + _training_rows(rates, training,
                                                                                                  cluster)
    return {
        "rows": [dataclasses.asdict(row) for row in rows],
        "totals": {
            "core_hours": sum(r.resource_hours for r in rows if r.resource == "core"),
            "gpu_hours": sum(r.resource_hours for r in rows if r.resource == "GPU"),
            "data_wall_hours": sum(r.wall_hours for r in rows if not r.stage.startswith("train")),
            "train_wall_hours": sum(r.wall_hours for r in rows if r.stage.startswith("train")),
        },
        "storage": _storage(rates, corpus),
        "traffic": _traffic(rates, corpus, training),
        "cluster": dataclasses.asdict(cluster),
        "rates": {name: dataclasses.asdict(rate) for name, rate in rates.items()},
    }


def _row(stage: str, work: float, unit: str, rate: Rate, resource: str, count: int) -> PlanRow:
    hours = work / rate.value / HOUR
    return PlanRow(stage, work, unit, f"{rate.value:g} {rate.unit}", hours, resource, hours / max(count, 1))


def _ingest_rows(rates: Mapping[str, Rate], corpus: CorpusTarget, cluster: Cluster) -> list[PlanRow]:
    return [_row(f"ingest {source}", corpus.robot_steps * share, "steps", rates[f"ingest.{source}.steps_per_core_s"],
                 "core", cluster.cpu_cores) for source, share in corpus.robot_mix]


def _vl_rows(rates: Mapping[str, Rate], corpus: CorpusTarget, cluster: Cluster) -> list[PlanRow]:
    mix = dict(corpus.vl_mix)
    rows = [_row("ingest general VL", corpus.vl_samples * mix.get("general", 0), "samples",
                 rates["ingest.vl.samples_per_core_s"], "core", cluster.cpu_cores)]
    images = corpus.vl_samples * mix.get("grounding", 0) / corpus.grounding_samples_per_image
    for detector in corpus.detectors:
        if detector == "hosted":  # a quota, not our GPUs: one account's rate, whatever the cluster
            rate = rates["annotate.hosted.images_per_s"]
            hours = images / rate.value / HOUR
            rows.append(PlanRow("annotate hosted API", images, "images", f"{rate.value:g} {rate.unit}", 0.0, "quota",
                                hours))
        else:
            rows.append(_row(f"annotate {detector}", images, "images", rates[f"annotate.{detector}.images_per_gpu_s"],
                             "GPU", cluster.gpus))
    rows.append(_row("relabel VLM", corpus.vl_samples * mix.get("relabel", 0), "samples",
                     rates["relabel.vlm.samples_per_gpu_s"], "GPU", cluster.gpus))
    return rows


def training_flops_per_sample(rates: Mapping[str, Rate], phase: str) -> float:
    """Training FLOPs of one robot sample: 6 x parameters x tokens where a part trains, 2 x where it only runs
    forward (step 2's frozen VLM); the DiT runs once per noise sample on its chunk tokens."""
    value = {name: rate.value for name, rate in rates.items()}
    vlm_tokens = value["train.cameras"] * value["train.tokens_per_image"] + value["train.text_tokens"]
    dit_tokens = value["train.chunk_len"] + 2  # [SINK], the state, the chunk
    if phase == "step1_choice":  # the VLM reads T action tokens and a score token too
        return 6 * value["train.vlm_params"] * (vlm_tokens + value["train.chunk_len"] + 1)
    vlm = (2 if phase == "step2_dit" else 6) * value["train.vlm_params"] * vlm_tokens
    return vlm + 6 * value["train.dit_params"] * dit_tokens * value["train.noise_samples"]


def _training_rows(rates: Mapping[str, Rate], training: TrainingTarget, cluster: Cluster) -> list[PlanRow]:
    rows = []
    per_gpu = rates["train.gpu_peak_flops"].value * rates["train.mfu"].value
    for phase, steps, batch in training.phases:
        flops = training_flops_per_sample(rates, phase)
        samples_per_gpu_s = per_gpu / flops
        rate = Rate(samples_per_gpu_s, "samples/s/GPU", "derived: peak FLOP/s x MFU / FLOPs per sample")
        rows.append(_row(f"train {phase}", float(steps) * batch, "samples", rate, "GPU", cluster.train_gpus))
    return rows


def _storage(rates: Mapping[str, Rate], corpus: CorpusTarget) -> dict[str, float]:
    robot = corpus.robot_steps * rates["shard.robot.bytes_per_step"].value
    vl = corpus.vl_samples * rates["shard.vl.bytes_per_sample"].value
    raw = corpus.robot_steps * rates["raw.robot.bytes_per_step"].value
    return {"robot_shards_tb": robot / TB, "vl_shards_tb": vl / TB, "raw_robot_tb": raw / TB,
            "total_tb": (robot + vl + raw) / TB}


def _traffic(rates: Mapping[str, Rate], corpus: CorpusTarget, training: TrainingTarget) -> dict[str, float]:
    """Bytes the training run streams from object storage (egress when it reads from another region or provider):
    every sample drawn, at the shards' bytes per sample, VL at its share in step 1."""
    robot, vl = rates["shard.robot.bytes_per_step"].value, rates["shard.vl.bytes_per_sample"].value
    total = 0.0
    for phase, steps, batch in training.phases:
        share = training.vl_share if phase == "step1_choice" else 0.0
        total += float(steps) * batch * ((1 - share) * robot + share * vl)
    robot_drawn = sum(float(steps) * batch * (1 - (training.vl_share if phase == "step1_choice" else 0.0))
                      for phase, steps, batch in training.phases if not phase.startswith("posttrain"))
    return {"train_read_tb": total / TB,
            "ingest_read_tb": corpus.robot_steps * rates["raw.robot.bytes_per_step"].value / TB,
            "pretrain_epochs_of_robot_data": robot_drawn / corpus.robot_steps}
