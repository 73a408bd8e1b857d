"""A run's claim on its output directory: the lock (`output_lock.py`) plus the options that shape its bytes.

A dataset directory is the product of its job's options: the source and its options (the input, frame size, JPEG
quality, ...), the stages and theirs (filters, chunk length, the labelling models), the sink's (shard size), and the
code version. `job_options` flattens them into dotted keys (`source.frames.quality`,
`stages.RobotSampleBuilder.chunk_len`, `sink.shards.max_samples`), recorded as `options.json` when a run first
claims the output. A later run whose options differ would mix two datasets in one directory, so `claim_output`
refuses it with each difference and the two ways on: a new output, or `--overwrite`, which removes what the
earlier runs wrote (everything but the lock) before this run writes a thing.

Not recorded: fields declared with `repr=False` (secrets such as API tokens never reach the disk), and
`RUNTIME_FIELDS`, options that change how fast a run goes, not what it writes.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

from vlaforge.pipelines.atomic_files import atomic_write_bytes
from vlaforge.pipelines.output_lock import LOCK_DIR, OutputLock
from vlaforge.pipelines.shards.manifest import COMMITS_DIR, MANIFEST_NAME, code_version

OPTIONS_NAME = "options.json"
OPTIONS_FORMAT = "vlaforge.job-options/1"
RUNTIME_FIELDS = frozenset({"device", "batch_size", "max_boxes_per_pass", "concurrency", "requests_per_second",
                            "poll_interval_s", "retry", "api_token_block"})
"""Config fields that change how fast a run goes, not the bytes it writes: a rerun may change them."""
_UNSET = object()


class OptionsChangedError(ValueError):
    """A rerun's options differ from those its output was written with; the message lists each difference."""


def job_options(source: Any, stages: tuple[Any, ...], sink: Any) -> dict[str, Any]:
    """The options that shape a job's output, as {dotted key: JSON value}, plus the code version."""
    options: dict[str, Any] = {"code_version": code_version()}
    options.update(_component("source", source))
    options["stages"] = [_kind(stage) for stage in stages]
    seen: dict[str, int] = {}
    for stage in stages:
        name = _kind(stage)
        seen[name] = seen.get(name, 0) + 1
        options.update(_component(f"stages.{name}" + (f"#{seen[name]}" if seen[name] > 1 else ""), stage))
    options.update(_component("sink", sink))
    return json.loads(json.dumps(options, sort_keys=True))  # tuples as lists, as they read back


def _kind(config: Any) -> str:
    owner = getattr(config, "_owner", None)
    return owner.__qualname__ if owner is not None else type(config).__qualname__


def _component(prefix: str, config: Any) -> dict[str, Any]:
    out: dict[str, Any] = {prefix: _kind(config)}
    _flatten(prefix, config, out)
    return out


def _flatten(prefix: str, config: Any, out: dict[str, Any]) -> None:
    for field in dataclasses.fields(config):
        if not field.repr or field.name.startswith("_") or field.name in RUNTIME_FIELDS:
            continue
        value = getattr(config, field.name)
        key = f"{prefix}.{field.name}"
        if field.name == "root" and isinstance(value, str) and "://" not in value:
            out[key] = os.path.realpath(value)  # one input, however the path to it is spelt
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            _flatten(key, value, out)
        else:
            out[key] = _plain(value)


def _plain(value: Any) -> Any:
    """A config value as JSON (nested configs in lists or maps become dicts of their recorded fields)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        nested: dict[str, Any] = {}
        _flatten("", value, nested)
        return {"kind": _kind(value), **{key.lstrip("."): item for key, item in nested.items()}}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return repr(value)


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per option whose value differs: `key: recorded -> this run` ("unset" where one side lacks it)."""
    lines = []
    for key in sorted({*recorded, *current}):
        before, after = recorded.get(key, _UNSET), current.get(key, _UNSET)
        if before != after:
            lines.append(f"{key}: {_shown(before)} (recorded) -> {_shown(after)} (this run)")
    return lines


def _shown(value: Any) -> str:
    return "unset" if value is _UNSET else json.dumps(value, sort_keys=True)


def read_options(output: pathlib.Path) -> dict[str, Any] | None:
    """The options an output was written with, or None when it has no record."""
    path = pathlib.Path(output) / OPTIONS_NAME
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    if document.get("format") != OPTIONS_FORMAT:
        raise OptionsChangedError(f"{path} is not a {OPTIONS_FORMAT} record; pass --overwrite to start the output "
                                  "over, or write to a new --output")
    return document["options"]


def write_options(output: pathlib.Path, options: Mapping[str, Any]) -> None:
    document = {"format": OPTIONS_FORMAT, "options": dict(options)}
    atomic_write_bytes(pathlib.Path(output) / OPTIONS_NAME, json.dumps(document, indent=1, sort_keys=True).encode())


def claim_output(output: pathlib.Path, options: Mapping[str, Any], *, overwrite: bool = False,
                 command: str = "") -> OutputLock:
    """Lock `output` for this run and make it hold `options`: refuse a live holder (`OutputBusyError`) or other
    recorded options (`OptionsChangedError`), unless `overwrite`, which clears what earlier runs wrote. The caller
    releases the returned lock when the run ends."""
    output = pathlib.Path(output)
    lock = OutputLock(output)
    lock.acquire(command)
    try:
        _settle_options(output, json.loads(json.dumps(dict(options), sort_keys=True)), overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def _settle_options(output: pathlib.Path, options: dict[str, Any], overwrite: bool) -> None:
    if overwrite:
        clear_output(output)
    else:
        recorded = read_options(output)
        if recorded is None and _has_dataset(output):
            raise OptionsChangedError(
                f"{output} holds a dataset written without an options record (by an earlier vlaforge), so this run "
                "cannot tell whether its options match. Fix: write to a new --output, or pass --overwrite to "
                "replace what is there")
        if recorded is not None:
            changed = differences(recorded, options)
            if changed:
                listing = "\n  ".join(changed)
                raise OptionsChangedError(
                    f"{output} was written with other options; continuing would mix two datasets in one "
                    f"directory:\n  {listing}\nFix: write to a new --output, or pass --overwrite to replace what is "
                    "there")
            return
    write_options(output, options)


def _has_dataset(output: pathlib.Path) -> bool:
    return any((output / name).exists() for name in (MANIFEST_NAME, COMMITS_DIR, OPTIONS_NAME))


def clear_output(output: pathlib.Path) -> None:
    """Remove everything earlier runs wrote into `output` (everything but the lock), so this run starts over; a
    directory that holds no dataset but other files is refused, never emptied."""
    entries = sorted(entry for entry in output.iterdir() if entry.name != LOCK_DIR)
    if entries and not _has_dataset(output):
        shown = ", ".join(entry.name for entry in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OptionsChangedError(f"{output} holds files vlaforge did not write ({shown}); --overwrite removes only "
                                  "a dataset. Fix: choose an empty or new --output")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
