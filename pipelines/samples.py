"""Turn episodes into robot samples: one timestep each, carrying the chunk of the next actions."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from collections.abc import Iterable, Iterator

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
    """The `.npy` encoding of a numeric array (never an object array, so never pickled): the same bytes as
    `np.save`, with the header built once per dtype and shape instead of once per step."""
    if array.dtype == object:
        raise TypeError("object arrays cannot be stored: they would need pickle")
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"  # as np.save decides
    return _npy_header(array.dtype, array.shape, order) + array.tobytes(order=order)


@functools.lru_cache(maxsize=256)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...], order: str) -> bytes:
    """What `np.save` writes before the data of an array of this dtype, shape and memory order."""
    template = np.zeros(shape, dtype, order=order)
    buffer = io.BytesIO()
    np.save(buffer, template, allow_pickle=False)
    encoded = buffer.getvalue()
    return encoded[: len(encoded) - template.nbytes]


_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""What `json.dumps` builds from these arguments on every call; built once, it costs half as much per call."""


def json_bytes(value: object) -> bytes:
    """Compact, key-sorted JSON, so the same meta always encodes to the same bytes."""
    return _JSON.encode(value).encode()


class _MetaEncoder:
    """`json_bytes` of each step's meta of one episode, with the fields every step shares encoded only once.

    The shared fields (name lists, instructions, lineage) are most of the bytes and most of the encoding time.
    """

    def __init__(self, shared: dict[str, object], step_fields: Iterable[str]) -> None:
        # In the order sort_keys writes them: a per-step field by name, a shared one as its encoded '"key":value'.
        per_step = set(step_fields)
        keys = sorted({*shared, *per_step})
        self._parts = [key if key in per_step else json_bytes({key: shared[key]})[1:-1] for key in keys]

    def encode(self, step_values: dict[str, object]) -> bytes:
        parts = [p if isinstance(p, bytes) else json_bytes({p: step_values[p]})[1:-1] for p in self._parts]
        return b"{" + b",".join(parts) + b"}"


def action_chunks(action: np.ndarray, chunk_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunks [n, chunk_len, Da] of the next actions from each step, zero-padded past the end, and their
    valid lengths [n]."""
    n, dims = action.shape
    padded = np.concatenate([action, np.zeros((chunk_len - 1, dims), action.dtype)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, chunk_len, axis=0)  # [n, Da, T]
    valid = np.minimum(chunk_len, n - np.arange(n))
    return np.ascontiguousarray(windows.transpose(0, 2, 1)), valid


_STEP_FIELDS = (MetaField.STEP.value, MetaField.TIMESTAMP.value, MetaField.VALID_LEN.value)
"""Meta fields that differ from step to step; the rest are the same for the whole episode."""


class RobotSampleBuilder(Stage):
    """Episode -> one `RobotSample` per step: frames, state, the action chunk that starts there, and meta.

    `iter_samples` yields them one step at a time, reading each frame only when its step is built, so an ingest
    holds one step's members, never an episode's; `__call__` (the `Stage` contract) collects them into a list.
    """

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        chunk_len: int = 32
        """T_max: actions stored per step; the loader slices this to the recipe's chunk length."""
        validation_fraction: float = 0.05
        """Fraction of episodes (by hash of the episode's `split_key`: its recording, for a split teleop log) that
        go to the validation split."""

        def __post_init__(self) -> None:
            if self.chunk_len < 1:
                raise ValueError(f"RobotSampleBuilder.Config.chunk_len must be >= 1, got {self.chunk_len}")
            if not 0.0 <= self.validation_fraction < 1.0:
                raise ValueError(
                    f"RobotSampleBuilder.Config.validation_fraction must be in [0, 1), got {self.validation_fraction}"
                )

    def __call__(self, batch: list[Episode]) -> list[RobotSample]:
        return [sample for episode in batch for sample in self.iter_samples(episode)]

    def samples(self, episode: Episode) -> list[RobotSample]:
        return list(self.iter_samples(episode))

    def iter_samples(self, episode: Episode) -> Iterator[RobotSample]:
        """The episode's samples in step order, each built (and its frames read) when it is asked for."""
        split = split_of(episode.split_key, self.config.validation_fraction)
        chunk_len = self.config.chunk_len
        action = episode.action.astype(np.float32)
        padded = np.concatenate([action, np.zeros((chunk_len - 1, action.shape[1]), np.float32)])  # [n + T - 1, Da]
        state = episode.state.astype(np.float32)
        extras = {SampleKey.extra(name): values.astype(np.float32) for name, values in episode.extras.items()}
        cameras = {SampleKey.camera(camera): frames for camera, frames in episode.frames.items()}
        meta = _MetaEncoder(self._shared_meta(episode, split), _STEP_FIELDS)
        n = len(episode)
        for i in range(n):
            step = episode.first_step + i
            members = {member: frames[i] for member, frames in cameras.items()}
            members[SampleKey.STATE.value] = npy_bytes(state[i])
            members[SampleKey.ACTION.value] = npy_bytes(padded[i : i + chunk_len])  # = action_chunks(...)[0][i]
            for member, values in extras.items():
                members[member] = npy_bytes(values[i])
            members[SampleKey.META.value] = meta.encode({
                MetaField.STEP.value: step,
                MetaField.TIMESTAMP.value: round(float(episode.timestamps[i]), 6),
                MetaField.VALID_LEN.value: min(chunk_len, n - i),
            })
            yield RobotSample(sample_key(episode.episode_id, step), split, members, episode.episode_id)

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
