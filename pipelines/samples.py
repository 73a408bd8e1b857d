"""Turn episodes into robot samples: one timestep each, carrying the chunk of the next actions."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np

from vlaforge.datasets.schema import Episode, MetaField, SampleKey, sample_key
from vlaforge.pipelines.split import Split, split_of
from vlaforge.pipelines.stage import Stage, StageConfig


@dataclasses.dataclass(frozen=True)
class RobotSample:
    """One shard sample: its key, its split, and its members as encoded bytes keyed by extension."""

    key: str
    split: Split
    members: dict[str, bytes]
    episode_id: str


def npy_bytes(array: np.ndarray) -> bytes:
    """The `.npy` encoding of a numeric array (never an object array, so never pickled)."""
    if array.dtype == object:
        raise TypeError("object arrays cannot be stored: they would need pickle")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def json_bytes(value: object) -> bytes:
    """Compact, key-sorted JSON, so the same meta always encodes to the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def action_chunks(action: np.ndarray, chunk_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunks [n, chunk_len, Da] of the next actions from each step, zero-padded past the end, and their
    valid lengths [n]."""
    n, dims = action.shape
    padded = np.concatenate([action, np.zeros((chunk_len - 1, dims), action.dtype)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, chunk_len, axis=0)  # [n, Da, T]
    valid = np.minimum(chunk_len, n - np.arange(n))
    return np.ascontiguousarray(windows.transpose(0, 2, 1)), valid


class RobotSampleBuilder(Stage):
    """Episode -> one `RobotSample` per step: frames, state, the action chunk that starts there, and meta."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        chunk_len: int = 32
        """T_max: actions stored per step; the loader slices this to the recipe's chunk length."""
        validation_fraction: float = 0.05
        """Fraction of episodes (by hash of the episode id) that go to the validation split."""

        def __post_init__(self) -> None:
            if self.chunk_len < 1:
                raise ValueError(f"RobotSampleBuilder.Config.chunk_len must be >= 1, got {self.chunk_len}")
            if not 0.0 <= self.validation_fraction < 1.0:
                raise ValueError(
                    f"RobotSampleBuilder.Config.validation_fraction must be in [0, 1), got {self.validation_fraction}"
                )

    def __call__(self, batch: list[Episode]) -> list[RobotSample]:
        return [sample for episode in batch for sample in self.samples(episode)]

    def samples(self, episode: Episode) -> list[RobotSample]:
        split = split_of(episode.episode_id, self.config.validation_fraction)
        chunks, valid = action_chunks(episode.action.astype(np.float32), self.config.chunk_len)
        state = episode.state.astype(np.float32)
        shared_meta = self._shared_meta(episode, split)
        samples = []
        for i in range(len(episode)):
            step = episode.first_step + i
            members = {SampleKey.camera(cam): frames[i] for cam, frames in episode.frames.items()}
            members[SampleKey.STATE.value] = npy_bytes(state[i])
            members[SampleKey.ACTION.value] = npy_bytes(chunks[i])
            for name, values in episode.extras.items():
                members[SampleKey.extra(name)] = npy_bytes(values[i].astype(np.float32))
            meta = {
                **shared_meta,
                MetaField.STEP.value: step,
                MetaField.TIMESTAMP.value: round(float(episode.timestamps[i]), 6),
                MetaField.VALID_LEN.value: int(valid[i]),
            }
            members[SampleKey.META.value] = json_bytes(meta)
            samples.append(RobotSample(sample_key(episode.episode_id, step), split, members, episode.episode_id))
        return samples

    @staticmethod
    def _shared_meta(episode: Episode, split: Split) -> dict[str, object]:
        flags = dict(episode.flags)
        if episode.success is not None:
            flags["success"] = episode.success
        return {
            MetaField.SOURCE.value: episode.source,
            MetaField.EMBODIMENT.value: episode.embodiment,
            MetaField.EPISODE_ID.value: episode.episode_id,
            MetaField.CONTROL_RATE_HZ.value: episode.control_rate_hz,
            MetaField.INSTRUCTION.value: episode.instruction,
            MetaField.INSTRUCTIONS.value: list(episode.instructions),
            MetaField.STATE_NAMES.value: list(episode.state_names),
            MetaField.ACTION_NAMES.value: list(episode.action_names),
            MetaField.EPISODE_LEN.value: len(episode),
            MetaField.SPLIT.value: split.value,
            MetaField.FLAGS.value: flags,
            MetaField.LINEAGE.value: episode.lineage.as_dict(),
        }
