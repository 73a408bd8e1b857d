"""A tiny random-weight exported policy directory (`Policy.save_pretrained`), for tests, benchmarks and the server.

The directory is exactly what `Trainer.export()` writes (`policy.json`, `dit.safetensors`, `norm_stats.json`, a
Qwen3-VL `vlm/` with its processor) plus an `observation_map.json`, so `Policy.from_pretrained` and `vlaforge
serve-policy` load it through the production path. The DiT's zero-initialised adaLN modulation is given random
values, as training would, so its chunks depend on the observation and on a committed prefix. Its actions are noise
around the statistics' mean: use it for plumbing, not for success rates.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

from vlaforge.datasets.bimanual import EMBODIMENT as BIMANUAL


@dataclasses.dataclass(frozen=True, kw_only=True)
class TinyPolicySpec:
    """What the tiny policy is for: one embodiment, its dimensions and the statistics its actions scatter around."""

    embodiment: str = BIMANUAL
    """Normalization key (the ALOHA-style bimanual robot by default: 14-D state and action)."""
    state_mean: Sequence[float] = (0.0,) * 14
    """[D_s] state mean; the state dimension is its length."""
    action_mean: Sequence[float] = (0.0,) * 14
    """[D_a] action mean; the action dimension is its length."""
    std: float = 0.05
    """Standard deviation of every state and action dimension."""
    chunk_len: int = 8
    """T of the tiny DiT."""
    observation_map: Mapping[str, object] | None = None
    """`observation_map.json` to write beside the weights (None: none)."""
    statistics: Mapping[str, object] | None = None
    """A normalization document (`{"embodiments": {...}}`, e.g. a dataset's stats.json) used instead of the fields
    above, so the policy covers a real dataset's embodiments."""


def write_tiny_policy(directory: str | pathlib.Path, spec: TinyPolicySpec = TinyPolicySpec(), *,
                      seed: int = 0) -> pathlib.Path:
    """Save a tiny Λ-mask VLA policy (asynchronous-capable) under `directory`; returns it."""
    import torch

    from vlaforge.training.data.normalization import Normalize
    from vlaforge.training.model import presets
    from vlaforge.training.model.masks import AttentionKind
    from vlaforge.training.model.vla import VLAModel
    from vlaforge.training.policy.observation_map import MAP_FILE, ObservationMap
    from vlaforge.training.policy.policy import Policy

    directory = pathlib.Path(directory)
    torch.manual_seed(seed)
    config = presets.vla_tiny()
    config = dataclasses.replace(config, attention=AttentionKind.LAMBDA,
                                 dit=dataclasses.replace(config.dit, chunk_len=spec.chunk_len))
    model = VLAModel.from_vlm_config(presets.qwen3_vl_tiny(), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.dit.named_parameters():
            if "modulation" in name:  # adaLN-Zero makes a fresh DiT's blocks identities: liven them up
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    statistics = {"state": {"mean": list(spec.state_mean), "std": [spec.std] * len(spec.state_mean)},
                  "action": {"mean": list(spec.action_mean), "std": [spec.std] * len(spec.action_mean)}}
    normalize = Normalize.from_document(spec.statistics or {"embodiments": {spec.embodiment: statistics}})
    Policy(model, presets.tiny_processor(), normalize).save_pretrained(directory)
    if spec.observation_map is not None:
        ObservationMap.from_dict(spec.observation_map).save(directory / MAP_FILE)
    return directory
