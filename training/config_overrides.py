"""`apply_overrides`: a `TrainerConfig` with `--set key=value` changes, by dotted field path, re-validated.

    apply_overrides(config, {"lr": 3e-4, "model.prefix.async_probability": 1.0, "chunk_len": 10})

Every field of the config tree is reachable by its path (`loader.robot.image_size`, `model.flow.training_repeat`,
`choice.num_candidates`, ...); values are what JSON gives (lists for tuples, strings for enums, dicts for nested
configs) and are converted as `TrainerConfig.from_dict` converts a saved config, so a changed config is checked by
the same validation as a new one. A misspelt path is answered with the closest field name.

One setting lives in several configs because several components read it: `chunk_len` (the action chunk T) sets
`model.dit.chunk_len`, `choice.chunk_len` and `loader.robot.chunk_len` together (`LINKED`), which must agree.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from vlaforge.datasets.configurable import did_you_mean
from vlaforge.training.trainer_config import TrainerConfig

LINKED = {"chunk_len": ("model.dit.chunk_len", "choice.chunk_len", "loader.robot.chunk_len")}
"""A setting several configs hold, and the paths `--set` changes together."""


def apply_overrides(config: TrainerConfig, overrides: Mapping[str, Any]) -> TrainerConfig:
    """`config` with each dotted path set to its value (see the module docstring)."""
    data = config.to_dict()
    for key, value in overrides.items():
        for path in LINKED.get(key, (key,)):
            _set(data, TrainerConfig, path.split("."), value, key)
    return TrainerConfig.from_dict(data)


def _set(data: dict[str, Any], kind: Any, path: list[str], value: Any, key: str) -> None:
    """Set `path` in the JSON form `data` of a `kind` (a dataclass, or a free mapping where any key goes)."""
    name, rest = path[0], path[1:]
    fields = _fields(kind)
    if fields is not None and name not in fields:
        where = key[: len(key) - len(".".join(path))].rstrip(".") or "TrainerConfig"
        raise ValueError(f"--set {key}: {where} has no field {name!r}{did_you_mean(name, fields) or '.'} "
                         f"Fields: {', '.join(sorted(fields))}")
    if not rest:
        data[name] = copy.deepcopy(value)
        return
    child = data.get(name)
    if not isinstance(child, dict):
        raise ValueError(f"--set {key}: {name!r} holds {child!r}, not a config with fields; set {name} as a whole")
    _set(child, None if fields is None else _field_type(fields[name]), rest, value, key)


def _fields(kind: Any) -> dict[str, Any] | None:
    """Field name -> type hint of a dataclass `kind`; None for anything else (a mapping takes any key)."""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return {f.name: hints[f.name] for f in dataclasses.fields(kind) if f.init}
    return None


def _field_type(hint: Any) -> Any:
    """The dataclass an optional or plain field holds, else the hint itself."""
    arguments = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return arguments[0] if len(arguments) == 1 and dataclasses.is_dataclass(arguments[0]) else hint
