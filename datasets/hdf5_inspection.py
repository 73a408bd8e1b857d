"""`vlaforge inspect` for ALOHA / ACT HDF5 episodes: every dataset with its shape and dtype, the layout detected
(frames raw or JPEG, fixed rate or per-stream timestamps), and the camera mapping the ingest would need.

Only metadata is read (shapes, dtypes, chunking, attributes), never a frame. The first file is listed dataset by
dataset; up to `max_files` files are summarized (episode length, cameras). Which colour order a recorder wrote its
JPEGs in cannot be read from the file: the report says what the ingest assumes (`channel_order`).
"""

from __future__ import annotations

import collections
import pathlib

import h5py

from vlaforge.datasets.bimanual import DIMENSION_NAMES
from vlaforge.datasets.raw_report import InspectionTable, RawReport
from vlaforge.datasets.stream_remap import remapped
from vlaforge.datasets.teleop_hdf5 import (
    ACTION,
    COMPRESS_LEN,
    FPS_ATTR,
    IMAGES,
    INSTRUCTION_ATTR,
    QPOS,
    SUFFIXES,
    TIMESTAMPS,
    TeleopHdf5Source,
)


def inspect_hdf5(root: pathlib.Path, *, max_files: int = 20) -> RawReport:
    files = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES)
    report = RawReport(format="teleop-hdf5", root=root)
    defaults = TeleopHdf5Source.Config(root=str(root))
    cameras_seen: collections.Counter[str] = collections.Counter()
    lengths, read = [], 0
    for index, path in enumerate(files[:max_files]):
        try:
            with h5py.File(path, "r") as handle:
                if index == 0:
                    report.tables.append(_datasets_table(path.relative_to(root), handle))
                    report.summary += _layout(handle, defaults)
                images = handle.get(IMAGES)
                cameras_seen.update(images.keys() if isinstance(images, h5py.Group) else [])
                if QPOS in handle:
                    lengths.append(handle[QPOS].shape[0])
                for path_in_file in (QPOS, ACTION):
                    _check_vector(report, path.relative_to(root), handle, path_in_file)
        except OSError as error:
            report.problems.append(f"{path.relative_to(root)}: not readable as HDF5 ({error}); the ingest "
                                   "quarantines it")
            continue
        read += 1
    rows = f", {min(lengths)}-{max(lengths)} rows each" if lengths else ""
    report.summary.insert(0, f"{len(files)} HDF5 episode files{rows}" +
                          (f" (the first {read} read)" if read < len(files) else ""))
    _camera_settings(report, defaults, cameras_seen, read)
    return report


def _datasets_table(name: pathlib.Path, handle: h5py.File) -> InspectionTable:
    table = InspectionTable(f"{name}: datasets", ["dataset", "shape", "dtype", "chunks", "filters"])

    def visit(path: str, node: object) -> None:
        if isinstance(node, h5py.Dataset):
            filters = node.compression or ("-" if node.id.get_create_plist().get_nfilters() == 0 else "yes")
            table.rows.append([f"/{path}", str(node.shape), str(node.dtype), str(node.chunks), str(filters)])

    handle.visititems(visit)
    attributes = ", ".join(f"{key}={_shown(value)}" for key, value in sorted(handle.attrs.items()))
    table.rows.append(["(root attributes)", attributes or "-", "", "", ""])
    return table


def _shown(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _layout(handle: h5py.File, defaults: TeleopHdf5Source.Config) -> list[str]:
    """How the ingest will read this file: frames, timing, instruction."""
    lines = []
    images = handle.get(IMAGES)
    cameras = {name: images[name] for name in sorted(images.keys())} if isinstance(images, h5py.Group) else {}
    raw = [name for name, node in cameras.items() if node.ndim == 4]
    jpeg = [name for name, node in cameras.items() if node.ndim == 2]
    if raw:
        lines.append(f"raw frames (RGB, encoded as JPEG at --jpeg-quality): {', '.join(raw)}")
    if jpeg:
        lengths = (f"lengths from /{COMPRESS_LEN}" if COMPRESS_LEN in handle else
                   f"no /{COMPRESS_LEN}: each ends at its end marker")
        lines.append(f"JPEG frames ({lengths}): {', '.join(jpeg)}; taken as BGR pixels, as ALOHA's recorder "
                     "(cv2.imencode) writes them, and swapped to RGB (channel_order); pass --set channel_order=rgb "
                     "if this recorder wrote standard JPEGs")
    if TIMESTAMPS in handle:
        lines.append(f"timing: per-stream timestamps under /{TIMESTAMPS}")
    else:
        rate = handle.attrs.get(FPS_ATTR)
        lines.append(f"timing: one row per tick at {rate} Hz (root attribute {FPS_ATTR})" if rate is not None else
                     f"timing: one row per tick at {defaults.recording_rate_hz:g} Hz (ALOHA's; no {FPS_ATTR} "
                     "attribute)")
    lines.append("instruction: root attribute " + (INSTRUCTION_ATTR if INSTRUCTION_ATTR in handle.attrs else
                                                   f"{INSTRUCTION_ATTR} absent: episodes have no instruction"))
    return lines


def _check_vector(report: RawReport, name: pathlib.Path, handle: h5py.File, path: str) -> None:
    node = handle.get(path)
    if not isinstance(node, h5py.Dataset):
        report.problems.append(f"{name}: no dataset /{path}; the ingest quarantines it (missing_stream)")
    elif node.ndim != 2 or node.shape[1] != len(DIMENSION_NAMES):
        report.problems.append(f"{name}: /{path} is {node.shape}, not (T, {len(DIMENSION_NAMES)}) (per arm 6 "
                               "joints and a gripper); the ingest quarantines it")


def _camera_settings(report: RawReport, defaults: TeleopHdf5Source.Config, seen: collections.Counter[str],
                     read: int) -> None:
    names = list(defaults.cameras)
    missing = [name for name in names if seen[name] < read]
    for name in missing:
        report.problems.append(f"camera {name} (read by default) is in {seen[name]} of {read} files: the others "
                               "would be quarantined (missing_stream)")
    if missing:
        chosen = remapped(names, sorted(seen))
        report.settings["cameras"] = {new: defaults.cameras[old] for old, new in zip(names, chosen) if new}
    unread = sorted(set(seen) - set(report.settings.get("cameras", defaults.cameras)))
    if unread:
        report.summary.append(f"not read (not mapped to a camera): {', '.join(unread)}")
