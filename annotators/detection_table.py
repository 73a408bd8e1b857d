"""Precomputed detections (from a cluster run, or a model we do not wrap) as grounding frames for the consensus.

The table is Parquet or JSON Lines, one row per box:

| column | type | meaning |
|---|---|---|
| `image` | string | the image: a path under the image root, or a WebDataset key of a tar under it (`<key>.jpg`) |
| `phrase` | string | what was asked |
| `detector` | string | who answered (one name per detector) |
| `box` | [x1, y1, x2, y2] or null | pixels of the original image; null: the detector ran and found nothing |
| `score` | float or null | the detector's own score; null when it gives none |
| `mask` | COCO RLE or null (optional) | `{"size": [h, w], "counts": [...] or "<compressed>"}` (*) |

(*) An object in JSON Lines; its JSON text, or a struct, in Parquet.
| `negative` | bool (optional) | the phrase was asked as a negative (the object is absent by design) |
| `error` | string (optional) | the detector failed on this image (the row's box is ignored) |

Every detector named anywhere in the table is taken to have run on every image: a detector with no row for an
image found nothing there (give it an `error` row when it failed). Images are read in the order of their first row;
a unit is `images_per_unit` images. A bad row (a box that is not four numbers with x1 <= x2 and y1 <= y2, a mask
that does not decode) is quarantined with the table's file and row; an image that cannot be read is quarantined
with all its rows. Every other row becomes a `Detection` of its detector's `DetectorRun`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import pathlib
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from vlaforge.annotators.audit_table import decode_coco_rle
from vlaforge.annotators.grounding_frame import Detection, DetectorRun, GroundingFrame, RunStatus
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.source import Source, SourceConfig, SourceError, WorkUnit

COLUMNS = ("image", "phrase", "detector", "box", "score")
OPTIONAL = ("mask", "negative", "error")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAMERA = "image"
"""The camera name the audit shows for images that are not robot frames."""


class DetectionTableSource(Source):
    """Images with their precomputed detections -> `GroundingFrame`s with one `DetectorRun` per detector."""

    name = "detections"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(SourceConfig):
        images: str
        """Where the images are: a directory of files, or of WebDataset tars holding `<key>.jpg` members."""
        dataset: str | None = None
        """The dataset name in the audit and the report; None: the table's file name."""
        images_per_unit: int = 256
        """Images per work unit."""

        def __post_init__(self) -> None:
            if self.images_per_unit < 1:
                raise ValueError(f"DetectionTableSource.Config.images_per_unit must be >= 1, got "
                                 f"{self.images_per_unit}")

    config: Config

    @property
    def dataset_name(self) -> str:
        return self.config.dataset or self.root.name.split(".")[0]

    @functools.cached_property
    def table(self) -> pa.Table:
        """The whole table, columns checked (one table per process: units share it)."""
        return _read_table(self.root)

    @functools.cached_property
    def revision(self) -> str:
        """What pins the detections: a digest of the table file."""
        digest = hashlib.sha256()
        with open(self.root, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()[:12]}"

    def plan(self) -> list[WorkUnit]:
        if not pathlib.Path(self.config.images).is_dir():
            raise SourceError(f"--images {self.config.images}: not a directory; point it at the images the table's "
                              "`image` column names")
        images = list(dict.fromkeys(self.table.column("image").to_pylist()))
        size = self.config.images_per_unit
        return [WorkUnit(i, (self.root.name,), (start, min(start + size, len(images))))
                for i, start in enumerate(range(0, len(images), size))]

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[GroundingFrame]:  # type: ignore[override]
        start, stop = unit.episodes or (0, 0)
        images = list(dict.fromkeys(self.table.column("image").to_pylist()))[start:stop]
        rows = self.table.filter(pc.is_in(self.table.column("image"), pa.array(images, pa.string())))
        by_image: dict[str, list[tuple[int, dict[str, Any]]]] = {image: [] for image in images}
        indices = rows.column("__row").to_pylist()
        for index, row in zip(indices, rows.drop(["__row"]).to_pylist()):
            by_image[row["image"]].append((index, row))
        detectors = sorted(set(self.table.column("detector").to_pylist()))
        for image, image_rows in by_image.items():
            frame = self._frame(image, image_rows, detectors, ledger)
            if frame is not None:
                yield frame

    def _frame(self, image: str, rows: list[tuple[int, dict[str, Any]]], detectors: list[str],
               ledger: DropLedger) -> GroundingFrame | None:
        try:
            data = self._image_bytes(image)
            with Image.open(io.BytesIO(data)) as opened:
                pixels = np.asarray(opened.convert("RGB"))
        except (OSError, UnidentifiedImageError, KeyError, ValueError) as error:
            ledger.quarantine(file=self.root.name, episode=image, reason=DropReason.MISSING_IMAGE,
                              message=f"{self.root.name} rows {[i for i, _ in rows][:5]}: image {image!r} cannot be "
                                      f"read under {self.config.images} ({type(error).__name__}: {error}); fix "
                                      "--images or the image column")
            return None
        runs = {name: DetectorRun(name, name, self.revision, RunStatus.OK) for name in detectors}
        phrases: dict[str, None] = {}
        negatives: dict[str, None] = {}
        for index, row in rows:
            self._add(row, index, pixels.shape[:2], runs, phrases, negatives, ledger)
        return GroundingFrame(
            dataset=self.dataset_name, episode_id=image, source_file=self.root.name, step=0, camera=CAMERA,
            jpeg=data if data[:2] == b"\xff\xd8" else encode_jpeg(pixels, FrameConfig(quality=95)), pixels=pixels,
            selected_by="detections", instructions=[], phrases=list(phrases), negatives=list(negatives),
            runs=list(runs.values()), image_id=image)

    def _add(self, row: dict[str, Any], index: int, shape: tuple[int, ...], runs: dict[str, DetectorRun],
             phrases: dict[str, None], negatives: dict[str, None], ledger: DropLedger) -> None:
        """One table row into its detector's run (or a quarantine row naming why not)."""
        run = runs[row["detector"]]
        (negatives if row.get("negative") else phrases)[row["phrase"]] = None
        if row.get("error"):
            run.status, run.error, run.detections = RunStatus.FAILED, str(row["error"]), []
            return
        if row["box"] is None or run.status == RunStatus.FAILED:
            return
        at = f"{self.root.name} row {index} (image {row['image']!r}, detector {row['detector']!r})"
        try:
            box = _box(row["box"], at)
            mask = _mask(row.get("mask"), at)
            if mask is not None and mask.shape != shape:
                raise ValueError(f"{at}: the mask is {mask.shape[0]}x{mask.shape[1]}, the image "
                                 f"{shape[0]}x{shape[1]}")
        except ValueError as error:
            ledger.quarantine(file=self.root.name, episode=row["image"], reason=DropReason.BAD_RECORD,
                              message=f"{error}; the box is left out. Fix the row in the table")
            return
        score = row["score"]
        run.detections.append(Detection(row["phrase"], box, None if score is None else float(score), mask))

    def _image_bytes(self, image: str) -> bytes:
        root = pathlib.Path(self.config.images).resolve()
        path = (root / image).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"the path leaves the image root {root}")
        if path.is_file():
            return path.read_bytes()
        return _tar_index(str(root)).read(image)


def _box(value: Any, at: str) -> tuple[float, float, float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)):
        raise ValueError(f"{at}: box must be [x1, y1, x2, y2] in pixels, got {value!r}")
    x1, y1, x2, y2 = (float(v) for v in value)
    if not (x1 <= x2 and y1 <= y2) or not all(np.isfinite([x1, y1, x2, y2])):
        raise ValueError(f"{at}: box {list(value)} is not [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2 (is it "
                         "[x, y, width, height]? convert it)")
    return x1, y1, x2, y2


def _mask(value: Any, at: str) -> np.ndarray | None:
    """A row's mask: COCO RLE as JSON text (JSON Lines and Parquet) or a struct (Parquet); None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{at}: the mask is not JSON text of a COCO RLE") from None
    return decode_coco_rle(value, at)


def has_masks(path: str | pathlib.Path) -> bool:
    """Whether a detections table carries any mask (so the consensus can judge masks without SAM)."""
    table = _read_table(pathlib.Path(path))
    return "mask" in table.column_names and table.column("mask").null_count < table.num_rows


def _read_table(path: pathlib.Path) -> pa.Table:
    if not path.is_file():
        raise SourceError(f"--detections {path}: no such file; pass a Parquet or JSON Lines detections table")
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        table = _jsonl(path)
    else:
        raise SourceError(f"--detections {path}: a detections table is .parquet or .jsonl")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise SourceError(f"{path}: lacks columns {missing}; a detections table has {list(COLUMNS)} (and optionally "
                          f"{list(OPTIONAL)}); see docs/grounding.md")
    table = table.select([c for c in (*COLUMNS, *OPTIONAL) if c in table.column_names])
    return table.append_column("__row", pa.array(np.arange(table.num_rows)))


def _jsonl(path: pathlib.Path) -> pa.Table:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise SourceError(f"{path}: line {number} is not JSON ({error.msg}); one object per line") from None
    for row in rows:  # as JSON text, as in Parquet: RLE counts are a list in one row and a string in another
        if row.get("mask") is not None:
            row["mask"] = json.dumps(row["mask"])
    names = [name for name in (*COLUMNS, *OPTIONAL) if any(name in row for row in rows)]
    return pa.table({name: pa.array([row.get(name) for row in rows]) for name in names})


class _TarIndex:
    """WebDataset keys -> (tar, member) for the tars under an image root; member names checked."""

    def __init__(self, root: str) -> None:
        self.members: dict[str, tuple[pathlib.Path, str]] = {}
        for tar in sorted(pathlib.Path(root).rglob("*.tar")):
            with tarfile.open(tar) as handle:
                for member in handle:
                    name = member.name
                    if not member.isfile() or name.startswith("/") or ".." in name.split("/"):
                        continue
                    key, _, suffix = name.rpartition(".")
                    if "." + suffix.lower() in IMAGE_SUFFIXES:
                        self.members.setdefault(key, (tar, name))

    def read(self, key: str) -> bytes:
        tar, name = self.members[key]
        with tarfile.open(tar) as handle:
            extracted = handle.extractfile(name)
            assert extracted is not None
            return extracted.read()


@functools.lru_cache(maxsize=4)
def _tar_index(root: str) -> _TarIndex:
    return _TarIndex(root)
