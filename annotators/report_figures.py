"""The report's figures drawn on the server: histograms as inline SVG (the gallery's boxes are drawn in the browser
over each image, so detectors can be toggled: `report_assets/gallery.js`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np


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
