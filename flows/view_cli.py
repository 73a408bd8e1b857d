"""`vlaforge view SHARDS_DIR|corpus.json [--episode ID]`: a page per robot episode (`pipelines/episode_pages.py`):
the cameras to scrub, state and action curves with their names, the instruction, flags and lineage; written to a
directory, and served with `--serve`."""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import pathlib

from rich.console import Console


def add_parser(verbs: argparse._SubParsersAction) -> None:
    view = verbs.add_parser("view", help="write (or serve) a page per episode of a robot dataset or corpus")
    view.add_argument("source", help="a robot dataset directory, or a corpus manifest (path, file://, http(s)://, "
                                     "s3://)")
    view.add_argument("--episode", help="only this episode id")
    view.add_argument("--output", type=pathlib.Path, default=pathlib.Path("view"),
                      help="where the pages go (default ./view)")
    view.add_argument("--max-episodes", type=int, default=20, help="pages written at most (default 20)")
    view.add_argument("--serve", action="store_true", help="then serve the pages on 127.0.0.1 until Ctrl-C")
    view.add_argument("--port", type=int, default=8000, help="with --serve (default 8000; 0 picks a free one)")
    view.add_argument("--s3-endpoint-url",
                      default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                      help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL)")


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.pipelines.episode_pages import corpus_episodes, dataset_episodes, write_pages
    from vlaforge.pipelines.shards.urls import ShardOpener

    local = pathlib.Path(args.source)
    if local.is_dir():
        episodes = dataset_episodes(local, args.episode)
    else:
        options = {"endpoint_url": args.s3_endpoint_url} if args.s3_endpoint_url else {}
        episodes = corpus_episodes(args.source, ShardOpener(ShardOpener.Config(s3_options=options)), args.episode)
    pages = write_pages(episodes, args.output, limit=1 if args.episode else args.max_episodes)
    if not pages:
        raise ValueError(f"{args.source}: no episode {args.episode!r}" if args.episode else
                         f"{args.source}: no robot episode to show")
    console.print(f"wrote {len(pages)} episode pages and index.html under {args.output}", markup=False)
    if args.serve:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(args.output))
        with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
            console.print(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", markup=False)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
    return 0
