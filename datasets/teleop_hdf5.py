"""In-house teleop recordings in the ALOHA / ACT HDF5 layout, resampled onto the 30 Hz timeline.

One `*.hdf5` (or `*.h5`) file under the root is one episode (recursively, in sorted path order). The layout is
ALOHA's (see `datasets/synth/teleop_hdf5.py` for every dataset): `/observations/qpos` is the state [T, 14],
`/action` the action [T, 14], `/observations/qvel` (when present) is kept as the `qvel` extra, and
`/observations/images/<camera>` holds each camera's frames, raw (T, H, W, 3) uint8 or JPEG bytes zero-padded to
(T, L) with the true lengths in `/compress_len` (cameras, T). The rows of `/compress_len` follow the recorder's
camera list, which the file does not store: `compress_len_cameras` names it, and by default it is ALOHA's order
(cam_high, cam_low, cam_left_wrist, cam_right_wrist, those present) followed by any others alphabetically. Without
`/compress_len` a frame ends at its JPEG end marker (the padding is zeros).

**Colour.** ALOHA's and ACT's recorders compress each frame with OpenCV, `cv2.imencode(".jpg", image)`, on the RGB
array the camera driver gives them; OpenCV takes an array as BGR, so the JPEG holds BGR-ordered pixels. Any standard
decoder (PIL, libjpeg, simplejpeg, a browser) shows such a frame with red and blue swapped; their own readers decode
with `cv2.imdecode`, which swaps them back. `channel_order` says, per camera, how the JPEGs were written: "bgr" (the
default, the recorders' convention) frames are decoded, their channels swapped and re-encoded at `frames.quality`,
so shards hold true colours, as they do for the same scene from MCAP; "rgb" frames (a recorder that converted first)
pass through untouched. Raw (uncompressed) image datasets hold the driver's RGB arrays and are not affected.

Timing comes in one of two forms, per file:
- **Fixed rate** (ALOHA itself): every stream has the same length T and stream row k is at k / rate seconds; the
  rate is the root attribute `fps` when the file has one, else `recording_rate_hz` (ALOHA's 50 Hz).
- **Per-stream timestamps** (our addition): `/timestamps/<stream path>`, e.g. `/timestamps/observations/qpos`,
  `/timestamps/action`, `/timestamps/observations/images/cam_high`, one value per row of the stream, int64
  nanoseconds or float seconds. qvel shares qpos's timestamps. Either every stream has one, or none does.

The root attribute `instruction` (our addition) holds the task text; `sim` is kept as a flag. Camera calibration,
where a recorder stores it (our addition), is two attributes of the camera's dataset `/observations/images/<camera>`:
`intrinsics` (the 3x3 matrix K, OpenCV's convention, for the stored image size) and `camera_to_base` (4x4, the
camera's optical frame in the robot base frame), with `distortion` (coefficients) optional; every episode of the
file carries them (`Episode.calibration`). The small joint
arrays are read whole. Image rows the grid chose are read twice, in blocks of rows: once to check them before any
sample is written, and again when their samples are built; the file stays open while its episodes are processed,
so an episode holds its arrays, never its frames, and memory stays flat however long it is. Arrays that disagree in
length,
a missing camera or array, an unreadable file and a frame that is not a JPEG are quarantined with a message that
names the file, the dataset and the fix; the timeline's checks (order, gaps) follow `teleop.py`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import h5py
import numpy as np
import simplejpeg

from vlaforge.datasets.bimanual import DIMENSION_NAMES, hdf5_cameras
from vlaforge.datasets.calibration import camera_entry
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.frames import FrameConfig, encode_jpeg, jpeg_shape
from vlaforge.datasets.schema import safe_key_part
from vlaforge.datasets.source import SourceError, WorkUnit
from vlaforge.datasets.stream_remap import remap_fix
from vlaforge.datasets.teleop import (
    FrameError,
    FrameReadError,
    FrameStream,
    Recording,
    TeleopConfig,
    TeleopSource,
    VectorStream,
    check_cameras,
)
from vlaforge.datasets.teleop_frames import check_jpeg, stored_jpeg
from vlaforge.datasets.timeline import NS_PER_S, MissingStreamError, seconds_to_ns

QPOS = "observations/qpos"
QVEL = "observations/qvel"
ACTION = "action"
IMAGES = "observations/images"
COMPRESS_LEN = "compress_len"
TIMESTAMPS = "timestamps"
INSTRUCTION_ATTR = "instruction"
FPS_ATTR = "fps"
ALOHA_CAMERA_ORDER = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
SUFFIXES = (".hdf5", ".h5")
_BLOCK_ROWS = 16
"""Image rows read per h5py call: large enough to amortize the call, small enough to bound memory."""
_BLOCK_BYTES = 4 * 2**20
"""At most this many bytes of image rows per block (raw frames are large), but at least one row."""
CHANNEL_ORDERS = ("bgr", "rgb")
"""How a compressed camera's JPEGs order their pixels' channels (see the module docstring)."""


class _FileProblem(Exception):
    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TeleopHdf5Source(TeleopSource):
    """Bimanual teleop episodes from ALOHA-style HDF5 files, one file per episode."""

    name = "teleop-hdf5"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(TeleopConfig):
        cameras: Mapping[str, str] = dataclasses.field(default_factory=hdf5_cameras, hash=False)
        """ALOHA camera name (`/observations/images/<name>`) -> canonical camera name."""
        recording_rate_hz: float = 50.0
        """The rate of files without timestamps and without an `fps` attribute (ALOHA records at 50 Hz)."""
        compress_len_cameras: tuple[str, ...] | None = None
        """The camera names in the order of `/compress_len`'s rows; None: ALOHA's order (see the module doc)."""
        keep_velocity: bool = True
        """Keep `/observations/qvel`, when a file has it, as the `qvel` extra [n, 14]."""
        channel_order: str | Mapping[str, str] = dataclasses.field(default="bgr", hash=False)
        """How the JPEG-compressed cameras' frames order their channels: "bgr" (ALOHA's and ACT's recorders, which
        compress with `cv2.imencode`: decoded, swapped and re-encoded into true colours) or "rgb" (passed through);
        one value for every camera, or {ALOHA camera name: order}. Raw frames are RGB and not affected."""

        def __post_init__(self) -> None:
            if self.compress_len_cameras is not None:
                object.__setattr__(self, "compress_len_cameras", tuple(self.compress_len_cameras))
            object.__setattr__(self, "cameras", check_cameras(type(self).__qualname__, self.cameras))
            _check_channel_order(self.channel_order, self.cameras)
            super().__post_init__()
            rate = self.recording_rate_hz
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < float("inf"):
                raise ValueError(f"TeleopHdf5Source.Config.recording_rate_hz must be a positive number, got {rate!r}")

    config: Config

    @property
    def dataset_name(self) -> str:
        return self.config.dataset_name or safe_key_part(self.root.resolve().name)

    def plan(self) -> list[WorkUnit]:
        """Units of `files_per_unit` HDF5 files in sorted path order."""
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a directory; point --input at a directory of .hdf5 files")
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.suffix in SUFFIXES)
        if not files:
            raise SourceError(f"{self.root} holds no .hdf5 or .h5 files; point --input at the episodes' directory")
        step = self.config.files_per_unit
        return [WorkUnit(i, tuple(files[start : start + step])) for i, start in enumerate(range(0, len(files), step))]

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator:
        """Each file's episodes, in file order. Their frames are read from the file, held open, while they are built
        into samples; it is closed once the consumer asks for the next file's episodes (a frame read after that
        opens and closes the file for that read)."""
        for file in unit.files:
            opened = _OpenFile(self.root / file)
            try:
                yield from self._file_episodes(file, opened, ledger)
            finally:
                opened.release()


    def _file_episodes(self, file: str, opened: "_OpenFile", ledger: DropLedger) -> list:
        """The file's episodes, their frames read from `opened` on access."""
        episode_id = f"{self.dataset_name}-{safe_key_part(pathlib.PurePosixPath(file).with_suffix('').as_posix())}"
        try:
            return self.assembler.episodes(_Reader(self.config, file, opened).recording(episode_id), ledger)
        except _FileProblem as problem:
            ledger.quarantine(file=file, episode=episode_id, reason=problem.reason, message=str(problem))
        except MissingStreamError as error:
            self.assembler.reject(error, file, episode_id, ledger)
        except OSError as error:  # not HDF5, truncated, or unreadable: h5py raises OSError
            ledger.quarantine(file=file, episode=episode_id, reason=DropReason.UNREADABLE_FILE,
                              message=f"{file}: cannot be read as HDF5 ({error}). Fix: re-copy the file")
        return []


class _OpenFile:
    """One HDF5 file, opened on first use and held open until `release()`; after that, each read of image rows
    opens and closes it, so an episode kept longer never holds a file handle."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._handle: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._released = False

    def handle(self) -> h5py.File:
        if self._handle is None:
            self._handle = h5py.File(self.path, "r")  # OSError when it is not HDF5, truncated or unreadable
        return self._handle

    def rows(self, path: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the dataset at `path`."""
        if self._released:
            with h5py.File(self.path, "r") as handle:
                return handle[path][start:stop]
        return self._dataset(path)[start:stop]

    def chunk(self, path: str, offset: tuple[int, ...]) -> bytes | None:
        """The stored bytes of the chunk at `offset` of the dataset at `path`, as is (a third of the cost of
        h5py's selection machinery); None once released (then `rows` opens the file for each read)."""
        return None if self._released else self._dataset(path).id.read_direct_chunk(offset)[1]

    def _dataset(self, path: str) -> h5py.Dataset:
        dataset = self._datasets.get(path)
        if dataset is None:  # looking a dataset up costs more than reading a few rows of it
            dataset = self._datasets[path] = self.handle()[path]
        return dataset

    def release(self) -> None:
        self._released = True
        self._datasets.clear()
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _Rows:
    """The rows of one uint8 image dataset that the grid chose, read forward in blocks (runs of consecutive chosen
    rows, as one h5py read each), or row by row as stored chunks where each row is one unfiltered chunk (ALOHA's
    layout); the last block is kept."""

    def __init__(self, opened: _OpenFile, path: str, dataset: h5py.Dataset) -> None:
        self.opened, self.path, shape = opened, path, dataset.shape
        self.row_shape = shape[1:]
        self.block_rows = int(np.clip(_BLOCK_BYTES // max(int(np.prod(self.row_shape)), 1), 1, _BLOCK_ROWS))
        self.direct = (dataset.chunks == (1, *self.row_shape) and dataset.id.get_create_plist().get_nfilters() == 0
                       and dataset.id.get_num_chunks() == shape[0])  # every row written: no chunk left unallocated
        self.chosen = np.zeros(0, np.int64)
        """Sorted rows that will be read (set by the check): a block never reads a row outside them."""
        self._start, self._block = 0, np.empty((0, *self.row_shape), np.uint8)
        self._origin = (0,) * len(self.row_shape)

    def row(self, index: int) -> np.ndarray:
        """Row `index` [L] or [H, W, 3]; reading a block from it when it is not in the kept one."""
        if self.direct and (chunk := self.opened.chunk(self.path, (index, *self._origin))) is not None:
            return np.frombuffer(chunk, np.uint8).reshape(self.row_shape)
        if not self._start <= index < self._start + len(self._block):
            self._start, self._block = index, self.opened.rows(self.path, index, index + self._run(index))
        return self._block[index - self._start]

    def _run(self, index: int) -> int:
        """How many consecutive chosen rows start at `index` (at most `block_rows`; 1 for a row not chosen)."""
        at = int(np.searchsorted(self.chosen, index))
        ahead = self.chosen[at : at + self.block_rows] - index
        return max(int(np.count_nonzero(ahead == np.arange(len(ahead)))), 1)


class _Reader:
    """Reads one file into a `Recording`."""

    def __init__(self, config: TeleopHdf5Source.Config, file: str, opened: _OpenFile) -> None:
        self.config, self.file, self.opened, self.handle = config, file, opened, opened.handle()

    def recording(self, episode_id: str) -> Recording:
        streams = [QPOS, ACTION, *(f"{IMAGES}/{camera}" for camera in self.config.cameras)]
        for path in streams:
            if path not in self.handle:
                raise MissingStreamError(f"{self.file}: has no dataset /{path}", origin=self.file, stream=f"/{path}",
                                         fix=self._camera_fix() if path.startswith(IMAGES) else None)
        lengths = {path: self._dataset(path).shape[0] for path in streams}
        stamps = self._stamps(lengths)
        state = self._vectors(QPOS, "state", stamps[QPOS])
        extras = []
        if self.config.keep_velocity and QVEL in self.handle:
            extras.append(self._vectors(QVEL, "extra.qvel", stamps[QPOS], name=f"/{QPOS}"))
        attrs = self.handle.attrs
        return Recording(
            file=self.file,
            episode_id=episode_id,
            source_version=f"aloha-hdf5 (compress={bool(attrs.get('compress', False))})",
            cameras={canonical: self._frames(camera, stamps[f"{IMAGES}/{camera}"])
                     for camera, canonical in self.config.cameras.items()},
            state=[state],
            action=[self._vectors(ACTION, "action", stamps[ACTION])],
            extras=extras,
            instructions=[text] if (text := _text(attrs.get(INSTRUCTION_ATTR))) else [],
            flags={"sim": True} if bool(attrs.get("sim", False)) else {},
            calibration=self._calibration(),
        )

    def _camera_fix(self) -> str:
        """The file's cameras, and the `--set cameras=...` line that maps them."""
        group = self.handle.get(IMAGES)
        present = sorted(name for name, node in group.items() if isinstance(node, h5py.Dataset)) if group else []
        return remap_fix("cameras", self.config.cameras, present, f"/{IMAGES}")

    def _calibration(self) -> dict[str, dict]:
        """Camera -> calibration entry from the camera datasets' `intrinsics` and `camera_to_base` attributes."""
        entries = {}
        for camera, canonical in self.config.cameras.items():
            attrs = self._dataset(f"{IMAGES}/{camera}").attrs
            if "intrinsics" not in attrs or "camera_to_base" not in attrs:
                continue
            try:
                height, width = self._image_size(camera)
                entries[canonical] = camera_entry(
                    width=width, height=height, k=np.asarray(attrs["intrinsics"], np.float64).reshape(9),
                    camera_to_base=np.asarray(attrs["camera_to_base"], np.float64).reshape(4, 4),
                    source=f"hdf5:{self.file}:/{IMAGES}/{camera}", distortion=list(attrs.get("distortion", [])))
            except ValueError as error:
                raise _FileProblem(DropReason.BAD_RECORD, f"{self.file}: /{IMAGES}/{camera} has calibration "
                                   f"attributes of the wrong shape ({error}); intrinsics is 3x3 and camera_to_base "
                                   "4x4") from None
        return entries

    def _image_size(self, camera: str) -> tuple[int, int]:
        """(height, width) of a camera's frames: from the shape of raw frames, or the first JPEG's header."""
        dataset = self._dataset(f"{IMAGES}/{camera}")
        if dataset.ndim == 4:
            return int(dataset.shape[1]), int(dataset.shape[2])
        return jpeg_shape(dataset[0].tobytes().rstrip(b"\x00"))

    def _dataset(self, path: str) -> h5py.Dataset:
        node = self.handle[path]
        if not isinstance(node, h5py.Dataset):
            raise _FileProblem(DropReason.BAD_RECORD, f"{self.file}: /{path} is a group, not a dataset")
        return node

    def _stamps(self, lengths: dict[str, int]) -> dict[str, np.ndarray]:
        """Each stream's [T] int64 ns timestamps: its own `/timestamps/...` dataset, or row k at k / rate."""
        timed = [path for path in lengths if f"{TIMESTAMPS}/{path}" in self.handle]
        if timed and len(timed) != len(lengths):
            untimed = [f"/{path}" for path in lengths if path not in timed]
            raise _FileProblem(DropReason.BAD_RECORD, f"{self.file}: has /{TIMESTAMPS}/... for some streams but not "
                               f"for {untimed}. Fix: write a timestamp dataset for every stream, or none")
        if not timed:
            if len(set(lengths.values())) > 1:
                raise _FileProblem(DropReason.INCONSISTENT_LENGTHS, f"{self.file}: arrays disagree in length "
                                   f"({_listing(lengths)}) but the file has no per-stream timestamps, so each row "
                                   f"must be one time step. Fix: re-export the episode")
            rate = _number(self.handle.attrs.get(FPS_ATTR, self.config.recording_rate_hz))
            if not 0 < rate < float("inf"):
                raise _FileProblem(DropReason.BAD_RECORD, f"{self.file}: the root attribute {FPS_ATTR!r} is {rate}; "
                                   f"fix it, or delete it to use recording_rate_hz")
            ticks = np.rint(np.arange(next(iter(lengths.values()))) * (NS_PER_S / rate)).astype(np.int64)
            return {path: ticks for path in lengths}
        return {path: self._timestamp_values(path, length) for path, length in lengths.items()}

    def _timestamp_values(self, path: str, length: int) -> np.ndarray:
        values = self._dataset(f"{TIMESTAMPS}/{path}")[()]
        if values.ndim != 1 or len(values) != length:
            raise _FileProblem(DropReason.INCONSISTENT_LENGTHS, f"{self.file}: /{TIMESTAMPS}/{path} has shape "
                               f"{values.shape} for {length} rows of /{path}. Fix: one timestamp per row")
        if np.issubdtype(values.dtype, np.integer):
            return values.astype(np.int64)
        return seconds_to_ns(values)

    def _vectors(self, path: str, role: str, stamps: np.ndarray, name: str | None = None) -> VectorStream:
        dataset = self._dataset(path)
        width = len(DIMENSION_NAMES)
        if dataset.ndim != 2 or dataset.shape[1] != width:
            raise _FileProblem(DropReason.BAD_RECORD, f"{self.file}: /{path} has shape {dataset.shape}, expected "
                               f"(T, {width}): per arm 6 joints and a gripper, left arm first")
        if dataset.shape[0] != len(stamps):
            raise _FileProblem(DropReason.INCONSISTENT_LENGTHS, f"{self.file}: /{path} has {dataset.shape[0]} rows "
                               f"but its timestamps (those of /{QPOS}) number {len(stamps)}. Fix: re-export the "
                               f"episode")
        return VectorStream(name or f"/{path}", role, stamps, dataset[()].astype(np.float64))

    def _frames(self, camera: str, stamps: np.ndarray) -> FrameStream:
        dataset = self._dataset(f"{IMAGES}/{camera}")
        if dataset.dtype != np.uint8 or dataset.ndim not in (2, 4) or (dataset.ndim == 4 and dataset.shape[3] != 3):
            raise _FileProblem(DropReason.BAD_RECORD, f"{self.file}: /{IMAGES}/{camera} is {dataset.dtype} "
                               f"{dataset.shape}; expected uint8 (T, H, W, 3) frames or (T, L) JPEG bytes")
        raw = dataset.ndim == 4
        lengths = None if raw else self._jpeg_lengths(camera, dataset.shape[0])
        frames, name = self.config.frames, f"/{IMAGES}/{camera}"
        swapped = not raw and channel_order_of(self.config, camera) == "bgr"
        checked = dataclasses.replace(frames, verify="full") if swapped else frames  # decoded anyway: check it all
        rows = _Rows(self.opened, f"{IMAGES}/{camera}", dataset)

        def jpeg(index: int) -> bytes:
            row = rows.row(index)
            return (row[: lengths[index]] if lengths is not None else row).tobytes().rstrip(b"\x00")

        def check(indices: np.ndarray) -> None:
            rows.chosen = indices
            for index in indices.tolist():
                if raw:
                    rows.row(index)  # reading it is the check: raw rows of a known good shape always encode
                    continue
                try:
                    check_jpeg(jpeg(index), checked)
                except ValueError as error:  # BadImageError
                    raise FrameError(index, error) from error

        def read(index: int) -> bytes:
            try:
                if raw:
                    return encode_jpeg(rows.row(index), frames)
                return rgb_jpeg(jpeg(index), frames) if swapped else stored_jpeg(jpeg(index), frames)
            except (OSError, KeyError, ValueError) as error:
                raise FrameReadError(self.file, name, index, error) from error

        return FrameStream(name, stamps, check, read)

    def _jpeg_lengths(self, camera: str, rows: int) -> np.ndarray | None:
        """The true JPEG length of each row of a compressed camera, from `/compress_len`, or None without it."""
        if COMPRESS_LEN not in self.handle:
            return None
        table = self._dataset(COMPRESS_LEN)
        order = self._compress_len_order()
        if table.ndim != 2 or table.shape[0] != len(order) or camera not in order or table.shape[1] < rows:
            raise _FileProblem(DropReason.INCONSISTENT_LENGTHS, f"{self.file}: /{COMPRESS_LEN} has shape "
                               f"{table.shape}, which does not fit {len(order)} cameras {list(order)} of up to "
                               f"{rows} frames. Fix: set compress_len_cameras to the recorder's camera order")
        return np.rint(table[order.index(camera), :rows]).astype(np.int64)

    def _compress_len_order(self) -> tuple[str, ...]:
        present = sorted(self.handle[IMAGES].keys())
        if self.config.compress_len_cameras is not None:
            return self.config.compress_len_cameras
        known = [camera for camera in ALOHA_CAMERA_ORDER if camera in present]
        return (*known, *(camera for camera in present if camera not in known))


def channel_order_of(config: TeleopHdf5Source.Config, camera: str) -> str:
    """The channel order of an ALOHA camera's JPEGs ("bgr" or "rgb")."""
    order = config.channel_order
    return order if isinstance(order, str) else order.get(camera, "bgr")


def rgb_jpeg(bgr_jpeg: bytes, frames: FrameConfig) -> bytes:
    """A JPEG whose pixels were written in BGR order (`cv2.imencode` on an RGB array), as a standard RGB JPEG:
    decoding its YCbCr as BGR gives the original RGB array back, which is encoded (resized when asked)."""
    return encode_jpeg(simplejpeg.decode_jpeg(bgr_jpeg, colorspace="BGR"), frames)


def _check_channel_order(order: object, cameras: Mapping[str, str]) -> None:
    name = "TeleopHdf5Source.Config.channel_order"
    values = [order] if isinstance(order, str) else list(order.values()) if isinstance(order, Mapping) else [order]
    bad = [value for value in values if value not in CHANNEL_ORDERS]
    if bad:
        raise ValueError(f"{name} must be one of {list(CHANNEL_ORDERS)} or {{camera: order}}, got {order!r}")
    unknown = sorted(set(order) - set(cameras)) if isinstance(order, Mapping) else []
    if unknown:
        raise ValueError(f"{name} names cameras {unknown} that are not in cameras ({sorted(cameras)})")


def _listing(lengths: dict[str, int]) -> str:
    return ", ".join(f"/{path}: {length}" for path, length in lengths.items())


def _number(value: Any) -> float:
    """An attribute as a float; NaN when it is not a number (the caller names the attribute)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip() if value is not None else ""
