"""`vlaforge view`: a static page per robot episode, to look at what a dataset (or a corpus) holds before training.

Each page shows every camera as a frame you scrub with a slider (or play), above a strip of thumbnails; the state
and action curves with their dimension names (the slider's step marked on them, timeline gaps shaded); the
instruction; the flags (success, split, idle trimming, gaps, segment) and the lineage (the source file and range,
the shards). Frames are the shards' own JPEG bytes, copied beside the page (`frames/<episode>/<camera>/<step>.jpg`),
so what the page shows is what training reads; `index.html` lists the episodes. Pages are plain HTML, SVG and a
little JavaScript with nothing fetched from elsewhere: open them from disk, or serve the directory.

Episodes come from a robot dataset directory (its manifest's shards, only those holding the episode asked for) or
from a corpus manifest (its robot components' shards, by URL, local or remote).
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import pathlib
import string
from collections.abc import Iterator

import numpy as np

from vlaforge.datasets.schema import MetaField, SampleKey, safe_key_part
from vlaforge.pipelines.atomic_files import atomic_write_bytes
from vlaforge.pipelines.shards.manifest import MANIFEST_NAME, read_manifest
from vlaforge.pipelines.shards.stored_episodes import StoredEpisode, episodes_of, raw_samples
from vlaforge.pipelines.shards.urls import ShardOpener, resolve_url

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39")
_WIDTH, _HEIGHT = 640, 160
_THUMBS = 12
"""Thumbnails in a camera's strip (evenly spaced steps)."""


@dataclasses.dataclass
class ViewedEpisode:
    """One episode and where it comes from."""

    episode: StoredEpisode
    dataset: str
    """The dataset directory, or the corpus component's name."""


def dataset_episodes(root: pathlib.Path, wanted: str | None = None) -> Iterator[ViewedEpisode]:
    """Episodes of a robot dataset directory in manifest order (`wanted`: only that one, reading only its shards)."""
    records = read_manifest(root / MANIFEST_NAME)
    if wanted is not None:
        records = [r for r in records if wanted in r.episodes]
    yield from _episodes(((str(root / r.url), r.url) for r in records), str(root), root.name, wanted)


def corpus_episodes(corpus_url: str, opener: ShardOpener, wanted: str | None = None) -> Iterator[ViewedEpisode]:
    """Episodes of a corpus manifest's robot components, component by component, shard by shard."""
    from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusManifest

    manifest = CorpusManifest.from_json(opener.read_bytes(corpus_url), corpus_url)
    for component in manifest.components:
        if component.kind is ComponentKind.ROBOT:
            urls = ((resolve_url(corpus_url, shard.url), shard.url) for shard in component.shards)
            yield from _episodes(urls, corpus_url, component.name, wanted, opener)


def _episodes(urls: Iterator[tuple[str, str]], root: str, dataset: str, wanted: str | None,
              opener: ShardOpener | None = None) -> Iterator[ViewedEpisode]:
    opener = opener or ShardOpener()

    def samples() -> Iterator[tuple[str, dict[str, bytes]]]:
        for url, name in urls:
            with opener.open(url) as handle:
                for sample in raw_samples(handle, name):
                    yield name, sample

    for episode in episodes_of(samples(), root):
        if wanted is None or episode.episode_id == wanted:
            yield ViewedEpisode(episode, dataset)


def write_pages(episodes: Iterator[ViewedEpisode], output: pathlib.Path, *, limit: int | None = None) -> list[str]:
    """A page per episode (at most `limit`) and `index.html`; returns the pages' names."""
    output.mkdir(parents=True, exist_ok=True)
    entries, pages = [], []
    for count, viewed in enumerate(episodes):
        if limit is not None and count >= limit:
            break
        name = write_page(viewed, output)
        pages.append(name)
        entries.append((name, viewed))
    atomic_write_bytes(output / "index.html", _index(entries).encode())
    return pages


def write_page(viewed: ViewedEpisode, output: pathlib.Path) -> str:
    """The episode's page and its frames; returns the page's file name."""
    episode = viewed.episode
    slug = safe_key_part(episode.episode_id)
    frames: dict[str, list[str]] = {}
    for camera in episode.cameras:
        frames[camera] = []
        for step, sample in enumerate(episode.steps):
            relative = f"frames/{slug}/{camera}/{step:06d}.jpg"
            path = output / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sample[SampleKey.camera(camera)])
            frames[camera].append(relative)
    name = f"episode-{slug}.html"
    atomic_write_bytes(output / name, _page(viewed, frames).encode())
    return name


def _values(episode: StoredEpisode) -> dict[str, np.ndarray]:
    """[n, D] state and each step's own action (the first row of its chunk)."""
    state = np.stack([np.load(io.BytesIO(s[SampleKey.STATE.value]), allow_pickle=False) for s in episode.steps])
    chunks = [np.load(io.BytesIO(s[SampleKey.ACTION.value]), allow_pickle=False) for s in episode.steps]
    return {"state": state.reshape(len(episode), -1), "action": np.stack([c[0] for c in chunks])}


def _curves(title: str, values: np.ndarray, names: list[str], times: list[float], gaps: list[dict]) -> str:
    """An SVG of each dimension over the episode (each scaled to its own range, as their units differ), a cursor
    line the slider moves, gaps shaded, and a legend of the names."""
    n = len(values)
    x = np.linspace(8, _WIDTH - 8, n) if n > 1 else np.array([_WIDTH / 2])
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    parts = [f'<svg class="curves" data-title="{html.escape(title)}" width="{_WIDTH}" height="{_HEIGHT}" '
             f'viewBox="0 0 {_WIDTH} {_HEIGHT}">', f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="#fafafa"/>']
    duration = times[-1] - times[0] if n > 1 and times[-1] > times[0] else 1.0
    for gap in gaps:
        left = 8 + (gap["from_s"] - times[0]) / duration * (_WIDTH - 16)
        right = 8 + (gap["to_s"] - times[0]) / duration * (_WIDTH - 16)
        parts.append(f'<rect class="gap" x="{left:.1f}" y="0" width="{max(right - left, 2):.1f}" height="{_HEIGHT}" '
                     f'fill="#f4c7c3"><title>gap in {html.escape(gap.get("stream", ""))}</title></rect>')
    for d in range(values.shape[1]):
        y = _HEIGHT - 8 - (values[:, d] - low[d]) / span[d] * (_HEIGHT - 16)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y))
        name = names[d] if d < len(names) else f"{title}_{d}"
        parts.append(f'<polyline class="dim" data-name="{html.escape(name)}" fill="none" stroke-width="1.5" '
                     f'stroke="{_COLOURS[d % len(_COLOURS)]}" points="{points}"><title>{html.escape(name)}: '
                     f'{low[d]:.4g} .. {high[d]:.4g}</title></polyline>')
    parts.append(f'<line class="cursor" x1="{x[0]:.1f}" x2="{x[0]:.1f}" y1="0" y2="{_HEIGHT}" stroke="#000"/></svg>')
    legend = "".join(f'<span class="name" style="color:{_COLOURS[d % len(_COLOURS)]}">'
                     f'{html.escape(names[d] if d < len(names) else str(d))}</span> ' for d in range(values.shape[1]))
    return f'<h3>{html.escape(title)}</h3>{"".join(parts)}<div class="legend">{legend}</div>'


def _page(viewed: ViewedEpisode, frames: dict[str, list[str]]) -> str:
    episode = viewed.episode
    meta = episode.meta
    values = _values(episode)
    metas = [episode.step_meta(step) for step in range(len(episode))]
    times = [float(m[MetaField.TIMESTAMP.value]) for m in metas]
    flags = meta.get(MetaField.FLAGS.value) or {}
    gaps = (flags.get("timeline") or {}).get("gaps", [])
    cameras = "".join(_camera(camera, paths) for camera, paths in frames.items())
    curves = (_curves("state", values["state"], list(meta[MetaField.STATE_NAMES.value]), times, gaps) +
              _curves("action", values["action"], list(meta[MetaField.ACTION_NAMES.value]), times, gaps))
    facts = {"dataset": viewed.dataset, "embodiment": episode.embodiment, "steps": len(episode),
             "control rate": f"{meta[MetaField.CONTROL_RATE_HZ.value]:g} Hz", "split": episode.split,
             "success": flags.get("success", "unknown"),
             "idle trimmed (head, tail)": (f"{flags['idle_trimmed_head']}, {flags['idle_trimmed_tail']}"
                                           if "idle_trimmed_head" in flags else "no"),
             "timeline gaps": len(gaps), "segment": flags.get("segment", "-"),
             "lineage": json.dumps(meta.get(MetaField.LINEAGE.value, {})), "shards": ", ".join(episode.shards)}
    rows = "".join(f'<tr><th>{html.escape(k)}</th><td id="fact-{safe_key_part(k)}">{html.escape(str(v))}</td></tr>'
                   for k, v in facts.items())
    other = [i for i in meta.get(MetaField.INSTRUCTIONS.value, []) if i != episode.instruction]
    data = json.dumps({"times": times, "steps": len(episode)})
    return _PAGE.substitute(
        title=html.escape(episode.episode_id), instruction=html.escape(episode.instruction or "(no instruction)"),
        others=html.escape(" / ".join(other)), facts=rows, cameras=cameras, curves=curves, last=len(episode) - 1,
        data=data, script=_SCRIPT)


def _camera(camera: str, paths: list[str]) -> str:
    picks = sorted({round(i * (len(paths) - 1) / max(_THUMBS - 1, 1)) for i in range(_THUMBS)})
    thumbs = "".join(f'<img class="thumb" data-step="{i}" src="{paths[i]}" alt="step {i}" width="80">' for i in picks)
    frames = json.dumps(paths)
    return (f'<div class="camera" data-camera="{html.escape(camera)}"><h3>{html.escape(camera)}</h3>'
            f'<img class="frame" src="{paths[0]}" data-frames=\'{html.escape(frames)}\' alt="{html.escape(camera)}">'
            f'<div class="strip">{thumbs}</div></div>')


def _index(entries: list[tuple[str, ViewedEpisode]]) -> str:
    rows = []
    for name, viewed in entries:
        episode = viewed.episode
        success = (episode.meta.get(MetaField.FLAGS.value) or {}).get("success", "unknown")
        rows.append(f'<tr><td><a href="{name}">{html.escape(episode.episode_id)}</a></td>'
                    f"<td>{html.escape(viewed.dataset)}</td><td>{html.escape(episode.embodiment)}</td>"
                    f"<td>{len(episode)}</td><td>{html.escape(episode.split)}</td><td>{success}</td>"
                    f"<td>{html.escape(episode.instruction)}</td></tr>")
    return _INDEX.substitute(count=len(entries), rows="".join(rows))


_SCRIPT = """
const data = JSON.parse(document.getElementById('episode-data').textContent);
const slider = document.getElementById('step');
function show(step) {
  step = Math.max(0, Math.min(data.steps - 1, step));
  slider.value = step;
  document.getElementById('step-shown').textContent = step + ' / ' + (data.steps - 1) +
      ' (' + data.times[step].toFixed(3) + ' s)';
  for (const img of document.querySelectorAll('img.frame')) {
    img.src = JSON.parse(img.dataset.frames)[step];
  }
  for (const svg of document.querySelectorAll('svg.curves')) {
    const x = 8 + (data.steps > 1 ? step / (data.steps - 1) : 0.5) * (svg.viewBox.baseVal.width - 16);
    const cursor = svg.querySelector('line.cursor');
    cursor.setAttribute('x1', x.toFixed(1));
    cursor.setAttribute('x2', x.toFixed(1));
  }
}
slider.addEventListener('input', () => show(Number(slider.value)));
for (const thumb of document.querySelectorAll('img.thumb')) {
  thumb.addEventListener('click', () => show(Number(thumb.dataset.step)));
}
let timer = null;
document.getElementById('play').addEventListener('click', () => {
  if (timer) { clearInterval(timer); timer = null; return; }
  timer = setInterval(() => show((Number(slider.value) + 1) % data.steps), 100);
});
document.addEventListener('keydown', (event) => {
  if (event.target === slider) return;  // the slider steps itself, and says so with an input event
  if (event.key === 'ArrowRight') show(Number(slider.value) + 1);
  if (event.key === 'ArrowLeft') show(Number(slider.value) - 1);
});
show(0);
"""

_STYLE = """body { font-family: sans-serif; margin: 16px; } table { border-collapse: collapse; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }
.camera { display: inline-block; margin: 0 12px 12px 0; } .camera img.frame { max-width: 480px; display: block; }
.strip img { margin: 2px; cursor: pointer; } .legend .name { margin-right: 8px; font-size: 12px; }
#instruction { font-size: 18px; margin: 8px 0; }"""

_PAGE = string.Template("""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>$title</title><style>""" + _STYLE + """</style></head>
<body><p><a href="index.html">all episodes</a></p>
<h1 id="episode-id">$title</h1>
<p id="instruction">$instruction</p><p id="other-instructions">$others</p>
<table id="facts">$facts</table>
<p><button id="play">play / pause</button> <input id="step" type="range" min="0" max="$last" value="0"
 style="width: 640px"> step <span id="step-shown"></span></p>
<div id="cameras">$cameras</div>
<div id="curves">$curves</div>
<script id="episode-data" type="application/json">$data</script>
<script>$script</script>
</body></html>
""")

_INDEX = string.Template("""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>episodes</title><style>""" + _STYLE + """</style></head>
<body><h1>$count episodes</h1>
<table id="episodes"><tr><th>episode</th><th>dataset</th><th>embodiment</th><th>steps</th><th>split</th>
<th>success</th><th>instruction</th></tr>$rows</table></body></html>
""")

