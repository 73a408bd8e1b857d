"""`vlaforge serve-policy --policy DIR`: an exported policy behind openpi's websocket protocol, until Ctrl-C.

Robot clients written for openpi (`openpi_client.websocket_client_policy.WebsocketClientPolicy`) and `vlaforge eval
sim --policy ws://HOST:PORT` talk to it (`training/policy/server.py`). Which observation keys hold the cameras, the
state and the prompt comes from `--observation-map FILE`, else the policy directory's `observation_map.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from rich.console import Console
from rich.table import Table

from vlaforge.flows.cli_options import height_width


def add_parser(verbs: argparse._SubParsersAction) -> None:
    serve = verbs.add_parser("serve-policy", help="serve an exported policy to robot clients (openpi's protocol)")
    serve.add_argument("--policy", required=True, type=pathlib.Path, help="exported policy directory (policy/)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000, openpi's)")
    serve.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when there is one)")
    serve.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="model dtype (default: as saved)")
    serve.add_argument("--observation-map", type=pathlib.Path,
                       help="JSON observation map (default: <policy>/observation_map.json)")
    serve.add_argument("--embodiment", help="normalization key to serve (default: the map's)")
    serve.add_argument("--image-size", type=height_width, help="HEIGHTxWIDTH frames reach the model at (default: "
                                                                "the map's)")
    serve.add_argument("--seed", type=int, default=0, help="noise seed of each connection (default 0)")


def load_observation_map(policy: pathlib.Path, path: pathlib.Path | None, embodiment: str | None,
                         image_size: tuple[int, int] | None):
    """The map a server for `policy` reads observations with, the options applied."""
    from vlaforge.training.policy.observation_map import MAP_FILE, ObservationMap

    source = path or policy / MAP_FILE
    if not source.is_file():
        raise ValueError(f"no observation map: {policy / MAP_FILE} does not exist. Write one (for example "
                         '{"embodiment": "bimanual_2x6dof", "cameras": {"images/cam_high": "exterior_1"}, '
                         '"state": "state", "prompt": "prompt"}) or pass --observation-map FILE')
    mapping = ObservationMap.load(source)
    changes = {k: v for k, v in (("embodiment", embodiment), ("image_size", image_size)) if v is not None}
    return dataclasses.replace(mapping, **changes)


def run(args: argparse.Namespace, console: Console) -> int:
    import torch

    from vlaforge.training.policy.policy import Policy
    from vlaforge.training.policy.served_policy import ServedPolicy
    from vlaforge.training.policy.server import PolicyServer

    mapping = load_observation_map(args.policy, args.observation_map, args.embodiment, args.image_size)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    policy = Policy.from_pretrained(args.policy, dtype=getattr(torch, args.dtype) if args.dtype else None,
                                    device=device)
    served = ServedPolicy(policy, mapping, seed=args.seed)
    server = PolicyServer(served, host=args.host, port=args.port)
    console.print(_metadata_table(served.metadata))
    console.print(f"serving {args.policy} on {server.url} ({device}); health: "
                  f"http://{args.host}:{args.port}/healthz; Ctrl-C stops", markup=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    return 0


def _metadata_table(metadata: dict) -> Table:
    table = Table(title=f"observation a client sends ({metadata['embodiment']}); it gets back "
                        f"actions {metadata['actions']['shape']}")
    for column in ("key", "kind", "dtype", "shape", "required"):
        table.add_column(column)
    for key, entry in metadata["observation"].items():
        shape = "[" + ", ".join("N" if n is None else str(n) for n in entry["shape"]) + "]"
        table.add_row(key, entry["kind"], entry["dtype"], shape, "yes" if entry["required"] else "no")
    return table
