"""Turn episodes into robot samples: one timestep each, carrying the chunk of the next actions."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
from collections.abc import Callable, Iterator

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
    episode: Episode | None = dataclasses.field(default=None, repr=False, compare=False)
    """The episode the step came from (None when the sample was built elsewhere): the robot dataset sink records
    each episode's state and action once, for the statistics (`step_values.py`)."""


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


def _json_scalar(value: object) -> bytes:
    """`json_bytes(value)`, without the encoder's overhead for the ints and finite floats of every step."""
    if type(value) is int:
        return b"%d" % value
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value).encode()  # what the json module writes for a float
    return json_bytes(value)


class _MetaEncoder:
    """`json_bytes` of each step's meta of one episode, with the fields every step shares encoded only once.

    The shared fields (name lists, instructions, lineage) are most of the bytes and most of the encoding time; the
    per-step fields are filled into a `%`-template of the rest, in the order sort_keys writes them.
    """

    def __init__(self, shared: dict[str, object], step_fields: tuple[str, ...]) -> None:
        if list(step_fields) != sorted(step_fields):
            raise ValueError(f"step fields must be given in sorted order, got {step_fields}")
        keys = sorted({*shared, *step_fields})
        parts = [json_bytes(key) + b":%s" if key in step_fields else json_bytes({key: shared[key]})[1:-1].replace(
            b"%", b"%%") for key in keys]
        self._template = b"{" + b",".join(parts) + b"}"

    def encode(self, *step_values: object) -> bytes:
        """The meta of one step, given the values of `step_fields` in that order."""
        return self._template % tuple(map(_json_scalar, step_values))


class _NpyRows:
    """`npy_bytes` of each row of a per-step array, encoded a block of steps at a time with a few numpy calls.

    `rows(start, stop)` gives the steps' values [stop - start, ...]; only one block's encodings are held.
    """

    BLOCK_STEPS = 256

    def __init__(self, rows: Callable[[int, int], np.ndarray], n: int) -> None:
        self._rows, self._n = rows, n
        self._block, self._encoded, self._width = -1, b"", 0

    def __getitem__(self, step: int) -> bytes:
        block, index = divmod(step, self.BLOCK_STEPS)
        if block != self._block:
            self._encode(block)
        return self._encoded[index * self._width : (index + 1) * self._width]

    def _encode(self, block: int) -> None:
        start = block * self.BLOCK_STEPS
        values = np.ascontiguousarray(self._rows(start, min(start + self.BLOCK_STEPS, self._n)))
        header = np.frombuffer(_npy_header(values.dtype, values.shape[1:], "C"), np.uint8)
        data = values.view(np.uint8).reshape(len(values), -1)
        encoded = np.empty((len(values), len(header) + data.shape[1]), np.uint8)
        encoded[:, : len(header)] = header
        encoded[:, len(header) :] = data
        self._block, self._encoded, self._width = block, encoded.tobytes(), encoded.shape[1]


def action_chunks(action: np.ndarray, chunk_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunks [n, chunk_len, Da] of the next actions from each step, zero-padded past the end, and their
    valid lengths [n]."""
    n, dims = action.shape
    padded = np.concatenate([action, np.zeros((chunk_len - 1, dims), action.dtype)])
    valid = np.minimum(chunk_len, n - np.arange(n))
    return _windows(padded, chunk_len), valid


def _windows(padded: np.ndarray, chunk_len: int) -> np.ndarray:
    """[k, chunk_len, Da] windows of `padded` [k + chunk_len - 1, Da], one starting at each of its first k rows."""
    windows = np.lib.stride_tricks.sliding_window_view(padded, chunk_len, axis=0)  # [k, Da, T]
    return np.ascontiguousarray(windows.transpose(0, 2, 1))


_STEP_FIELDS = (MetaField.STEP.value, MetaField.TIMESTAMP.value, MetaField.VALID_LEN.value)
"""Meta fields that differ from step to step (in sorted order); the rest are the same for the whole episode."""
_STATE, _ACTION, _META = SampleKey.STATE.value, SampleKey.ACTION.value, SampleKey.META.value


class RobotSampleBuilder(Stage):
    """Episode -> one `RobotSample` per step: frames, state, the action chunk that starts there, and meta.

    `iter_samples` (and `stream`, what a job calls) yields them one step at a time, reading each frame only when its
    step is built, so an ingest holds one step's members, never an episode's; `__call__` (the `Stage` contract)
    collects them into a list.
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
        return list(self.stream(batch))

    def stream(self, batch: list[Episode]) -> Iterator[RobotSample]:
        for episode in batch:
            yield from self.iter_samples(episode)

    def samples(self, episode: Episode) -> list[RobotSample]:
        return list(self.iter_samples(episode))

    def split_of(self, episode: Episode) -> Split:
        """The split every sample of `episode` goes to."""
        return split_of(episode.split_key, self.config.validation_fraction)

    def iter_samples(self, episode: Episode) -> Iterator[RobotSample]:
        """The episode's samples in step order, each built (and its frames read) when it is asked for."""
        split = self.split_of(episode)
        chunk_len, n, episode_id = self.config.chunk_len, len(episode), episode.episode_id
        action = episode.action.astype(np.float32)
        padded = np.concatenate([action, np.zeros((chunk_len - 1, action.shape[1]), np.float32)])  # [n + T - 1, Da]
        state = episode.state.astype(np.float32)
        arrays = [(_STATE, _NpyRows(lambda a, b: state[a:b], n)),
                  (_ACTION, _NpyRows(lambda a, b: _windows(padded[a : b + chunk_len - 1], chunk_len), n))]
        for name, values in episode.extras.items():
            extra = values.astype(np.float32)
            arrays.append((SampleKey.extra(name), _NpyRows(lambda a, b, extra=extra: extra[a:b], n)))
        cameras = [(SampleKey.camera(camera), frames) for camera, frames in episode.frames.items()]
        meta = _MetaEncoder(self._shared_meta(episode, split), _STEP_FIELDS)
        timestamps = episode.timestamps.tolist()
        for i in range(n):
            step = episode.first_step + i
            members = {member: frames[i] for member, frames in cameras}
            for member, rows in arrays:
                members[member] = rows[i]
            members[_META] = meta.encode(step, round(timestamps[i], 6), min(chunk_len, n - i))
            yield RobotSample(sample_key(episode_id, step), split, members, episode_id, episode)

    @staticmethod
    def _shared_meta(episode: Episode, split: Split) -> dict[str, object]:
        flags = dict(episode.flags)
        if episode.success is not None:
            flags["success"] = episode.success
        calibration = {MetaField.CALIBRATION.value: episode.calibration} if episode.calibration else {}
        return {
            **calibration,
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
