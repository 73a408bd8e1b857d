"""Offline evaluation: the policy's chunks against the recorded actions of held-out episodes, in robot units.

    results = evaluate_offline(OfflineEvalConfig(policy=pathlib.Path("runs/step2/policy"),
                                                 corpus="s3://bucket/corpus.json", split="validation"))

One pass over every robot sample of the split (`CorpusStream(one_pass=True)`, so each sample once, in a fixed
order). For each, the policy sees what it would see on the robot (the sample's frames in the loader's camera slots
at the training size, its instruction and state) and samples a chunk with its flow-matching sampler (the model's
5 Euler steps), the noise seeded by (seed, sample index): the run is deterministic for a seed. The chunk is compared
with the recorded one over its valid steps (not past the episode's end), in the embodiment's native units:
- per embodiment and per horizon step: L1 (mean |error| over the dimensions) and MSE;
- for a pre-training step-1 checkpoint (its `choice_policies.*` beside the weights): the N Choice Policies
  candidates too: the error of the top-scored one (what the policy would execute), of the best of N (an oracle),
  and how often the top score picks the best.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from vlaforge.datasets.schema import MetaField, SampleKey
from vlaforge.pipelines.corpus_manifest import ComponentKind
from vlaforge.pipelines.shards.reader import StreamField
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.normalization import Normalize
from vlaforge.training.data.robot_transform import decode_frame
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig, ChoicePoliciesHead
from vlaforge.training.policy.observation_map import CAMERA_SLOTS, MAP_FILE, ObservationMap
from vlaforge.training.policy.policy import Observation, Policy

OFFLINE_RESULTS = "offline_results.json"
CHOICE_CONFIG = "choice_policies.json"
CHOICE_WEIGHTS = "choice_policies.safetensors"
"""The step-1 head's files as `Trainer.export` names them (`training/trainer.py`; a test holds the names equal).
Not imported from there: the trainer module imports DeepSpeed, which an evaluation does not need."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OfflineEvalConfig:
    """One offline evaluation (see the module docstring)."""

    policy: pathlib.Path
    """Exported policy directory."""
    corpus: str
    """Corpus manifest URL (path, file://, http(s)://, s3://)."""
    split: str = "validation"
    """The held-out split the corpus's datasets wrote."""
    seed: int = 0
    """Seeds each sample's noise (with its index)."""
    max_samples: int | None = None
    """Stop after this many robot samples (None: the whole split)."""
    image_size: tuple[int, int] | None = None
    """(H, W) frames reach the model at; None: the policy's observation map's, else 224x224 (the loader's)."""
    device: str = "cpu"
    dtype: str | None = None
    output: pathlib.Path | None = None
    """Where `offline_results.json` goes (None: not written)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", pathlib.Path(self.policy))
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"OfflineEvalConfig.max_samples must be >= 1, got {self.max_samples}")


@dataclasses.dataclass
class _ErrorSums:
    """Running sums of |e| and e² per horizon step (native units, mean over dimensions)."""

    l1: np.ndarray
    squared: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, steps: int) -> "_ErrorSums":
        return cls(np.zeros(steps), np.zeros(steps), np.zeros(steps, dtype=np.int64))

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        steps = len(truth)
        error = predicted[:steps].astype(np.float64) - truth.astype(np.float64)
        self.l1[:steps] += np.abs(error).mean(axis=-1)
        self.squared[:steps] += (error ** 2).mean(axis=-1)
        self.counts[:steps] += 1

    def summary(self) -> dict[str, Any]:
        counts = np.maximum(self.counts, 1)
        l1, mse = self.l1 / counts, self.squared / counts
        total = max(int(self.counts.sum()), 1)
        return {"l1_by_step": l1.tolist(), "mse_by_step": mse.tolist(), "samples_by_step": self.counts.tolist(),
                "l1": float(self.l1.sum() / total), "mse": float(self.squared.sum() / total)}


class _ChoiceStats:
    """Choice Policies candidates of one embodiment: top-scored, best of N, and how often they agree."""

    def __init__(self, steps: int) -> None:
        self.top = _ErrorSums.empty(steps)
        self.best = _ErrorSums.empty(steps)
        self.samples = 0
        self.top_is_best = 0

    def add(self, candidates: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> None:
        steps = len(truth)
        distances = np.abs(candidates[:, :steps] - truth[None]).mean(axis=(1, 2))
        top, best = int(np.argmin(scores)), int(np.argmin(distances))
        self.top.add(candidates[top], truth)
        self.best.add(candidates[best], truth)
        self.samples += 1
        self.top_is_best += top == best

    def summary(self, candidates: int) -> dict[str, Any]:
        return {"top_scored": self.top.summary(), "best_of_n": self.best.summary(),
                "top_picks_best": self.top_is_best / max(self.samples, 1), "candidates": candidates}


def evaluate_offline(config: OfflineEvalConfig, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the pass; returns (and writes, with `output`) the results document."""
    dtype = getattr(torch, config.dtype) if config.dtype else None
    policy = Policy.from_pretrained(config.policy, dtype=dtype, device=config.device)
    mapping_file = config.policy / MAP_FILE
    slots = ObservationMap.load(mapping_file).camera_slots if mapping_file.is_file() else CAMERA_SLOTS
    image_size = config.image_size or (ObservationMap.load(mapping_file).image_size if mapping_file.is_file()
                                       else (224, 224))
    head = _choice_head(config.policy, policy)
    flows: dict[str, _ErrorSums] = {}
    choices: dict[str, _ChoiceStats] = {}
    samples = 0
    for index, (observation, truth) in enumerate(_held_out(config, slots, image_size, policy.chunk_len)):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + index)
        with torch.inference_mode():
            chunk = policy.infer(observation, generator=generator)
        flows.setdefault(observation.embodiment, _ErrorSums.empty(policy.chunk_len)).add(chunk, truth)
        if head is not None:
            candidates, scores = _candidates(policy, head, observation)
            stats = choices.setdefault(observation.embodiment, _ChoiceStats(candidates.shape[1]))
            stats.add(candidates, scores, truth[: candidates.shape[1]])
        samples += 1
        if progress is not None:
            progress(samples)
    results = _document(config, image_size, flows, choices, head)
    if config.output is not None:
        config.output.mkdir(parents=True, exist_ok=True)
        (config.output / OFFLINE_RESULTS).write_text(json.dumps(results, indent=1))
    return results


def _document(config, image_size, flows, choices, head) -> dict[str, Any]:
    embodiments = {}
    for name, sums in sorted(flows.items()):
        entry = {"samples": int(sums.counts[0]), "flow_matching": sums.summary()}
        if name in choices:
            entry["choice_policies"] = choices[name].summary(head.config.num_candidates)
        embodiments[name] = entry
    if not embodiments:
        raise ValueError(f"{config.corpus}: no robot sample in split {config.split!r}; offline evaluation needs the "
                         "held-out split the ingest wrote (--validation-fraction)")
    return {"settings": {"policy": str(config.policy), "corpus": config.corpus, "split": config.split,
                         "seed": config.seed, "max_samples": config.max_samples, "image_size": list(image_size),
                         "units": "robot (unnormalized)"},
            "embodiments": embodiments}


def _held_out(config: OfflineEvalConfig, slots: tuple[str, ...], image_size: tuple[int, int],
              chunk_len: int) -> Iterator[tuple[Observation, np.ndarray]]:
    """(observation, recorded chunk [valid steps <= T, D_a]) of each robot sample of the split, in stream order."""
    stream = CorpusStream(config.corpus, split=config.split, one_pass=True, seed=config.seed)
    count = 0
    for sample in stream:
        if sample.get(StreamField.KIND.value) != ComponentKind.ROBOT.value:
            continue
        meta = json.loads(sample[SampleKey.META.value])
        frames = [decode_frame(sample[SampleKey.camera(camera)], image_size) for camera in slots
                  if SampleKey.camera(camera) in sample]
        state = np.load(io.BytesIO(sample[SampleKey.STATE.value]), allow_pickle=False).astype(np.float32)
        actions = np.load(io.BytesIO(sample[SampleKey.ACTION.value]), allow_pickle=False).astype(np.float32)
        valid = min(int(meta.get(MetaField.VALID_LEN.value, len(actions))), chunk_len, len(actions))
        yield Observation(images=frames, instruction=meta.get(MetaField.INSTRUCTION.value, ""), state=state,
                          embodiment=meta[MetaField.EMBODIMENT.value]), actions[:valid]
        count += 1
        if config.max_samples is not None and count >= config.max_samples:
            return


def _choice_head(directory: pathlib.Path, policy: Policy) -> ChoicePoliciesHead | None:
    """Step 1's Choice Policies head when the policy directory has one (`Trainer.export` after step 1)."""
    if not (directory / CHOICE_CONFIG).is_file():
        return None
    from safetensors.torch import load_file

    head = ChoicePoliciesHead(ChoicePoliciesConfig(**json.loads((directory / CHOICE_CONFIG).read_text())),
                              policy.model.vlm.geometry.hidden_size)
    head.load_state_dict(load_file(directory / CHOICE_WEIGHTS), strict=True)
    parameter = next(policy.model.parameters())
    return head.to(device=parameter.device, dtype=parameter.dtype).eval()


def _candidates(policy: Policy, head: ChoicePoliciesHead,
                observation: Observation) -> tuple[np.ndarray, np.ndarray]:
    """The N candidate chunks [N, T, D_a] in robot units and their scores [N] (lower: predicted closer)."""
    embodiment = observation.embodiment
    state, _ = Normalize.pad(policy.normalize.normalize_state(embodiment, observation.state), head.config.state_dim)
    parameter = next(head.parameters())
    with torch.inference_mode():
        candidates, scores = head(policy.model.vlm, policy.vlm_inputs(observation),
                                  torch.from_numpy(state)[None].to(device=parameter.device, dtype=parameter.dtype))
    action_dim = policy.normalize.action_dim(embodiment)
    native = candidates[0, :, :, :action_dim].float().cpu().numpy()
    return policy.normalize.unnormalize_actions(embodiment, native), scores[0].float().cpu().numpy()
