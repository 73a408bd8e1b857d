"""An `s3://` prefix and its local mirror: how every output can live in object storage.

Jobs, the corpus build and the trainer read and write local files (a dataset directory, `corpus.json`, a run
directory). When their output is an `s3://bucket/prefix` URL, they work in its mirror, `<cache>/bucket/prefix`
(`$VLAFORGE_OBJECT_CACHE`, default `~/.cache/vlaforge/objects`), and the mirror moves files between the two:

- `pull` before a run brings down what the prefix already holds (a rerun then skips the units, shards and checkpoints
  it finds, exactly as on a local disk); `pull(skip_suffixes=(".tar",))` leaves the bulk behind where only the
  records are needed (a job's resume, a corpus build reading manifests).
- `push` during and after a run uploads what changed, in commit order (`commit_tier`).

**Atomic publish without rename.** S3 has no rename, but an object becomes visible whole or not at all: a small file
is one PUT, a large one a multipart upload that S3 completes only once every part is in, so an interrupted upload
leaves no object. Local files are already published atomically by the jobs (written under a temporary name, then
renamed), and temporaries (names starting with a dot) and the output's lock are never uploaded.

**Commit markers.** Uploads happen in tiers, each finished before the next starts: data (shards, checkpoint files,
images) before shard commit records (`_commits/`), before side-table parts (`_tables/`), before unit markers
(`_units/`), before the top-level files (`summary.json`, `stats.json`, ...) and the trainer's `latest`, with the
manifest (`manifest.parquet`, `corpus.json`) last. S3 reads, lists and overwrites are strongly consistent, so a
reader or a rerun that finds a marker finds everything its unit wrote, and one that finds a manifest finds the
whole dataset. Nothing is deleted remotely except by `clear` (`--overwrite`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

CACHE_ENV = "VLAFORGE_OBJECT_CACHE"
"""Where mirrors live: `<cache>/<bucket>/<prefix>`."""
_DEFAULT_CACHE = pathlib.Path("~/.cache/vlaforge/objects")
_NEVER_UPLOADED = ("_lock",)
"""Top-level folders that belong to one machine's run (the output lock), not to the dataset."""
_LAST = ("manifest.parquet", "corpus.json")
_STATE_NAME = ".mirror-state.json"
"""In the mirror (a dot name: never uploaded): what was last pulled or pushed, so any process pushes only changes."""


def is_object_url(url: str | os.PathLike) -> bool:
    """Whether `url` names an object-store prefix (`s3://...`) rather than a local path."""
    return os.fspath(url).startswith("s3://")


def s3_options_from_environment() -> dict[str, Any]:
    """s3fs options from the environment: the endpoint of an S3-compatible server (`AWS_ENDPOINT_URL_S3`, or
    `AWS_ENDPOINT_URL`). Credentials are never passed here: s3fs (botocore) reads `AWS_ACCESS_KEY_ID` /
    `AWS_SECRET_ACCESS_KEY`, a profile or an instance role itself, so no secret passes through our configs or logs."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"endpoint_url": endpoint} if endpoint else {}


def commit_tier(key: str) -> int:
    """The order a file is uploaded in: 0 data, 1 shard commits, 2 table parts, 3 unit markers, 4 top-level files and
    checkpoint pointers, 5 the manifest."""
    parts = key.split("/")
    if len(parts) == 1:
        return 5 if key in _LAST else 4
    if parts[-1] == "latest":
        return 4
    return {"_commits": 1, "_tables": 2, "_units": 3}.get(parts[0], 0)


@dataclasses.dataclass
class ObjectMirror:
    """One `s3://bucket/prefix` and its local directory."""

    url: str
    """`s3://bucket/prefix`, without a trailing slash."""
    local: pathlib.Path
    """The mirror directory."""
    s3_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    """`s3fs.S3FileSystem` options (an endpoint); left out of the repr."""
    _fs: Any = dataclasses.field(default=None, repr=False)

    @classmethod
    def of(cls, url: str, *, s3_options: Mapping[str, Any] | None = None,
           cache: str | os.PathLike | None = None) -> ObjectMirror:
        if not is_object_url(url):
            raise ValueError(f"{url}: an object-store URL starts with s3://")
        path = url.removeprefix("s3://").strip("/")
        if not path or ".." in path.split("/"):
            raise ValueError(f"{url}: name a bucket and a prefix, e.g. s3://bucket/datasets/droid")
        root = pathlib.Path(cache or os.environ.get(CACHE_ENV) or _DEFAULT_CACHE).expanduser()
        options = s3_options_from_environment() if s3_options is None else dict(s3_options)
        return cls(url=f"s3://{path}", local=root / path, s3_options=options)

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import s3fs

            self._fs = s3fs.S3FileSystem(**dict(self.s3_options))
        return self._fs

    def _remote(self, key: str = "") -> str:
        base = self.url.removeprefix("s3://")
        return f"{base}/{key}" if key else base

    def remote_sizes(self) -> dict[str, int]:
        """Every key under the prefix -> its size."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self._remote(), detail=True)
        except FileNotFoundError:
            return {}
        base = self._remote() + "/"
        return {path.removeprefix(base): int(info["size"]) for path, info in found.items()
                if path.startswith(base) and info.get("type") != "directory"}

    def pull(self, *, skip_suffixes: Iterable[str] = ()) -> list[str]:
        """Download every key whose local copy is missing or of another size (except those ending in
        `skip_suffixes`); returns the keys fetched. Each lands under a temporary name and is renamed."""
        skipped = tuple(skip_suffixes)
        fetched = []
        for key, size in sorted(self.remote_sizes().items()):
            target = self.local / key
            if key.endswith(skipped) or (target.is_file() and target.stat().st_size == size):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.pull-{os.getpid()}")
            self.fs.get_file(self._remote(key), str(partial))
            os.replace(partial, target)
            fetched.append(key)
        self._record({key: _signature(self.local / key) for key in fetched})
        return fetched

    def push(self) -> list[str]:
        """Upload every local file that changed since the last push or pull, tier by tier (`commit_tier`); returns
        the keys uploaded."""
        pushed = self._state()
        changed: dict[str, tuple[int, int]] = {}
        for path in sorted(self.local.rglob("*")) if self.local.is_dir() else []:
            key = path.relative_to(self.local).as_posix()
            if not path.is_file() or _is_private(key):
                continue
            signature = _signature(path)
            if pushed.get(key) != list(signature):
                changed[key] = signature
        for tier in range(6):
            keys = sorted(k for k in changed if commit_tier(k) == tier)
            for key in keys:
                self.fs.put_file(str(self.local / key), self._remote(key))
            self._record({key: changed[key] for key in keys})
        return sorted(changed, key=lambda k: (commit_tier(k), k))

    def clear(self) -> None:
        """Remove everything under the prefix and the mirror (`--overwrite`)."""
        import shutil

        if self.fs.exists(self._remote()):
            self.fs.rm(self._remote(), recursive=True)
        shutil.rmtree(self.local, ignore_errors=True)

    def _state(self) -> dict[str, list[int]]:
        """What the mirror last pulled or pushed: key -> [size, mtime_ns] of the local file then."""
        import json

        path = self.local / _STATE_NAME
        return json.loads(path.read_text()) if path.exists() else {}

    def _record(self, signatures: Mapping[str, tuple[int, int]]) -> None:
        import json

        if not signatures:
            return
        state = self._state()
        state.update({key: list(value) for key, value in signatures.items()})
        self.local.mkdir(parents=True, exist_ok=True)
        partial = self.local / f"{_STATE_NAME}.{os.getpid()}"
        partial.write_text(json.dumps(state, sort_keys=True))
        os.replace(partial, self.local / _STATE_NAME)


def _is_private(key: str) -> bool:
    parts = key.split("/")
    return parts[0] in _NEVER_UPLOADED or any(part.startswith(".") for part in parts)


def _signature(path: pathlib.Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


MIRRORS_ENV = "VLAFORGE_MIRRORS"
"""The mirrors of this run, as JSON {local directory: s3 URL}: set by the CLI, inherited by the processes it starts
(torchrun's ranks), read by whoever pushes while the run goes on (the job tasks after each group of units, the
trainer after each checkpoint)."""


def register(mirror: ObjectMirror) -> None:
    """Make `mirror` known to this process and its children (`mirror_of`)."""
    import json

    known = json.loads(os.environ.get(MIRRORS_ENV, "{}"))
    known[str(mirror.local)] = mirror.url
    os.environ[MIRRORS_ENV] = json.dumps(known, sort_keys=True)


def mirror_of(path: str | os.PathLike) -> ObjectMirror | None:
    """The registered mirror whose local directory is `path` or holds it, or None (a plain local output)."""
    import json

    resolved = pathlib.Path(path).expanduser().resolve()
    for local, url in json.loads(os.environ.get(MIRRORS_ENV, "{}")).items():
        root = pathlib.Path(local).resolve()
        if resolved == root or root in resolved.parents:
            return ObjectMirror(url=url, local=pathlib.Path(local), s3_options=s3_options_from_environment())
    return None
