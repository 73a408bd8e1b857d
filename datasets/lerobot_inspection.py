"""`vlaforge inspect` for LeRobot datasets (v3.0 and v2.1): `meta/info.json`'s features, fps and sizes, the episodes
and tasks the metadata lists, and how the ingest maps features to state, action and cameras.

Only the metadata is read (info.json, the episodes and tasks tables), never a data row or a video frame.
"""

from __future__ import annotations

import difflib
import pathlib

from vlaforge.datasets.raw_report import InspectionTable, RawReport
from vlaforge.datasets.lerobot import LeRobotSource, default_cameras
from vlaforge.datasets.lerobot_meta import load_metadata

_VECTOR_DTYPES = ("float32", "float64")


def inspect_lerobot(root: pathlib.Path, *, max_files: int = 20) -> RawReport:
    report = RawReport(format="lerobot", root=root)
    meta = load_metadata(root)  # a SourceError names what is wrong with the metadata
    frames = sum(episode.length for episode in meta.episodes)
    report.summary.append(f"LeRobot {meta.version}, robot_type {meta.robot_type}, {meta.fps:g} fps: "
                          f"{len(meta.episodes):,} episodes, {frames:,} frames, {len(meta.tasks):,} tasks")
    table = InspectionTable("meta/info.json features", ["feature", "dtype", "shape", "names / video"])
    for key, feature in meta.features.items():
        video = feature.get("info") or {}
        detail = (f"{video.get('video.codec', '?')} {video.get('video.width', '?')}x{video.get('video.height', '?')}"
                  if feature.get("dtype") == "video" else _names(feature.get("names")))
        table.rows.append([key, str(feature.get("dtype")), str(feature.get("shape")), detail])
    report.tables.append(table)
    if meta.tasks:
        tasks = InspectionTable("tasks (the first 10)", ["task_index", "task"])
        tasks.rows = [[str(index), text] for index, text in sorted(meta.tasks.items())[:10]]
        report.tables.append(tasks)
    _mapping(report, meta)
    return report


def _names(names: object) -> str:
    text = str(names) if names is not None else "-"
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(report: RawReport, meta) -> None:
    """State, action and cameras as the defaults read them, with options for the features this dataset lacks."""
    defaults = LeRobotSource.Config(root=str(report.root))
    report.name = defaults.build().dataset_name
    vectors = [key for key in meta.keys_of(*_VECTOR_DTYPES) if key not in ("timestamp",)]
    for field in ("state_feature", "action_feature"):
        wanted = getattr(defaults, field)
        if wanted not in meta.features:
            close = difflib.get_close_matches(wanted, vectors, n=1, cutoff=0.0)
            report.problems.append(f"no feature {wanted!r} (the default {field}); vector features: {vectors}")
            if close:
                report.settings[field] = close[0]
    state = report.settings.get("state_feature", defaults.state_feature)
    action = report.settings.get("action_feature", defaults.action_feature)
    cameras = default_cameras(meta.camera_keys())
    report.summary.append(f"read as: state {state}, action {action}, cameras "
                          f"{', '.join(f'{key} -> {name}' for key, name in cameras.items()) or 'none'}")
    if not cameras:
        report.problems.append("no video or image feature: the episodes would have no frames")
