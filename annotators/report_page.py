"""The auditor's consensus report: a page of what the audit tables say, and a gallery of what was decided.

`<output>/index.html` holds the numbers inline (decisions and reasons, agreement per phrase and per detector pair,
each detector's record, IoU histograms, and each quality gate's drop rate from the datasets' `summary.json`), so
that part reads anywhere. The gallery (`report_gallery.py`) is a seeded sample per stratum (dataset, phrase,
decision) of accepted, rejected and needs-review candidates, one card per image with all its candidates: every
detector's box in a colour of its own (any number of detectors), per-detector toggles, sorting by IoU or score,
filters, pages, and a full-resolution view with zoom. Its data and images are files beside the page, fetched a page
at a time, so the page stays fast at a million candidates; serve the directory (`vlaforge report serve`, or any
static server) to browse it.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import http.server
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from vlaforge.annotators import audit_stats as stats
from vlaforge.annotators.audit_table import AuditTable, read_audit
from vlaforge.annotators.report_figures import histogram_svg
from vlaforge.annotators.report_gallery import CARD_COLUMNS, GalleryOptions, write_gallery
from vlaforge.pipelines.atomic_files import atomic_write_bytes

PAGE_NAME = "index.html"
ASSETS = pathlib.Path(__file__).with_name("report_assets")
SUMMARY_NAME = "summary.json"
_COLUMNS = list(dict.fromkeys([*CARD_COLUMNS, "pairs", "config_hash", "config"]))
"""What the numbers and the gallery read of the candidates (never the masks: the largest column)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """What the report shows."""

    title: str = "Grounding consensus report"
    """The page's heading."""
    gallery: GalleryOptions = GalleryOptions()
    """How the gallery samples candidates (per stratum, at most, seed, page size)."""


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


def load_audit(directories: Sequence[pathlib.Path]) -> tuple[pa.Table, pa.Table]:
    """The candidates (the columns the numbers need) and frames of every directory's audit tables, concatenated;
    directories without audit tables (a relabel output, for its gates) add nothing."""
    if not directories:
        raise ValueError("report: no directories given; pass the output of `vlaforge annotate` (or `relabel`)")
    unknown = [str(d) for d in directories if not (pathlib.Path(d) / f"{AuditTable.FRAMES.value}.parquet").exists()
               and not (pathlib.Path(d) / SUMMARY_NAME).exists()]
    if unknown:
        raise ValueError(f"report: no {AuditTable.FRAMES.value}.parquet or {SUMMARY_NAME} in {unknown}; run `vlaforge "
                         "annotate` (or `relabel`) there first (or point at its per-dataset directories)")
    candidates = pa.concat_tables([read_audit(d, AuditTable.CANDIDATES, columns=_COLUMNS, dictionary=("config",))
                                   for d in directories])
    frames = pa.concat_tables([read_audit(d, AuditTable.FRAMES, columns=["dataset", "image_key", "detectors"])
                               for d in directories])
    return candidates, frames


def build_report(directories: Sequence[pathlib.Path], output: pathlib.Path,
                 options: ReportOptions = ReportOptions()) -> ReportSummary:
    """Write `<output>/index.html` and the gallery's files from the audit tables under `directories`."""
    output = pathlib.Path(output)
    candidates, frames = load_audit(directories)
    counts = stats.decision_counts(candidates)
    detectors = [d.detector for d in stats.detector_stats(candidates, frames)]
    gallery = write_gallery(directories, candidates, output, detectors, options.gallery)
    hashes = sorted(set(candidates.column("config_hash").to_pylist()))
    body = "".join([
        f"<h1>{html.escape(options.title)}</h1>",
        f"<p>Audit tables: {html.escape(', '.join(str(d) for d in directories))}. Consensus settings: "
        f"{html.escape(', '.join(hashes) or 'none')}.</p>",
        _counts_section(counts, candidates.num_rows, frames.num_rows), _gates_section(directories),
        _reasons_section(candidates), _phrase_section(candidates), _pair_section(candidates),
        _detector_section(candidates, frames), _histogram_section(candidates),
        _gallery_section(candidates, gallery.cards, gallery.eligible, options.gallery),
    ])
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(options.title)}</title>"
            f"<style>{(ASSETS / 'gallery.css').read_text()}</style></head><body>{body}"
            f"<script>{(ASSETS / 'gallery.js').read_text()}</script></body></html>")
    atomic_write_bytes(output / PAGE_NAME, page.encode())
    return ReportSummary(path=str(output / PAGE_NAME), directory=str(output), candidates=candidates.num_rows,
                         images=frames.num_rows, cards=gallery.cards, **counts)


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


def _gates_section(directories: Sequence[pathlib.Path]) -> str:
    """Each VL dataset's quality gates (answer validation, the judge): texts checked, dropped and the drop rate."""
    rows = []
    for directory in directories:
        path = pathlib.Path(directory) / SUMMARY_NAME
        summary = json.loads(path.read_text()) if path.exists() else {}
        for gate, g in summary.get("gates", {}).items():
            rows.append((summary.get("dataset", str(directory)), gate, g["checked"], g["dropped"],
                         f"{g['drop_rate']:.1%}"))
    if not rows:
        return ""
    return "<h2>Quality gates</h2>" + _table(("dataset", "gate", "checked", "dropped", "drop rate"), rows, "gates")


def _reasons_section(candidates: pa.Table) -> str:
    return "<h2>Why</h2>" + _table(("decision", "reason", "candidates"), stats.reason_counts(candidates), "reasons")


def _phrase_section(candidates: pa.Table) -> str:
    table = [(s.phrase, s.candidates, s.accepted, s.rejected, s.needs_review, f"{s.agreement:.1%}")
             for s in stats.phrase_stats(candidates)]
    headers = ("phrase", "candidates", "accepted", "rejected", "needs review", "agreement")
    return "<h2>Agreement per phrase</h2>" + _table(headers, table, "phrases")


def _pair_section(candidates: pa.Table) -> str:
    table = [(f"{p.a} + {p.b}", p.either, p.agreed, f"{p.agreement:.1%}",
              f"{p.box_ious.mean():.2f}" if len(p.box_ious) else "-") for p in stats.pair_stats(candidates)]
    headers = ("detector pair", "either voted", "both agreed", "agreement", "mean box IoU")
    return "<h2>Agreement per detector pair</h2>" + _table(headers, table, "pairs")


def _detector_section(candidates: pa.Table, frames: pa.Table) -> str:
    table = [(d.detector, d.images_ok, d.images_failed,
              "; ".join(f"{e} ({n})" for e, n in d.errors.most_common(3)) or "-",
              d.votes, d.votes_accepted, d.lone_votes, d.negative_hits)
             for d in stats.detector_stats(candidates, frames)]
    headers = ("detector", "images ok", "images failed", "failures", "votes", "in accepted", "alone",
               "negative hits")
    return "<h2>Detectors</h2>" + _table(headers, table, "detectors")


def _histogram_section(candidates: pa.Table) -> str:
    boxes, masks = stats.iou_values(candidates)
    return ("<h2>IoU between detectors</h2><div class='histograms'>"
            f"{histogram_svg(boxes, title='box IoU')}{histogram_svg(masks, title='mask IoU')}</div>")


def _options(select_id: str, label: str, values: Sequence[tuple[str, str]]) -> str:
    choices = "".join(f"<option value='{html.escape(v, quote=True)}'>{html.escape(t)}</option>" for v, t in values)
    return f"<label>{label} <select id='{select_id}'>{choices}</select></label>"


def _gallery_section(candidates: pa.Table, cards: int, eligible: int, options: GalleryOptions) -> str:
    def values(column: str) -> list[tuple[str, str]]:
        return [("", "all"), *((v, v) for v in sorted(set(candidates.column(column).to_pylist())))]

    controls = "".join([
        _options("filter-dataset", "dataset", values("dataset")), _options("filter-phrase", "phrase", values("phrase")),
        _options("filter-decision", "decision", [("", "all"), *((d, d) for d in stats.DECISIONS)]),
        _options("sort", "sort", [("sample", "as sampled"), ("iou", "weakest box IoU first"),
                                  ("score", "best score first")]),
        "<span class='legend' id='legend'></span>",
        "<button id='prev'>previous</button><span id='page-label'></span><button id='next'>next</button>",
    ])
    return (f"<h2>Gallery</h2><p>A seeded sample (seed {options.seed}) of up to {options.per_stratum} candidates per "
            f"dataset, phrase and decision, among the {eligible} whose image the audit kept: "
            f"<span id='card-count'>{cards}</span> images, <span id='shown-count'>0</span> shown. Boxes: one colour "
            "per detector (toggle them in the legend); dashed white: fused. Click an image for full resolution and "
            f"zoom.</p><div class='controls'>{controls}</div><div class='gallery' id='gallery'></div>"
            "<div class='modal' id='modal' hidden><div class='bar'><span id='zoom-title'></span>"
            "<button id='zoom-out'>-</button><span id='zoom-level'>100%</span><button id='zoom-in'>+</button>"
            "<button id='zoom-reset'>1:1</button><button id='zoom-close'>close</button></div>"
            "<div class='viewport' id='viewport'><div class='zoom' id='zoom'></div></div></div>")


def serve_report(directory: pathlib.Path, *, host: str = "127.0.0.1", port: int = 8000) -> http.server.HTTPServer:
    """An HTTP server for the report directory (call `serve_forever()`); port 0 picks a free one."""
    if not (pathlib.Path(directory) / PAGE_NAME).exists():
        raise ValueError(f"{directory} has no {PAGE_NAME}; build it with `vlaforge report build`")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    return http.server.ThreadingHTTPServer((host, port), handler)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Requests are not worth a line each on the console."""
