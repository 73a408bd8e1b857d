"""`vlaforge inspect RAW_PATH`: what a raw dataset holds and how vlaforge would read it, before any ingest.

`inspect_raw` finds the format of a path (a LeRobot `meta/info.json`, a TFDS version directory with
`dataset_info.json` and `features.json`, or one below it, ROS 2 `.mcap` logs, ALOHA `.hdf5` episodes) and hands it to
that format's inspector (`mcap_inspection.py`, `hdf5_inspection.py`, `rlds_inspection.py`, `lerobot_inspection.py`),
which reads only metadata and timestamps, never frames. Each returns a `RawReport` (`raw_report.py`): facts as tables,
problems, and the source options that the defaults get wrong for this dataset, from which `command` makes the exact
`vlaforge ingest` line to run.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from vlaforge.datasets import hdf5_inspection, lerobot_inspection, mcap_inspection, rlds_inspection
from vlaforge.datasets.raw_report import RawReport
from vlaforge.datasets.source import SourceError

LEROBOT_INFO = "meta/info.json"
TFDS_FILES = ("dataset_info.json", "features.json")


def inspect_raw(path: pathlib.Path, *, max_files: int = 20) -> RawReport:
    """The report on the raw dataset at `path` (reading at most `max_files` log or episode files in detail)."""
    inspectors: dict[str, Callable[..., RawReport]] = {
        "lerobot": lerobot_inspection.inspect_lerobot,
        "droid": rlds_inspection.inspect_rlds,
        "teleop-mcap": mcap_inspection.inspect_mcap,
        "teleop-hdf5": hdf5_inspection.inspect_hdf5,
    }
    kind, root = detect_format(pathlib.Path(path))
    return inspectors[kind](root, max_files=max_files)


def detect_format(path: pathlib.Path) -> tuple[str, pathlib.Path]:
    """(format name, the directory to ingest) of a raw dataset; a SourceError says what was looked for."""
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_file():
        kinds = {".mcap": "teleop-mcap", ".hdf5": "teleop-hdf5", ".h5": "teleop-hdf5"}
        if path.suffix in kinds:
            return kinds[path.suffix], path.parent
        raise SourceError(f"{path}: a single file must be an .mcap log or an .hdf5 episode; for other formats pass "
                          "the dataset's directory")
    if (path / LEROBOT_INFO).is_file():
        return "lerobot", path
    version = _tfds_version_dir(path)
    if version is not None:
        return "droid", version
    for pattern, kind in (("*.mcap", "teleop-mcap"), ("*.hdf5", "teleop-hdf5"), ("*.h5", "teleop-hdf5")):
        if next(path.rglob(pattern), None) is not None:
            return kind, path
    raise SourceError(f"{path} is no dataset vlaforge reads: it has no {LEROBOT_INFO} (LeRobot), no "
                      f"{' / '.join(TFDS_FILES)} (RLDS, here or in <builder>/<version>/ below), and no .mcap or "
                      ".hdf5 files")


def _tfds_version_dir(path: pathlib.Path) -> pathlib.Path | None:
    """`path` when it is a TFDS version directory, else the newest one at most two levels below it."""
    if all((path / name).is_file() for name in TFDS_FILES):
        return path
    found = sorted(p.parent for p in [*path.glob("*/dataset_info.json"), *path.glob("*/*/dataset_info.json")]
                   if (p.parent / "features.json").is_file())
    return found[-1] if found else None
