"""`vlaforge inspect` for ROS 2 MCAP logs: every topic with its message type, count, rate and gaps, and the topic
mapping the ingest would need.

Each log is streamed record by record (`mcap_messages.located_records`: CRCs checked, no index needed), keeping only
each message's log time; nothing is decoded. Rates and gaps are by log time (the ingest itself prefers header
stamps). The topics the `teleop-mcap` source reads by default (`datasets/bimanual.py`) are compared with the ones
the logs have: an absent default becomes a `--set` option mapping it onto the log's topics of the same type.
"""

from __future__ import annotations

import collections
import pathlib
import struct
from typing import Any

import zstandard
from mcap.exceptions import McapError
from mcap.records import Channel, Message, Schema

from vlaforge.datasets.raw_report import InspectionTable, RawReport, rate_and_gaps
from vlaforge.datasets.mcap_messages import located_records
from vlaforge.datasets.stream_remap import remapped
from vlaforge.datasets.teleop_mcap import COMPRESSED_IMAGE, JOINT_STATE, TeleopMcapSource

GAP_S = TeleopMcapSource.Config.__dataclass_fields__["gap_threshold_s"].default


def inspect_mcap(root: pathlib.Path, *, max_files: int = 20) -> RawReport:
    files = sorted(root.rglob("*.mcap"))
    report = RawReport(format="teleop-mcap", root=root)
    topics: dict[str, str] = {}
    counts: collections.Counter[str] = collections.Counter()
    rates: dict[str, list[float]] = collections.defaultdict(list)
    worst: dict[str, float] = collections.defaultdict(float)
    gaps: collections.Counter[str] = collections.Counter()
    present: collections.Counter[str] = collections.Counter()
    for path in files[:max_files]:
        try:
            stamps = _log_times(path, topics)
        except (McapError, EOFError, struct.error, zstandard.ZstdError, ValueError, OSError) as error:
            report.problems.append(f"{path.relative_to(root)}: unreadable ({type(error).__name__}: {error}); the "
                                   "ingest quarantines it")
            continue
        for topic, times in stamps.items():
            rate, longest, over = rate_and_gaps(sorted(times), GAP_S)
            counts[topic] += len(times)
            rates[topic].append(rate)
            worst[topic] = max(worst[topic], longest)
            gaps[topic] += over
            present[topic] += 1
    read = min(len(files), max_files)
    first = f", the first {read} read" if read < len(files) else ""
    report.summary.append(f"{len(files)} MCAP logs (one episode each){first}")
    table = InspectionTable(f"topics (rates and gaps by log time; a gap is over {GAP_S:g} s)",
                            ["topic", "type", "logs", "messages", "rate Hz (median)", "longest gap s", "gaps"])
    for topic in sorted(topics):
        median = sorted(rates[topic])[len(rates[topic]) // 2] if rates[topic] else 0.0
        table.rows.append([topic, topics[topic], f"{present[topic]}/{read}", f"{counts[topic]:,}", f"{median:.1f}",
                           f"{worst[topic]:.3f}", str(gaps[topic])])
    report.tables.append(table)
    _settings(report, topics, present, read)
    return report


def _log_times(path: pathlib.Path, topics: dict[str, str]) -> dict[str, list[int]]:
    """Each topic's message log times in one file; `topics` gains every channel's topic and message type."""
    schemas: dict[int, str] = {}
    channels: dict[int, str] = {}
    stamps: dict[str, list[int]] = collections.defaultdict(list)
    with open(path, "rb") as handle:
        for record, _ in located_records(handle):
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = record.topic
                topics[record.topic] = schemas.get(record.schema_id, record.message_encoding)
            elif isinstance(record, Message) and record.channel_id in channels:
                stamps[channels[record.channel_id]].append(int(record.log_time))
    return stamps


def _settings(report: RawReport, topics: dict[str, str], present: collections.Counter[str], read: int) -> None:
    """Options for default topics the logs lack (or lack in some files), mapped onto topics of the same type."""
    defaults = TeleopMcapSource.Config(root=str(report.root))
    of_type = {kind: sorted(t for t, name in topics.items() if name == kind)
               for kind in (COMPRESSED_IMAGE, JOINT_STATE)}
    fields: list[tuple[str, Any, str]] = [("cameras", defaults.cameras, COMPRESSED_IMAGE),
                                          ("state_topics", defaults.state_topics, JOINT_STATE),
                                          ("action_topics", defaults.action_topics, JOINT_STATE)]
    for field, configured, kind in fields:
        names = list(configured)
        missing = [name for name in names if present[name] < read]
        if not missing:
            continue
        for name in missing:
            report.problems.append(f"{name} ({kind}, read by default as {field}) is in {present[name]} of {read} "
                                   "logs: the others would be quarantined (missing_stream)")
        others = [t for t in of_type[kind] if t not in _taken(report.settings, field, defaults)]
        chosen = remapped(names, others)
        if isinstance(configured, dict):
            report.settings[field] = {new: configured[old] for old, new in zip(names, chosen) if new is not None}
        else:
            report.settings[field] = [new for new in chosen if new is not None]
    report.summary.append("read with the defaults of datasets/bimanual.py" if not report.settings else
                          f"read with {', '.join(report.settings)} mapped onto the topics these logs have")


def _taken(settings: dict[str, Any], field: str, defaults: TeleopMcapSource.Config) -> set[str]:
    """JointState topics already given to the other of state_topics / action_topics."""
    if field == "cameras":
        return set()
    other = "action_topics" if field == "state_topics" else "state_topics"
    return set(settings.get(other, getattr(defaults, other)))
