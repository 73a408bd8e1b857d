"""`summary.html`: one page a trainer opens after `vlaforge eval sim`: the settings, success with its interval, the
per-task table, where the time went, and the episode videos (embedded from `videos/`, relative paths, so the
folder can be copied anywhere). Static HTML with inline CSS; nothing loads from the network."""

from __future__ import annotations

import html
import pathlib
from collections.abc import Mapping
from typing import Any

SUMMARY_FILE = "summary.html"

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.bar{display:flex;height:1.4em;width:40em}
.bar div{color:#fff;font-size:.8em;padding-left:.3em;overflow:hidden;white-space:nowrap}
video{width:320px;margin:.3em}figure{display:inline-block;margin:0}figcaption{font-size:.8em}"""
_SHARE_COLOURS = {"env": "#3b7dd8", "policy": "#d8763b", "transport": "#6a9a3b", "other": "#999"}


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _row(name: str, metrics: Mapping[str, Any]) -> str:
    low, high = metrics["success_ci95"]
    rate = metrics["success_rate"]
    cells = [
        html.escape(name), f"{metrics['successes']}/{metrics['episodes']}",
        "-" if rate is None else f"{rate:.1%} [{low:.1%}, {high:.1%}]", _number(metrics["mean_return"]),
        _number(metrics["mean_length"], 1), _number(metrics["latency_ms"]["p50"], 1),
        _number(metrics["latency_ms"]["p95"], 1), _number(metrics["actions_per_inference"], 1),
        _number(metrics["jerk_at_switch"], 1), _number(metrics["jerk_within_chunk"], 1),
        str(metrics["starved_ticks"]),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _time_bar(time_s: Mapping[str, float]) -> str:
    wall = time_s["wall"] or 1.0
    parts = {name: time_s[name] for name in ("env", "policy", "transport")}
    parts["other"] = max(0.0, wall - sum(parts.values()))
    bars = "".join(f'<div style="width:{100 * min(v / wall, 1):.1f}%;background:{_SHARE_COLOURS[k]}">'
                   f"{k} {v / wall:.0%}</div>" for k, v in parts.items() if v > 0)
    return f'<div class="bar">{bars}</div>'


def render_summary(results: Mapping[str, Any]) -> str:
    """The page for one `results.json` document."""
    settings, overall = results["settings"], results["overall"]
    header = ("<tr><th>task</th><th>successes</th><th>success [95% CI]</th><th>mean return</th><th>mean length</th>"
              "<th>latency p50 ms</th><th>latency p95 ms</th><th>actions / inference</th><th>jerk at switch</th>"
              "<th>jerk within chunk</th><th>starved ticks</th></tr>")
    rows = "".join(_row(task, metrics) for task, metrics in results["tasks"].items()) + _row("overall", overall)
    videos = "".join(
        f'<figure><video controls muted src="{html.escape(e["video"])}"></video><figcaption>{html.escape(e["task"])}'
        f' episode {e["episode"]}: {"success" if e["success"] else "failure"}</figcaption></figure>'
        for e in results["episodes"] if e.get("video"))
    setting_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                           for k, v in settings.items())
    steps_per_s = overall["steps_per_s"]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>vlaforge eval sim: {html.escape(settings['env'])}"
        f"</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(settings['env'])}: {_number(overall['success_rate'], 3)} success "
        f"({html.escape(settings['mode'])} execution)</h1>"
        f"<p>policy <code>{html.escape(str(settings['policy']))}</code>, {overall['episodes']} episodes, "
        f"{overall['steps']} steps at {_number(steps_per_s, 2)} steps/s.</p>"
        f"<h2>Results</h2><table>{header}{rows}</table>"
        f"<p>Jerk: mean |d³a/dt³| in action units/s³ over 4-tick windows; 'at switch' spans two chunks.</p>"
        f"<h2>Where the time went</h2>{_time_bar(overall['time_s'])}"
        f"<p>environment {overall['time_s']['env']:.1f} s, policy {overall['time_s']['policy']:.1f} s, transport "
        f"{overall['time_s']['transport']:.1f} s of {overall['time_s']['wall']:.1f} s wall time (in asynchronous "
        "mode the policy runs while the environment steps, so the shares overlap).</p>"
        f"<h2>Videos</h2>{videos or '<p>none recorded</p>'}"
        f"<h2>Settings</h2><table>{setting_rows}</table></body></html>")


def write_summary(directory: pathlib.Path, results: Mapping[str, Any]) -> pathlib.Path:
    path = directory / SUMMARY_FILE
    path.write_text(render_summary(results))
    return path
