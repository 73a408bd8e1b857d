"""The auditor's consensus report: one self-contained HTML page built from the audit tables.

It shows how many candidates were accepted, rejected and sent to review, and why; agreement per phrase and per
detector pair; each detector's record; IoU histograms; and a gallery of flagged images (every detector's box, the
fused box and mask drawn on the image), filterable by phrase, decision and dataset. Images, styles and script are
inline, so the file can be mailed, archived or served as it is (`serve_report`).
"""

from __future__ import annotations

import dataclasses
import functools
import html
import http.server
import pathlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from vlaforge.annotators import audit_stats as stats
from vlaforge.annotators.audit_table import AuditTable, read_audit
from vlaforge.annotators.report_figures import detector_colors, draw_candidate, histogram_svg
from vlaforge.pipelines.atomic_files import atomic_write_bytes

PAGE_NAME = "index.html"
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd}
.counts{display:flex;gap:16px;flex-wrap:wrap}
.tile{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:120px}
.tile .count{font-size:28px;font-weight:600;display:block}
.accepted{color:#1a7f37} .rejected{color:#c62828} .needs_review{color:#b26a00}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
.filters{position:sticky;top:0;background:#fafafa;padding:8px 0;z-index:1}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:336px;font-size:12px}
.card img{display:block;width:320px} .swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
.histograms{display:flex;gap:24px;flex-wrap:wrap}
"""
SCRIPT = """
function applyFilters() {
  const want = {phrase: document.getElementById('filter-phrase').value,
                decision: document.getElementById('filter-decision').value,
                dataset: document.getElementById('filter-dataset').value};
  let shown = 0;
  for (const card of document.querySelectorAll('.card')) {
    const ok = Object.entries(want).every(([key, value]) => value === '' || card.dataset[key] === value);
    card.hidden = !ok;
    if (ok) shown += 1;
  }
  document.getElementById('shown-count').textContent = shown;
}
for (const id of ['filter-phrase', 'filter-decision', 'filter-dataset']) {
  document.getElementById(id).addEventListener('change', applyFilters);
}
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """How much the report shows."""

    max_cards: int = 400
    """Gallery cards at most (flagged candidates first); the page says how many were left out."""
    image_width: int = 320
    """Width in pixels of each gallery picture."""
    title: str = "Grounding consensus report"
    """The page's heading."""


@dataclasses.dataclass(frozen=True)
class ReportSummary:
    path: str
    directory: str
    candidates: int
    accepted: int
    rejected: int
    needs_review: int
    images: int
    cards: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_audit(directories: Sequence[pathlib.Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Candidate rows and frame rows of every directory's audit tables, concatenated."""
    if not directories:
        raise ValueError("report: no audit directories given; pass the output of `vlaforge annotate`")
    missing = [str(d) for d in directories if not (pathlib.Path(d) / f"{AuditTable.FRAMES.value}.parquet").exists()]
    if missing:
        raise ValueError(f"report: no {AuditTable.FRAMES.value}.parquet in {missing}; run `vlaforge annotate` there "
                         "first (or point at its per-dataset directories)")
    candidates = pa.concat_tables([read_audit(d, AuditTable.CANDIDATES) for d in directories])
    frames = pa.concat_tables([read_audit(d, AuditTable.FRAMES) for d in directories])
    return candidates.to_pylist(), frames.to_pylist()


def build_report(directories: Sequence[pathlib.Path], output: pathlib.Path,
                 options: ReportOptions = ReportOptions()) -> ReportSummary:
    """Write `<output>/index.html` from the audit tables under `directories`; returns what it counted."""
    rows, frames = load_audit(directories)
    counts = stats.decision_counts(rows)
    cards, total_flagged = _cards(rows, frames, options)
    body = "".join([
        f"<h1>{html.escape(options.title)}</h1>",
        f"<p>Audit tables: {html.escape(', '.join(str(d) for d in directories))}. Consensus settings: "
        f"{html.escape(', '.join(sorted({r['config_hash'] for r in rows})) or 'none')}.</p>",
        _counts_section(counts, len(rows), len(frames)),
        _reasons_section(rows), _phrase_section(rows), _pair_section(rows), _detector_section(rows, frames),
        _histogram_section(rows), _gallery_section(rows, cards, total_flagged),
    ])
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(options.title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>")
    output = pathlib.Path(output)
    atomic_write_bytes(output / PAGE_NAME, page.encode())
    return ReportSummary(path=str(output / PAGE_NAME), directory=str(output), candidates=len(rows),
                         images=len(frames), cards=len(cards), **counts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _counts_section(counts: dict[str, int], candidates: int, images: int) -> str:
    tiles = [("candidates", candidates, ""), ("images", images, ""),
             *((d.replace("_", " "), n, d) for d, n in counts.items())]
    html_tiles = "".join(
        f"<div class='tile {css}'>{html.escape(label)}<span class='count' id='count-{label.replace(' ', '_')}'>"
        f"{n}</span></div>" for label, n, css in tiles)
    rate = counts["accepted"] / candidates if candidates else 0.0
    return (f"<h2>Decisions</h2><div class='counts'>{html_tiles}</div>"
            f"<p>Overall agreement (accepted / candidates): <b id='agreement-overall'>{rate:.1%}</b></p>")


def _reasons_section(rows: list[dict[str, Any]]) -> str:
    return "<h2>Why</h2>" + _table(("decision", "reason", "candidates"), stats.reason_counts(rows), "reasons")


def _phrase_section(rows: list[dict[str, Any]]) -> str:
    table = [(s.phrase, s.candidates, s.accepted, s.rejected, s.needs_review, f"{s.agreement:.1%}")
             for s in stats.phrase_stats(rows)]
    headers = ("phrase", "candidates", "accepted", "rejected", "needs review", "agreement")
    return "<h2>Agreement per phrase</h2>" + _table(headers, table, "phrases")


def _pair_section(rows: list[dict[str, Any]]) -> str:
    table = [(f"{p.a} + {p.b}", p.either, p.agreed, f"{p.agreement:.1%}",
              f"{sum(p.box_ious) / len(p.box_ious):.2f}" if p.box_ious else "-") for p in stats.pair_stats(rows)]
    headers = ("detector pair", "either voted", "both agreed", "agreement", "mean box IoU")
    return "<h2>Agreement per detector pair</h2>" + _table(headers, table, "pairs")


def _detector_section(rows: list[dict[str, Any]], frames: list[dict[str, Any]]) -> str:
    table = [(d.detector, d.images_ok, d.images_failed,
              "; ".join(f"{e} ({n})" for e, n in d.errors.most_common(3)) or "-",
              d.votes, d.votes_accepted, d.lone_votes, d.negative_hits) for d in stats.detector_stats(rows, frames)]
    headers = ("detector", "images ok", "images failed", "failures", "votes", "in accepted", "alone",
               "negative hits")
    return "<h2>Detectors</h2>" + _table(headers, table, "detectors")


def _histogram_section(rows: list[dict[str, Any]]) -> str:
    boxes, masks = stats.iou_values(rows)
    return ("<h2>IoU between detectors</h2><div class='histograms'>"
            f"{histogram_svg(boxes, title='box IoU')}{histogram_svg(masks, title='mask IoU')}</div>")


def _cards(rows: list[dict[str, Any]], frames: list[dict[str, Any]],
           options: ReportOptions) -> tuple[list[str], int]:
    """Gallery cards (flagged candidates first, then accepted ones whose image was kept) and the flagged count."""
    images = {(f["dataset"], f["image_key"]): f["image_jpeg"] for f in frames if f["image_jpeg"]}
    shown = [r for r in rows if (r["dataset"], r["image_key"]) in images]
    shown.sort(key=lambda r: (r["decision"] == "accepted", r["dataset"], r["image_key"], r["phrase"]))
    colors = detector_colors([d["detector"] for r in rows for d in r["detections"]])
    cards = [_card(r, images[(r["dataset"], r["image_key"])], colors, options) for r in shown[: options.max_cards]]
    return cards, sum(r["decision"] != "accepted" for r in rows)


def _card(row: dict[str, Any], jpeg: bytes, colors: dict[str, str], options: ReportOptions) -> str:
    picture = draw_candidate(jpeg, row, colors, options.image_width)
    lines = "".join(
        f"<div><span class='swatch' style='background:{colors[d['detector']]}'></span>{html.escape(d['detector'])}: "
        + (html.escape(f"failed ({d['error']})") if d["status"] != "ok" else
           f"{[round(v) for v in d['box']]} {_score(d['score'])}" if d["voted"] else "no box")
        + "</div>" for d in row["detections"])
    return (f"<div class='card' data-phrase='{html.escape(row['phrase'], quote=True)}' "
            f"data-decision='{row['decision']}' data-dataset='{html.escape(row['dataset'], quote=True)}'>"
            f"<img src='{picture}' alt='{html.escape(row['image_key'])}'>"
            f"<div><b>{html.escape(row['phrase'])}</b> - <span class='{row['decision']}'>"
            f"{row['decision'].replace('_', ' ')}</span> ({html.escape(row['reason'])})</div>"
            f"<div>{html.escape(row['dataset'])} / {html.escape(row['image_key'])}</div>{lines}"
            f"<div>{html.escape(row['detail'])}</div></div>")


def _score(score: float | None) -> str:
    return "no score" if score is None else f"score {score:.2f}"


def _options(select_id: str, label: str, values: Sequence[str]) -> str:
    choices = "".join(f"<option value='{html.escape(v, quote=True)}'>{html.escape(v)}</option>" for v in values)
    return f"<label>{label} <select id='{select_id}'><option value=''>all</option>{choices}</select></label> "


def _gallery_section(rows: list[dict[str, Any]], cards: list[str], flagged: int) -> str:
    filters = (_options("filter-phrase", "phrase", sorted({r["phrase"] for r in rows}))
               + _options("filter-decision", "decision", list(stats.DECISIONS))
               + _options("filter-dataset", "dataset", sorted({r["dataset"] for r in rows})))
    return (f"<h2>Gallery</h2><p>{flagged} flagged candidates (rejected or needing review); "
            f"<span id='card-count'>{len(cards)}</span> cards with their image, "
            f"<span id='shown-count'>{len(cards)}</span> shown. Boxes: one color per detector; white: fused; "
            f"tint: fused SAM mask.</p><div class='filters'>{filters}</div>"
            f"<div class='gallery'>{''.join(cards)}</div>")


def serve_report(directory: pathlib.Path, *, host: str = "127.0.0.1", port: int = 8000) -> http.server.HTTPServer:
    """An HTTP server for the report directory (call `serve_forever()`); port 0 picks a free one."""
    if not (pathlib.Path(directory) / PAGE_NAME).exists():
        raise ValueError(f"{directory} has no {PAGE_NAME}; build it with `vlaforge report build`")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    return http.server.ThreadingHTTPServer((host, port), handler)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Requests are not worth a line each on the console."""
