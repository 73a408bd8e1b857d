"""The shard manifest: one Parquet row per shard, and the per-shard commit records that build it.

A shard becomes part of the dataset when its commit record is written (after the shard itself was renamed into
place). A rerun skips shards that have a commit record; `write_manifest` gathers the records into
`manifest.parquet`. URLs are relative to the manifest's directory, so a dataset can be moved or served over HTTP.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import pathlib
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets.source import SourceError
from vlaforge.pipelines.atomic_files import atomic_write_bytes, atomic_write_table

MANIFEST_NAME = "manifest.parquet"
COMMITS_DIR = "_commits"


@functools.cache
def code_version() -> str:
    """The code that wrote a shard, as recorded in the manifest and in an output's options: the package version, and
    the git commit when the package runs from a checkout (`vlaforge==0.1.0+g1a2b3c4d5e6f`), so a rerun by other code
    into an output is refused rather than mixing bytes of two versions. (Uncommitted edits are not seen.)"""
    version = f"vlaforge=={importlib.metadata.version('vlaforge')}"
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return version  # an installed wheel (the images): the version names the code
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}" if commit else version


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    """One manifest row."""

    url: str
    """Path of the shard relative to the manifest's directory."""
    split: str
    samples: int
    bytes: int
    sha256: str
    episodes: list[str]
    source_files: list[str]
    dataset: str
    unit: int
    code_version: str

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


MANIFEST_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("split", pa.string()),
        ("samples", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("episodes", pa.list_(pa.string())),
        ("source_files", pa.list_(pa.string())),
        ("dataset", pa.string()),
        ("unit", pa.int64()),
        ("code_version", pa.string()),
    ]
)


def commit_path(output: pathlib.Path, url: str) -> pathlib.Path:
    return output / COMMITS_DIR / f"{url.replace('/', '__')}.json"


def commit_shard(output: pathlib.Path, record: ShardRecord) -> None:
    """The commit point of one shard: after this, a rerun will not write it again."""
    atomic_write_bytes(commit_path(output, record.url), json.dumps(record.as_dict(), sort_keys=True).encode())


def is_committed(output: pathlib.Path, url: str) -> bool:
    return commit_path(output, url).exists()


def load_commits(output: pathlib.Path) -> list[ShardRecord]:
    """Every committed shard, sorted by URL."""
    paths = sorted((output / COMMITS_DIR).glob("*.json"))
    return sorted((ShardRecord(**json.loads(p.read_text())) for p in paths), key=lambda r: r.url)


def write_manifest(output: pathlib.Path, records: list[ShardRecord]) -> pathlib.Path:
    """Write `manifest.parquet` from the shard records (atomically)."""
    path = output / MANIFEST_NAME
    atomic_write_table(path, pa.Table.from_pylist([r.as_dict() for r in records], schema=MANIFEST_SCHEMA))
    return path


def read_manifest(path: pathlib.Path) -> list[ShardRecord]:
    """The rows of a manifest file."""
    return [ShardRecord(**row) for row in pq.read_table(path).to_pylist()]


def records_of_split(dataset: pathlib.Path, split: str | None) -> list[ShardRecord]:
    """The shards a dataset directory's manifest lists for `split` (None: every split), in manifest order; a
    `SourceError` when there is no manifest or no such shard (the directory is then no input for a job)."""
    manifest = dataset / MANIFEST_NAME
    if not manifest.exists():
        raise SourceError(f"{manifest} does not exist: point at a dataset directory written by vlaforge "
                          "(`vlaforge ingest`, `relabel` or `annotate`)")
    records = [r for r in read_manifest(manifest) if split in (None, r.split)]
    if not records:
        raise SourceError(f"{manifest} lists no shards of split {split!r}")
    return records
