"""A configured stream (a camera topic, a joint topic, an ALOHA camera) that a recording lacks, answered with the
streams the recording has: which of them most likely means it, and the `--set` line that maps the config onto them.

Real logs name the same camera many ways (`/cam_high/image_raw/compressed`, `/cam_high/image/compressed`,
`/camera/color/image_raw/compressed`): the teleop sources put this fix in their `missing_stream` quarantine
messages, and `vlaforge inspect` in the command line it suggests.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence


def remapped(configured: Sequence[str], available: Sequence[str]) -> list[str | None]:
    """Each configured stream name (a topic, a camera dataset), itself when `available` has it, else the available
    one that most likely means it and is not taken: the same first path part (`/cam_high/image/compressed` for
    `/cam_high/image_raw/compressed`), else the closest spelling; None when nothing is left."""
    taken = {name for name in configured if name in available}
    chosen: list[str | None] = []
    for name in configured:
        if name in available:
            chosen.append(name)
            continue
        free = [candidate for candidate in available if candidate not in taken]
        same_root = [candidate for candidate in free if _root(candidate) == _root(name)]
        match = same_root[:1] or difflib.get_close_matches(name, free, n=1, cutoff=0.0)[:1]
        chosen.append(match[0] if match else None)
        taken.update(match)
    return chosen


def _root(name: str) -> str:
    return name.strip("/").split("/", 1)[0]


def remap_fix(field: str, configured: Mapping[str, str] | Sequence[str], available: Sequence[str],
              kind: str) -> str:
    """The fix for a configured stream absent from a file: the file's streams of the right `kind`, and the `--set`
    line that maps `field` onto them."""
    if not available:
        return f"the file has no {kind} stream at all; record one, or point --input at files that have them"
    names = list(configured)
    chosen = remapped(names, list(available))
    if isinstance(configured, Mapping):
        value: object = {new: configured[old] for old, new in zip(names, chosen) if new is not None}
    else:
        value = [new for new in chosen if new is not None]
    return (f"the file's {kind} streams are {', '.join(available)}; to read them, pass --set "
            f"'{field}={json.dumps(value)}'")
