"""The one pattern every plug-in follows: a component nests a frozen `Config`, and `Config.build()` makes it.

    class MinLengthFilter(Stage):            # Stage is a Configurable
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Config(StageConfig):           # StageConfig derives from Configurable.Config
            min_steps: int = 10              # each field gets a docstring; __post_init__ validates

    stage = MinLengthFilter.Config(min_steps=5).build()   # a MinLengthFilter

So the config type itself is the plug-in handle: a list of configs describes a pipeline, pickles to Ray workers and
builds there. The owner is bound when the component class is defined (`__init_subclass__`); nothing registers
itself anywhere: the registries that name plug-ins (`datasets/registry.py`, `annotators/generators.py`,
`annotators/detectors.py`, `annotators/vlm_backends.py`) are dict literals, looked up with `lookup`.

`config_from_dict` builds a config from what the CLI and Prefect pass around (JSON: dicts, lists, strings,
numbers): lists become tuples, nested configs are built from dicts, and a misspelt field is answered with the
closest name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

ConfigT = TypeVar("ConfigT")
EntryT = TypeVar("EntryT")


class Configurable:
    """A component built from its nested `Config`. Subclasses nest a frozen, keyword-only dataclass named
    `Config` deriving from the `Config` they inherit; `__init__` takes that config as its one argument."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        """Base of every component's nested `Config`; `build()` makes the component that nests it."""

        _owner: ClassVar[type[Configurable] | None] = None

        def build(self) -> Any:
            """The component this config belongs to, constructed from it (cheap: no model loads here)."""
            if self._owner is None:
                raise TypeError(f"{type(self).__qualname__} belongs to no component: nest it as `Config` in a "
                                "Configurable subclass before calling build()")
            return self._owner(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("Config")
        if config is not None:
            _check_nested_config(cls, config)
            config._owner = cls


def _check_nested_config(owner: type, config: Any) -> None:
    """Refuse a nested `Config` that would not behave like one: it must be a frozen, keyword-only dataclass of its
    own (a plain subclass would share its parent's fields silently), derive from the `Config` it replaces, and
    belong to one component only (`build()` could make only one of two owners)."""
    name = f"{owner.__qualname__}.Config"
    inherited = next(base.__dict__["Config"] for base in owner.__mro__[1:] if "Config" in base.__dict__)
    if not (isinstance(config, type) and issubclass(config, inherited)):
        raise TypeError(f"{name} must derive from {inherited.__qualname__}, got {config!r}")
    params = config.__dict__.get("__dataclass_params__")
    if params is None or not params.frozen:
        raise TypeError(f"{name} must be declared @dataclasses.dataclass(frozen=True, kw_only=True)")
    positional = [f.name for f in dataclasses.fields(config) if f.init and not f.kw_only]
    if positional:
        raise TypeError(f"{name} fields must be keyword-only, got positional {positional}: use kw_only=True")
    bound = config.__dict__.get("_owner")
    if bound is not None and bound is not owner:
        raise TypeError(f"{name} is already {bound.__qualname__}.Config; nest a subclass of it instead")


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """The hint `; did you mean 'x'?` naming the closest of `known`, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1) if isinstance(name, str) else []
    return f"; did you mean {close[0]!r}?" if close else ""


def lookup(registry: Mapping[str, EntryT], name: str, *, what: str) -> EntryT:
    """`registry[name]`, or a ValueError naming the closest entry and every entry (`what` says what the names
    are, e.g. "source", "generator")."""
    if isinstance(name, str) and name in registry:
        return registry[name]
    raise ValueError(f"unknown {what} {name!r}{did_you_mean(name, registry) or '.'} "
                     f"Known {what}s: {', '.join(registry)}")


def settable_fields(config_class: type) -> dict[str, dataclasses.Field]:
    """The fields a config's caller may set: `init=False` and `_private` fields are the config's own business."""
    return {f.name: f for f in dataclasses.fields(config_class) if f.init and not f.name.startswith("_")}


def config_from_dict(config_class: type[ConfigT], data: Mapping[str, Any], *, where: str,
                     given: Mapping[str, Any] | None = None) -> ConfigT:
    """`config_class` built from JSON-ish `data` (field name -> value).

    Lists become tuples (configs are frozen and hashable; JSON has no tuples), recursively. A dict for a field whose
    type is a dataclass builds that dataclass, starting from the field's default when it has one. An unknown field is
    answered with the closest name and the list of fields, prefixed with `where` (e.g. "recipe detectors[hosted]").
    `given` are values the caller sets itself, passed as they are; `data` may not name them.
    """
    given = dict(given or {})
    return config_class(**given, **_field_values(config_class, data, where=where, exclude=given))


def _field_values(config_class: type, data: Mapping[str, Any], *, where: str,
                  exclude: Mapping[str, Any]) -> dict[str, Any]:
    fields = {name: field for name, field in settable_fields(config_class).items() if name not in exclude}
    values = {}
    for key, value in data.items():
        if key in exclude:
            raise ValueError(f"{where}: {key!r} is set elsewhere, not as an option here. "
                             f"Options: {', '.join(sorted(fields))}")
        if key not in fields:
            raise ValueError(f"{where}: unknown option {key!r}{did_you_mean(key, fields) or '.'} "
                             f"Options: {', '.join(sorted(fields))}")
        values[key] = _from_json(config_class, fields[key], value, where=f"{where}.{key}")
    return values


def _from_json(config_class: type, field: dataclasses.Field, value: Any, *, where: str) -> Any:
    if isinstance(value, list):
        return _tuples(value)
    if isinstance(value, Mapping):
        nested = _dataclass_type(typing.get_type_hints(config_class).get(field.name))
        if nested is not None:
            return _nested_config(nested, _default(field), value, where=where)
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def _nested_config(config_class: type, default: Any, data: Mapping[str, Any], *, where: str) -> Any:
    """A nested config from a dict: the field's default with `data`'s fields changed (so a preset default such as
    `AnswerValidation.Config(max_words=12)` keeps what `data` does not name), else the class's defaults."""
    if isinstance(default, config_class):
        return dataclasses.replace(default, **_field_values(type(default), data, where=where, exclude={}))
    return config_from_dict(config_class, data, where=where)


def _dataclass_type(hint: Any) -> type | None:
    """The dataclass a field holds: its type, or the one dataclass of an `X | None`; None for anything else."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    candidates = [arg for arg in typing.get_args(hint) if isinstance(arg, type) and dataclasses.is_dataclass(arg)]
    return candidates[0] if len(candidates) == 1 else None


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None
