"""The report's pictures: a candidate drawn on its image (every detector's box, the fused box and mask), and
histograms as inline SVG. Everything is embedded in the page: it is one self-contained HTML file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, ImageDraw

from vlaforge.annotators.audit_table import decode_rle

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")
FUSED = "#ffffff"
MASK_RGB = (255, 225, 25)


def detector_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed color per detector name (sorted, so every card and legend agree)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def draw_candidate(jpeg: bytes, row: dict[str, Any], colors: dict[str, str], width: int = 320) -> str:
    """A JPEG data URI of the image with the fused mask tinted, each voting detector's box in its color, and the
    fused box in white over a dark outline. `row` is an audit row (see `audit_table.CANDIDATE_SCHEMA`)."""
    pixels = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    height, original_width = pixels.shape[:2]
    if row.get("fused_mask_rle"):
        mask = decode_rle(row["fused_mask_rle"], height, original_width)
        pixels = pixels.copy()
        pixels[mask] = (0.55 * pixels[mask] + 0.45 * np.array(MASK_RGB)).astype(np.uint8)
    scale = width / original_width
    image = Image.fromarray(pixels).resize((width, max(round(height * scale), 1)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for detection in row["detections"]:
        if detection["voted"] and detection["box"]:
            draw.rectangle(_scaled(detection["box"], scale), outline=colors[detection["detector"]], width=2)
    if row.get("fused_box"):
        box = _scaled(row["fused_box"], scale)
        draw.rectangle(box, outline="#000000", width=4)
        draw.rectangle(box, outline=FUSED, width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _scaled(box: Sequence[float], scale: float) -> list[float]:
    return [float(v) * scale for v in box]


def histogram_svg(values: Sequence[float], *, title: str, bins: int = 10, width: int = 360, height: int = 160) -> str:
    """An SVG bar chart of `values` in [0, 1] over `bins` equal bins, with counts on the bars."""
    counts, _ = np.histogram(np.clip(np.asarray(values, dtype=float), 0, 1), bins=bins, range=(0.0, 1.0))
    top = max(int(counts.max(initial=0)), 1)
    plot_h, bar_w = height - 40, (width - 20) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}"><text x="10" y="14" font-size="12">{html.escape(title)} '
             f'(n={len(values)})</text>']
    for i, count in enumerate(counts):
        bar_h = plot_h * count / top
        x, y = 10 + i * bar_w, 20 + plot_h - bar_h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{bar_h:.1f}" fill="#4363d8">'
                     f'<title>{i / bins:.1f}-{(i + 1) / bins:.1f}: {count}</title></rect>')
        if count:
            parts.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y - 2:.1f}" font-size="9" '
                         f'text-anchor="middle">{count}</text>')
    parts.append(f'<text x="10" y="{height - 4}" font-size="10">0</text>'
                 f'<text x="{width - 16}" y="{height - 4}" font-size="10">1</text></svg>')
    return "".join(parts)
