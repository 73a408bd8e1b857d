"""`vlaforge corpus build|inspect|verify`: write a corpus manifest, look inside one, check every shard's sha256."""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import pathlib
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from vlaforge.pipelines.corpus_manifest import (
    ComponentKind,
    CorpusConfig,
    CorpusInput,
    CorpusManifest,
    build_corpus,
    write_corpus,
)
from vlaforge.pipelines.corpus_plan import RECIPE_BATCH, RECIPE_STEPS, scale_plan

_SHOWN_TEXT = 70


def _named_path(kind: ComponentKind):
    def parse(text: str) -> CorpusInput:
        name, _, path = text.rpartition("=")
        return CorpusInput(path=pathlib.Path(path), kind=kind, name=name or None)

    return parse


def _ratio(text: str) -> dict[str, float]:
    try:
        vl, robot = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratio takes VL:ROBOT draws, e.g. 1:6; got {text!r}") from None
    return {ComponentKind.VL.value: vl, ComponentKind.ROBOT.value: robot}


def _weight(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weight takes NAME=SHARE, e.g. droid=0.4; got {text!r}") from None


def add_parser(verbs: argparse._SubParsersAction) -> None:
    corpus = verbs.add_parser("corpus", help="build, inspect or verify a corpus manifest")
    actions = corpus.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="write a corpus manifest from dataset outputs")
    build.add_argument("--robot", type=_named_path(ComponentKind.ROBOT), action="append", default=[],
                       metavar="[NAME=]DIR", help="a robot dataset (an ingest's output directory)")
    build.add_argument("--vl", type=_named_path(ComponentKind.VL), action="append", default=[],
                       metavar="[NAME=]DIR", help="a VL dataset directory")
    build.add_argument("--output", required=True, type=pathlib.Path, help="the corpus manifest to write (JSON)")
    build.add_argument("--ratio", type=_ratio, default=_ratio("1:6"), help="VL:robot draws (default 1:6)")
    build.add_argument("--seed", type=int, default=0, help="shard order and shuffle seed (default 0)")
    build.add_argument("--weight", type=_weight, action="append", default=[], metavar="NAME=SHARE",
                       help="a component's share of its kind's draws (default: in proportion to samples)")
    build.add_argument("--overwrite", action="store_true",
                       help="replace a different corpus already at --output (refused without it)")
    inspect = actions.add_parser("inspect", help="counts, ratios, the run-scale plan and a few decoded samples")
    inspect.add_argument("url", help="corpus manifest: path, file://, http(s):// or s3://")
    inspect.add_argument("--split", default="train", help="split to count and sample (default train)")
    inspect.add_argument("--samples", type=int, default=2, help="decoded samples shown per component (default 2)")
    inspect.add_argument("--steps", type=int, default=RECIPE_STEPS, help=f"run length (default {RECIPE_STEPS})")
    inspect.add_argument("--batch-size", type=int, default=RECIPE_BATCH, help=f"(default {RECIPE_BATCH})")
    verify = actions.add_parser("verify", help="check every shard's size and sha256 (exit 1 on any mismatch)")
    verify.add_argument("url", help="corpus manifest: path, file://, http(s):// or s3://")
    verify.add_argument("--split", help="only this split (default: every split)")
    verify.add_argument("--workers", type=int, default=8, help="shards hashed at once (default 8)")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    for parser in (inspect, verify):
        parser.add_argument("--s3-endpoint-url",
                            default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                            help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL)")


def run(args: argparse.Namespace, console: Console) -> int:
    if args.action == "build":
        return _build(args, console)
    from vlaforge.pipelines.shards.urls import ShardOpener

    options = {"endpoint_url": args.s3_endpoint_url} if args.s3_endpoint_url else {}
    opener = ShardOpener(ShardOpener.Config(s3_options=options))
    try:
        data = opener.read_bytes(args.url)
    except OSError as error:
        console.print(f"error: cannot read the corpus manifest: {error}", markup=False)
        return 2
    manifest = CorpusManifest.from_json(data, args.url)
    if args.action == "inspect":
        return _inspect(args, manifest, opener, hashlib.sha256(data).hexdigest(), console)
    return _verify(args, manifest, opener, console)


def _build(args: argparse.Namespace, console: Console) -> int:
    config = CorpusConfig(ratio=args.ratio, seed=args.seed, weights=dict(args.weight))
    manifest = build_corpus([*args.robot, *args.vl], args.output, config)
    write_corpus(manifest, args.output, overwrite=args.overwrite)
    console.print(f"wrote {args.output}: {len(manifest.components)} components, "
                  f"{sum(len(c.shards) for c in manifest.components)} shards", markup=False)
    console.print(components_table(manifest, "train"))
    return 0


def components_table(manifest: CorpusManifest, split: str) -> Table:
    shares = manifest.kind_shares()
    ratio = ":".join(f"{manifest.ratio.get(k, 0):g}" for k in (ComponentKind.VL.value, ComponentKind.ROBOT.value))
    table = Table(title=f"corpus (VL:robot {ratio}, seed {manifest.seed}); samples and shards of split {split!r}")
    for column in ("component", "kind", "task", "shards", "samples", "other splits", "weight", "draw share"):
        table.add_column(column, justify="left" if column in ("component", "kind", "task") else "right")
    for c in manifest.components:
        others = sorted({s.split for s in c.shards} - {split})
        table.add_row(c.name, c.kind.value, c.task or "", f"{len(c.shards_of(split)):,}", f"{c.samples_of(split):,}",
                      ", ".join(f"{s} {c.samples_of(s):,}" for s in others), f"{c.weight:.4f}",
                      f"{shares[c.kind.value] * c.weight:.2%}")
    for kind in shares:
        total = sum(c.samples_of(split) for c in manifest.components if c.kind.value == kind)
        table.add_row(f"all {kind}", kind, "", "", f"{total:,}", "", "1", f"{shares[kind]:.2%}", style="bold")
    return table


def plan_table(manifest: CorpusManifest, split: str, steps: int, batch_size: int) -> Table:
    table = Table(title=f"a run: {steps:,} steps x {batch_size:,} = {steps * batch_size:,} draws")
    for column in ("component", "kind", "samples", "draws", "epochs"):
        table.add_column(column, justify="left" if column in ("component", "kind") else "right")
    for row in scale_plan(manifest, split=split, steps=steps, batch_size=batch_size):
        table.add_row(row.component, row.kind, f"{row.samples:,}", f"{row.draws:,}", f"{row.epochs:.2f}")
    return table


def _inspect(args: argparse.Namespace, manifest: CorpusManifest, opener: Any, digest: str, console: Console) -> int:
    console.print(f"{args.url}\n  {manifest.format}, written by {manifest.created_by}, sha256 {digest}", markup=False)
    console.print(components_table(manifest, args.split))
    console.print(plan_table(manifest, args.split, args.steps, args.batch_size))
    if args.samples > 0:
        console.print(samples_table(manifest, args, opener))
    return 0


def samples_table(manifest: CorpusManifest, args: argparse.Namespace, opener: Any) -> Table:
    """The first few samples of each component's first shard, decoded (never unpickled)."""
    from vlaforge.pipelines.shards.reader import ShardEntry, ShardReader
    from vlaforge.pipelines.shards.urls import resolve_url

    reader = ShardReader(opener=opener)
    table = Table(title=f"first {args.samples} samples of each component ({args.split})")
    for column in ("component", "key", "members"):
        table.add_column(column)
    for component in manifest.components:
        shards = component.shards_of(args.split)
        if not shards:
            continue
        shard = shards[0]
        entry = ShardEntry(resolve_url(args.url, shard.url), shard.samples, shard.bytes, shard.sha256)
        for sample in reader.samples(entry, [(0, min(args.samples, shard.samples))]):
            members = {k: v for k, v in sample.items() if not k.startswith("__")}
            table.add_row(component.name, sample["__key__"], describe(members))
    return table


def describe(members: dict[str, bytes]) -> str:
    """One line per member with its size: array shapes, image sizes, the meta fields and conversation text."""
    from vlaforge.datasets.frames import jpeg_shape
    from vlaforge.pipelines.shards.members import decode_member

    lines = []
    for name, data in sorted(members.items()):
        head = f"{name} ({len(data):,} B)"
        if name.endswith(".jpg"):
            lines.append(f"{head}: JPEG {'x'.join(map(str, jpeg_shape(data)))}")
        elif name.endswith(".npy"):
            array = decode_member(name, data)
            lines.append(f"{head}: {array.dtype} {tuple(array.shape)}")
        elif name == "conversation.json":
            lines.append(head)
            for message in decode_member(name, data):
                text = " ".join(p.get("text", "<image>") for p in message["content"])
                lines.append(f"  {message['role']}: {_short(text)}")
        elif name.endswith(".json"):
            meta = decode_member(name, data)
            keys = ("embodiment", "episode_id", "step", "task", "source_key", "instruction")
            shown = [f"{k}: {_short(str(meta[k]))}" for k in keys if isinstance(meta, dict) and k in meta]
            lines += [head, *(f"  {line}" for line in shown)]
    return "\n".join(lines)


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN_TEXT else text[: _SHOWN_TEXT - 3] + "..."


def _verify(args: argparse.Namespace, manifest: CorpusManifest, opener: Any, console: Console) -> int:
    from vlaforge.pipelines.shards.reader import sha256_of
    from vlaforge.pipelines.shards.urls import resolve_url

    jobs = [(c.name, s, resolve_url(args.url, s.url)) for c in manifest.components for s in c.shards
            if args.split is None or s.split == args.split]

    def check(job: tuple[str, Any, str]) -> str | None:
        _, shard, url = job
        try:
            digest, size = sha256_of(opener, url)
        except OSError as error:
            return f"unreadable: {error}"
        if size != shard.bytes:
            return f"{size:,} bytes, the manifest says {shard.bytes:,}"
        return None if digest == shard.sha256 else f"sha256 {digest}, the manifest says {shard.sha256}"

    problems: dict[str, list[tuple[str, str]]] = {c.name: [] for c in manifest.components}
    with Progress(console=console, disable=args.no_progress, transient=True) as progress:
        task = progress.add_task("hashing shards", total=len(jobs))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.workers, 1)) as pool:
            for job, problem in zip(jobs, pool.map(check, jobs)):
                if problem:
                    problems[job[0]].append((job[2], problem))
                progress.advance(task)
    console.print(_verify_table(manifest, jobs, problems))
    for name, failed in problems.items():
        for url, problem in failed:
            console.print(f"BAD {name}: {url}: {problem}", markup=False, soft_wrap=True)
    bad = sum(len(failed) for failed in problems.values())
    console.print(f"{len(jobs) - bad} of {len(jobs)} shards match the manifest" + (f"; {bad} do not" if bad else ""),
                  markup=False)
    return 1 if bad else 0


def _verify_table(manifest: CorpusManifest, jobs: list, problems: dict[str, list]) -> Table:
    table = Table(title="shards checked against the corpus manifest")
    for column in ("component", "shards", "bytes", "ok", "bad"):
        table.add_column(column, justify="left" if column == "component" else "right")
    for component in manifest.components:
        mine = [shard for name, shard, _ in jobs if name == component.name]
        bad = len(problems[component.name])
        table.add_row(component.name, str(len(mine)), f"{sum(s.bytes for s in mine):,}", str(len(mine) - bad),
                      str(bad), style="red" if bad else None)
    return table
