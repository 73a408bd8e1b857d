"""Scheduled flows: a TOML file of deployments (flow, cron or interval, parameters) served on a Prefect server.

    [[deployment]]
    name = "droid-nightly"                 # unique; the Prefect deployment is "<flow>/<name>"
    flow = "ingest"                        # ingest | ingest-vl | relabel | annotate | corpus | train | pipeline
    cron = "0 2 * * *"                     # or: interval_s = 3600; or neither: runs when triggered
    timezone = "UTC"                       # for cron (default UTC)
    tags = ["droid"]
    [deployment.parameters]                # the flow's own parameters, checked against its signature
    source = "droid"
    input_path = "/data/droid/1.0.1"
    output = "/shards/droid"

`vlaforge serve --schedules FILE` registers every deployment with the server `PREFECT_API_URL` names and runs their
scheduled (and manually triggered) flow runs in that process, each exactly as the matching CLI verb would. A
deployment with neither cron nor interval_s has no schedule: it runs when triggered (`prefect deployment run
'pipeline/robot-to-policy'`), which suits training.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import tomllib
from collections.abc import Callable
from typing import Any

FLOWS = {
    "ingest": ("vlaforge.flows.ingest", "ingest"),
    "ingest-vl": ("vlaforge.flows.vl_ingest", "ingest_vl"),
    "relabel": ("vlaforge.flows.relabel", "relabel"),
    "annotate": ("vlaforge.flows.annotate", "annotate"),
    "train": ("vlaforge.flows.train", "train"),
    "pipeline": ("vlaforge.flows.pipeline", "pipeline"),
    "corpus": ("vlaforge.flows.corpus", "corpus"),
}
"""Flow name in a schedule file -> (module, function) of the Prefect flow."""


class ScheduleError(ValueError):
    """A schedule file that cannot be served; the message names the file, the deployment and the fix."""


@dataclasses.dataclass(frozen=True)
class ScheduledFlow:
    """One `[[deployment]]` entry."""

    name: str
    flow: str
    parameters: dict[str, Any]
    cron: str | None = None
    interval_s: float | None = None
    timezone: str = "UTC"
    tags: tuple[str, ...] = ()

    def flow_function(self) -> Callable[..., Any]:
        import importlib

        module, function = FLOWS[self.flow]
        return getattr(importlib.import_module(module), function)

    def to_deployment(self) -> Any:
        """The Prefect `RunnerDeployment` that `prefect.serve` registers and runs."""
        from prefect.client.schemas.schedules import CronSchedule

        schedule: dict[str, Any] = {}
        if self.cron:
            schedule = {"schedule": CronSchedule(cron=self.cron, timezone=self.timezone)}
        elif self.interval_s is not None:
            schedule = {"interval": self.interval_s}
        return self.flow_function().to_deployment(name=self.name, parameters=self.parameters, tags=list(self.tags),
                                                  description=f"vlaforge {self.flow}, scheduled", **schedule)


_KEYS = {"name", "flow", "cron", "interval_s", "timezone", "tags", "parameters"}


def load_schedules(path: pathlib.Path) -> list[ScheduledFlow]:
    """Every deployment of a schedule file, checked: known flow, at most one valid cron or positive interval,
    parameters the flow takes and all it requires, unique names."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ScheduleError(f"{path}: cannot be read as TOML ({error})") from error
    entries = document.get("deployment")
    if not isinstance(entries, list) or not entries:
        raise ScheduleError(f"{path}: no [[deployment]] entries; see flows/schedules.py for the format")
    schedules = [_entry(path, index, entry) for index, entry in enumerate(entries)]
    names = [s.name for s in schedules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScheduleError(f"{path}: deployment names must be unique, {duplicates} appear more than once")
    return schedules


def _entry(path: pathlib.Path, index: int, entry: dict[str, Any]) -> ScheduledFlow:
    where = f"{path}: deployment {entry.get('name', f'#{index + 1}')!r}"
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ScheduleError(f"{where}: unknown keys {unknown}; the keys are {sorted(_KEYS)}")
    if not isinstance(entry.get("name"), str) or not entry["name"]:
        raise ScheduleError(f"{where}: needs a name")
    if entry.get("flow") not in FLOWS:
        raise ScheduleError(f"{where}: flow {entry.get('flow')!r} is not one of {sorted(FLOWS)}")
    if "cron" in entry and "interval_s" in entry:
        raise ScheduleError(f"{where}: give at most one of cron (e.g. \"0 2 * * *\") and interval_s (neither: the "
                            "deployment runs when triggered)")
    scheduled = ScheduledFlow(name=entry["name"], flow=entry["flow"], parameters=dict(entry.get("parameters", {})),
                              cron=entry.get("cron"), interval_s=entry.get("interval_s"),
                              timezone=entry.get("timezone", "UTC"), tags=tuple(entry.get("tags", ())))
    _check_timing(where, scheduled)
    _check_parameters(where, scheduled)
    return scheduled


def _check_timing(where: str, scheduled: ScheduledFlow) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    if scheduled.cron is not None:
        try:
            CronSchedule(cron=scheduled.cron, timezone=scheduled.timezone)
        except ValueError as error:
            raise ScheduleError(f"{where}: cron {scheduled.cron!r} / timezone {scheduled.timezone!r} is not valid "
                                f"({error.errors()[0]['msg'] if hasattr(error, 'errors') else error})") from None
    elif scheduled.interval_s is not None and (not isinstance(scheduled.interval_s, (int, float))
                                               or scheduled.interval_s <= 0):
        raise ScheduleError(f"{where}: interval_s must be a positive number of seconds, got {scheduled.interval_s!r}")


def _check_parameters(where: str, scheduled: ScheduledFlow) -> None:
    signature = inspect.signature(scheduled.flow_function().fn)
    unknown = sorted(set(scheduled.parameters) - set(signature.parameters))
    required = [name for name, p in signature.parameters.items() if p.default is inspect.Parameter.empty]
    missing = [name for name in required if name not in scheduled.parameters]
    if unknown or missing:
        raise ScheduleError(f"{where}: the {scheduled.flow} flow takes {list(signature.parameters)}; unknown "
                            f"{unknown}, missing required {missing}")
