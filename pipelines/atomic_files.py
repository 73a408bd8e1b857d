"""Files that appear whole or not at all: write under a temporary name, fsync, rename."""

from __future__ import annotations

import os
import pathlib


def temporary_path(path: pathlib.Path) -> pathlib.Path:
    """The name a file is written under until it is complete (unique per process, so workers never collide)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def publish(temporary: pathlib.Path, final: pathlib.Path) -> None:
    """Make a fully written temporary file visible under its final name, durably."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a rerun after a crash) never sees a partial file; a write that
    fails (a full disk) leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        temporary.write_bytes(data)
        publish(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_create_bytes(path: pathlib.Path, data: bytes) -> None:
    """Like `atomic_write_bytes`, but only when `path` does not exist: raises FileExistsError otherwise, also when
    another process creates it first (the hard link that publishes the file fails if the name is taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        temporary.write_bytes(data)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_table(path: pathlib.Path, table: "pyarrow.Table") -> None:
    """`table` as a Parquet file at `path`, written like `atomic_write_bytes`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
