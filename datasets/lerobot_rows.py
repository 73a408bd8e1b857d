"""An episode's rows out of a LeRobot data parquet, and its columns as arrays.

v3.0 packs many episodes into each data file and v2.1 gives each its own; either way `DataFiles` opens the file of
the episode being read once per unit, locates the episode's rows from the `episode_index` column, and reads each
row group once with only the needed columns. Problems that cost one episode raise `EpisodeProblem`, which the
source turns into a quarantine row.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.frames import FrameConfig, conform_jpeg, encode_jpeg
from vlaforge.datasets.lerobot_meta import EpisodeInfo

_JPEG_SOI = b"\xff\xd8"


class EpisodeProblem(Exception):
    """An episode that goes to quarantine: why, the file at fault, and a message with the fix."""

    def __init__(self, reason: DropReason, file: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.file, self.message = reason, file, message


def redownload(file: str | None) -> str:
    return f"re-download {file}"


class DataFiles:
    """The data parquet of the episode being read. Its `episode_index` column locates each episode's rows; each
    row group is read once, with only `columns` (plus `task_index` when present), and the last ones read are kept,
    so consecutive episodes in one row group cost one read."""

    def __init__(self, root: pathlib.Path, columns: list[str]) -> None:
        self._root, self._columns = root, columns
        self._path: str | None = None
        self._file: pq.ParquetFile | EpisodeProblem | None = None
        self._read_columns: list[str] = columns
        self._episodes = np.empty(0, dtype=np.int64)
        """episode_index of every row of the file."""
        self._starts = np.zeros(1, dtype=np.int64)
        """First row of each row group, and the row count at the end."""
        self._cached: tuple[tuple[int, ...], pa.Table] | None = None

    def rows(self, info: EpisodeInfo) -> pa.Table:
        """The episode's rows, in file order."""
        if info.data_file != self._path:
            self._open(info.data_file)
        if isinstance(self._file, EpisodeProblem):
            raise EpisodeProblem(self._file.reason, self._file.file, self._file.message)
        positions = np.flatnonzero(self._episodes == info.index)
        if positions.size == 0:
            raise EpisodeProblem(DropReason.INCONSISTENT_LENGTHS, info.data_file,
                                 f"{info.data_file} holds no rows of episode {info.index}, which the episode metadata "
                                 f"places there. Fix: {redownload(info.data_file)} and the meta/ folder")
        first, last = (int(np.searchsorted(self._starts, p, side="right")) - 1 for p in positions[[0, -1]])
        table = self._row_groups(tuple(range(first, last + 1)))
        local = positions - self._starts[first]
        if local[-1] - local[0] + 1 == local.size:
            return table.slice(int(local[0]), int(local.size))
        return table.take(pa.array(local))

    def _open(self, file: str) -> None:
        self._path, self._cached = file, None
        try:
            parquet = pq.ParquetFile(self._root / file)
            names = parquet.schema_arrow.names
            missing = [column for column in self._columns if column not in names]
            if missing:
                self._file = EpisodeProblem(DropReason.BAD_RECORD, file, f"{file} lacks the columns {missing}, "
                                            f"which info.json declares. Fix: {redownload(file)}")
                return
            self._read_columns = self._columns + ["task_index"] * ("task_index" in names)
            self._episodes = parquet.read(columns=["episode_index"]).column(0).to_numpy()
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
            self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            self._file = parquet
        except (OSError, pa.ArrowException) as error:
            self._file = EpisodeProblem(DropReason.UNREADABLE_FILE, file, f"{file}: cannot be read as parquet "
                                        f"({error}). Fix: {redownload(file)}")

    def _row_groups(self, groups: tuple[int, ...]) -> pa.Table:
        if self._cached is None or self._cached[0] != groups:
            assert isinstance(self._file, pq.ParquetFile)
            try:
                table = self._file.read_row_groups(list(groups), columns=self._read_columns)
            except (OSError, pa.ArrowException) as error:
                raise EpisodeProblem(DropReason.UNREADABLE_FILE, str(self._path), f"{self._path}: row groups "
                                     f"{list(groups)} cannot be read ({error}). Fix: {redownload(self._path)}"
                                     ) from error
            self._cached = (groups, table)
        return self._cached[1]


def vector_values(rows: pa.Table, key: str, size: int, info: EpisodeInfo) -> np.ndarray:
    """[n, size] float32 of a vector feature: a (fixed size) list column, or a scalar column for shape [1]."""
    column = rows.column(key).combine_chunks()
    where = f"{info.data_file} episode {info.index}"
    if column.null_count:
        raise EpisodeProblem(DropReason.BAD_RECORD, info.data_file, f"{where}: {key} has {column.null_count} "
                             f"null rows. Fix: {redownload(info.data_file)}")
    kind = column.type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    flat = (column.flatten() if is_list else column).to_numpy(zero_copy_only=False)
    if flat.size != rows.num_rows * size:
        raise EpisodeProblem(DropReason.INCONSISTENT_LENGTHS, info.data_file,
                             f"{where}: {key} holds {flat.size} values over {rows.num_rows} rows, but info.json "
                             f"gives it {size} dimensions. Fix: correct its shape in meta/info.json, or "
                             f"{redownload(info.data_file)}")
    return flat.reshape(rows.num_rows, size).astype(np.float32, copy=False)


def image_cells(rows: pa.Table, key: str) -> list[tuple[bytes | None, str | None]]:
    """(bytes, path) of each row of an `image` feature: HF datasets' struct {bytes, path}, or plain bytes."""
    column = rows.column(key).combine_chunks()
    if not pa.types.is_struct(column.type):
        return [(blob, None) for blob in column.to_pylist()]
    names = [column.type.field(i).name for i in range(column.type.num_fields)]
    blobs = column.field("bytes").to_pylist() if "bytes" in names else [None] * len(column)
    paths = column.field("path").to_pylist() if "path" in names else [None] * len(column)
    return list(zip(blobs, paths))


def to_jpeg(blob: bytes, config: FrameConfig) -> bytes:
    """A JPEG at the target size passes through; other JPEGs and other formats (PNG) are decoded and re-encoded.
    Raises ValueError or OSError when the image does not decode."""
    if blob[:2] == _JPEG_SOI:
        return conform_jpeg(blob, config)
    with Image.open(io.BytesIO(blob)) as image:
        pixels = np.asarray(image.convert("RGB"))
    return encode_jpeg(pixels, config)
