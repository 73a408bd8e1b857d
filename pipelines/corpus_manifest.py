"""The corpus manifest: the mixture a trainer consumes, in one JSON file (schema in docs/corpus.md).

`build_corpus` reads dataset outputs (robot: `manifest.parquet` + `stats.json` from an ingest; VL: the same
`manifest.parquet`, with `summary.json` saying `"kind": "vl"`) and lists every shard of every component with its
split, sample count, size and sha256. Shard and statistics URLs are written relative to the corpus file, so the
tree (datasets and corpus file together) can be moved, served over HTTP or copied to S3 as it is. The file is
deterministic: the same inputs and options give the same bytes.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import os
import pathlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vlaforge.pipelines.atomic_files import atomic_create_bytes, atomic_write_bytes
from vlaforge.pipelines.job import SUMMARY_NAME
from vlaforge.pipelines.norm_stats import STATS_NAME
from vlaforge.pipelines.shards.manifest import MANIFEST_NAME, code_version, read_manifest

CORPUS_FORMAT = "vlaforge.corpus/1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CorpusError(ValueError):
    """A corpus manifest, or an input to one, that cannot be used; the message says which file and how to fix it."""


class ComponentKind(str, enum.Enum):
    ROBOT = "robot"
    VL = "vl"


@dataclasses.dataclass(frozen=True)
class CorpusShard:
    url: str
    """Relative to the corpus manifest's URL (or absolute)."""
    split: str
    samples: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "split": self.split, "samples": self.samples, "bytes": self.bytes,
                "sha256": self.sha256}


@dataclasses.dataclass(frozen=True)
class CorpusComponent:
    name: str
    kind: ComponentKind
    weight: float
    """Share of its kind's draws; the weights of a kind sum to 1."""
    dataset: str
    stats_url: str | None
    """Normalization statistics (robot components), relative like the shard URLs."""
    shards: tuple[CorpusShard, ...]
    task: str | None = None
    """The VL task (grounding, caption, ...) when the dataset's summary names one."""

    def shards_of(self, split: str) -> tuple[CorpusShard, ...]:
        return tuple(shard for shard in self.shards if shard.split == split)

    def samples_of(self, split: str) -> int:
        return sum(shard.samples for shard in self.shards if shard.split == split)

    def as_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "shards"}
        return {**fields, "kind": self.kind.value, "shards": [shard.as_dict() for shard in self.shards]}


@dataclasses.dataclass(frozen=True)
class CorpusManifest:
    components: tuple[CorpusComponent, ...]
    ratio: dict[str, float]
    """Draws per kind, e.g. {"vl": 1, "robot": 6} for VL:robot = 1:6."""
    seed: int
    lineage: tuple[dict[str, str], ...]
    """{"component", "file", "sha256"} of every input file (dataset manifests and statistics)."""
    created_by: str
    format: str = CORPUS_FORMAT

    def component(self, name: str) -> CorpusComponent:
        by_name = {c.name: c for c in self.components}
        if name not in by_name:
            close = difflib.get_close_matches(name, by_name, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CorpusError(f"the corpus has no component {name!r}{hint} (it has {sorted(by_name)})")
        return by_name[name]

    def kind_shares(self) -> dict[str, float]:
        """Share of all draws per kind that has components (a ratio naming an absent kind is renormalized)."""
        present = {c.kind.value for c in self.components}
        total = sum(v for k, v in self.ratio.items() if k in present)
        return {kind: self.ratio[kind] / total for kind in sorted(present)}

    def to_json(self) -> bytes:
        """JSON with one line per shard and per lineage entry: readable, and ~200 bytes a shard at any scale."""
        head = {"format": self.format, "created_by": self.created_by, "seed": self.seed, "ratio": self.ratio}
        lines = ["{", *(f" {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()),
                 ' "components": [']
        for index, component in enumerate(self.components):
            fields = component.as_dict()
            shards = fields.pop("shards")
            opening = ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in fields.items())
            lines.append(f'  {{{opening}, "shards": [')
            lines += [f"   {json.dumps(shard)}{_comma(i, shards)}" for i, shard in enumerate(shards)]
            lines.append(f"  ]}}{_comma(index, self.components)}")
        lines += [" ],", ' "lineage": [']
        lines += [f"  {json.dumps(entry)}{_comma(i, self.lineage)}" for i, entry in enumerate(self.lineage)]
        lines += [" ]", "}", ""]
        return "\n".join(lines).encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> CorpusManifest:
        """Parse and validate a corpus manifest; `source` (its URL) names it in errors."""
        try:
            body = json.loads(data)
        except json.JSONDecodeError as error:
            raise CorpusError(f"{source}: not JSON ({error}); is this a corpus manifest?") from None
        if not isinstance(body, dict) or body.get("format") != CORPUS_FORMAT:
            found = body.get("format") if isinstance(body, dict) else type(body).__name__
            raise CorpusError(f"{source}: format is {found!r}, expected {CORPUS_FORMAT!r}; write it with "
                              "`vlaforge corpus build`")
        try:
            components = tuple(_component(c) for c in body["components"])
            manifest = cls(components=components, ratio={str(k): float(v) for k, v in body["ratio"].items()},
                           seed=int(body["seed"]), lineage=tuple(body["lineage"]), created_by=body["created_by"])
        except (KeyError, TypeError, ValueError) as error:
            raise CorpusError(f"{source}: malformed corpus manifest ({type(error).__name__}: {error})") from None
        manifest.validate(source)
        return manifest

    def validate(self, source: str) -> None:
        names = [c.name for c in self.components]
        if not names:
            raise CorpusError(f"{source}: the corpus has no components")
        if len(set(names)) != len(names):
            raise CorpusError(f"{source}: component names repeat: {sorted(names)}")
        for kind in {c.kind for c in self.components}:
            if self.ratio.get(kind.value, 0) <= 0:
                raise CorpusError(f"{source}: the ratio {self.ratio} gives kind {kind.value!r} no draws")
            total = sum(c.weight for c in self.components if c.kind is kind)
            if abs(total - 1) > 1e-6:
                raise CorpusError(f"{source}: weights of kind {kind.value!r} sum to {total}, not 1")


def _comma(index: int, items: Sequence[Any]) -> str:
    return "," if index < len(items) - 1 else ""


def _component(body: dict[str, Any]) -> CorpusComponent:
    shards = tuple(CorpusShard(url=s["url"], split=s["split"], samples=int(s["samples"]), bytes=int(s["bytes"]),
                               sha256=s["sha256"]) for s in body["shards"])
    return CorpusComponent(name=body["name"], kind=ComponentKind(body["kind"]), weight=float(body["weight"]),
                           dataset=body["dataset"], stats_url=body.get("stats_url"), shards=shards,
                           task=body.get("task"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorpusInput:
    """One dataset to put in the corpus."""

    path: pathlib.Path
    """The dataset's output directory (holding manifest.parquet)."""
    kind: ComponentKind
    name: str | None = None
    """Component name; None: the dataset name in its manifest."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """How the datasets mix."""

    ratio: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"vl": 1.0, "robot": 6.0})
    """Draws per kind; the recipe's VL:robot is 1:6."""
    seed: int = 0
    """Seed of the shard order and the in-block shuffles (a trainer may override it)."""
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Component name -> share of its kind's draws. Unnamed components share the rest in proportion to their
    samples; if every component of a kind is named, its shares must sum to 1."""
    weight_split: str = "train"
    """The split whose sample counts set the default weights."""

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.ratio.items() if k not in {kind.value for kind in ComponentKind} or v < 0}
        if bad or not any(v > 0 for v in self.ratio.values()):
            raise CorpusError(f"CorpusConfig.ratio needs kinds 'vl'/'robot' with draws >= 0 (some > 0); got "
                              f"{dict(self.ratio)}")
        bad_weights = {k: v for k, v in self.weights.items() if not 0 < v <= 1}
        if bad_weights:
            raise CorpusError(f"CorpusConfig.weights are shares in (0, 1]; got {bad_weights}")


def build_corpus(inputs: Sequence[CorpusInput], output: pathlib.Path, config: CorpusConfig) -> CorpusManifest:
    """The corpus manifest of `inputs`, with URLs relative to `output` (the corpus file to be written)."""
    if not inputs:
        raise CorpusError("a corpus needs at least one dataset (--robot DIR or --vl DIR)")
    base = pathlib.Path(output).resolve().parent
    loaded = [_load_input(item, base) for item in inputs]
    names = [c["name"] for c, _ in loaded]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CorpusError(f"component names repeat: {repeated}; name them with NAME=DIR")
    unknown = sorted(set(config.weights) - set(names))
    if unknown:
        close = {u: difflib.get_close_matches(u, names, n=1) for u in unknown}
        raise CorpusError(f"weights name no component: {close} (components: {names})")
    weights = _weights([(c["name"], c["kind"], _split_samples(c["shards"], config.weight_split))
                        for c, _ in loaded], config.weights)
    components = tuple(CorpusComponent(**c, weight=weights[c["name"]]) for c, _ in loaded)
    manifest = CorpusManifest(components=components, ratio={k: float(v) for k, v in config.ratio.items()},
                              seed=config.seed, lineage=tuple(entry for _, lineage in loaded for entry in lineage),
                              created_by=code_version())
    manifest.validate(str(output))
    return manifest


def write_corpus(manifest: CorpusManifest, output: pathlib.Path, *, overwrite: bool = False) -> pathlib.Path:
    """Write `corpus.json`. A different corpus already at `output` (written before, or by a build running at the same
    time) is refused unless `overwrite`: trainers may be reading it. The same bytes again are no change."""
    output, data = pathlib.Path(output), manifest.to_json()
    if overwrite:
        atomic_write_bytes(output, data)
        return output
    try:
        atomic_create_bytes(output, data)
    except FileExistsError:
        existing = output.read_bytes()
        if existing != data:
            raise CorpusError(f"{output} already holds another corpus ({_described(existing)}); a second build to "
                              "one path would replace it under whoever reads it. Fix: pass --overwrite to replace "
                              "it, or write to another --output") from None
    return output


def _described(data: bytes) -> str:
    try:
        document = json.loads(data)
        names = ", ".join(c["name"] for c in document["components"])
        return f"components {names}, seed {document['seed']}, sha256 {hashlib.sha256(data).hexdigest()[:12]}"
    except (ValueError, KeyError, TypeError):
        return f"{len(data)} bytes that are not a corpus manifest"


def _load_input(item: CorpusInput, base: pathlib.Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The component fields (all but the weight) and the lineage entries of one input dataset."""
    root = pathlib.Path(item.path)
    root = root.parent if root.name == MANIFEST_NAME else root
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CorpusError(f"{root}: no {MANIFEST_NAME}; pass a dataset directory that an ingest (or a VL generator) "
                          "finished writing")
    records = read_manifest(manifest_path)
    if not records:
        raise CorpusError(f"{manifest_path}: the manifest lists no shards")
    summary = _summary(root)
    declared = summary.get("kind", ComponentKind.ROBOT.value)
    if declared != item.kind.value:
        raise CorpusError(f"{root}: given as a {item.kind.value} dataset, but its {SUMMARY_NAME} says kind "
                          f"{declared!r}; pass it with --{declared}")
    datasets = sorted({r.dataset for r in records})
    name = item.name or (datasets[0] if len(datasets) == 1 else root.name)
    if not _NAME.match(name):
        raise CorpusError(f"{root}: component name {name!r} may hold letters, digits, '_', '-' and '.'; "
                          "name it with NAME=DIR")
    lineage = [{"component": name, "file": _relative(manifest_path, base), "sha256": _sha256(manifest_path)}]
    stats_url = None
    if item.kind is ComponentKind.ROBOT:
        stats = root / STATS_NAME
        if not stats.is_file():
            raise CorpusError(f"{root}: a robot dataset needs {STATS_NAME} (normalization statistics); rerun its "
                              "ingest to the end, which writes it")
        stats_url = _relative(stats, base)
        lineage.append({"component": name, "file": stats_url, "sha256": _sha256(stats)})
    prefix = _relative(root, base)
    shards = tuple(CorpusShard(url=posixpath.normpath(posixpath.join(prefix, r.url)), split=r.split,
                               samples=r.samples, bytes=r.bytes, sha256=r.sha256) for r in records)
    fields = {"name": name, "kind": item.kind, "dataset": ",".join(datasets), "stats_url": stats_url,
              "shards": shards, "task": summary.get("task")}
    return fields, lineage


def _weights(components: list[tuple[str, ComponentKind, int]], given: Mapping[str, float]) -> dict[str, float]:
    """Share of its kind's draws per component: `given` ones as given, the rest of the kind by sample count."""
    weights: dict[str, float] = {}
    for kind in ComponentKind:
        members = [(name, samples) for name, k, samples in components if k is kind]
        fixed = sum(given.get(name, 0) for name, _ in members)
        free = [(name, samples) for name, samples in members if name not in given]
        if fixed > 1 + 1e-9 or (not free and members and abs(fixed - 1) > 1e-9):
            raise CorpusError(f"the given weights of {kind.value} components sum to {fixed}; they must sum to 1 "
                              "when every component of the kind is given, and to less otherwise")
        free_samples = sum(samples for _, samples in free)
        if free and (free_samples == 0 or fixed >= 1 - 1e-9):
            raise CorpusError(f"the {kind.value} components {[n for n, _ in free]} would get no draws (given weights "
                              f"sum to {fixed}, their samples to {free_samples})")
        for name, _ in members:
            weights[name] = given[name] if name in given else (1 - fixed) * dict(free)[name] / free_samples
    return weights


def _split_samples(shards: Sequence[CorpusShard], split: str) -> int:
    return sum(shard.samples for shard in shards if shard.split == split)


def _summary(root: pathlib.Path) -> dict[str, Any]:
    path = root / SUMMARY_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CorpusError(f"{path}: not JSON ({error}); rewrite it by rerunning the dataset's job") from None


def _relative(path: pathlib.Path, base: pathlib.Path) -> str:
    return pathlib.PurePath(os.path.relpath(path.resolve(), base)).as_posix()


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()
