"""Policy server overhead: the round trip of one request minus the policy's own inference time, at the observation
sizes of an ALOHA robot (three 480x640 cameras and a 14-D state), against the same request answered in-process.

    .venv/bin/python benchmarks/policy_server.py [--requests 50] [--quick] [--device cuda --dtype bfloat16]

Rows, all on one machine, side by side (the paths take turns request by request):
- in-process: `Session.infer` called directly on a worker thread, as the server calls it (observation mapping, the
  frames resized, the policy): the baseline, no socket and no serialization;
- our client -> server and openpi-client -> server: the same observations over the websocket (msgpack-numpy);
- the same with a null policy (a fixed chunk, no model): what the protocol itself costs.
Overhead = round trip - the policy's `infer_ms` as the server reports it, so it holds serialization, the socket,
the server's observation mapping (the resize of three frames) and scheduling. The target is under 5 ms. Two frame
sizes: ALOHA's native 480x640, which the server resizes to the training size, and 224x224, resized on the client
before sending as openpi's ALOHA and LIBERO clients do.

On a CPU, the in-process worker and the server's inference thread each drive their own OpenMP team, and with the
paths taking turns one team may still spin while the other computes: the served policy then looks slower than the
in-process one (2.5x measured here with 2 threads, equal with OMP_NUM_THREADS=1). The overhead columns do not
depend on it (each is a request's round trip less that request's own policy time); the ratio column does, so
compare ratios under OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy
from vlaforge.training.policy.client import PolicyClient
from vlaforge.training.policy.observation_map import ObservationMap
from vlaforge.training.policy.policy import Policy
from vlaforge.training.policy.served_policy import ACTIONS, INFER_MS, POLICY_TIMING, ServedPolicy
from vlaforge.training.policy.server import PolicyServer

try:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
except ImportError:  # openpi-client is a test dependency; without it, only our client's rows
    WebsocketClientPolicy = None

CAMERAS = {"images/cam_high": "exterior_1", "images/cam_left_wrist": "left_wrist",
           "images/cam_right_wrist": "right_wrist"}
MAP = {"embodiment": "bimanual_2x6dof", "cameras": CAMERAS, "default_prompt": "fold the towel",
       "image_size": [224, 224]}


def observation(rng: np.random.Generator, size: tuple[int, int]) -> dict:
    """An ALOHA observation: three uint8 cameras of `size` (480x640: 2.6 MiB), a 14-D state."""
    images = {key.split("/")[1]: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for key in CAMERAS}
    return {"images": images, "state": rng.normal(0, 0.05, 14).astype(np.float32), "prompt": "fold the towel"}


class NullEndpoint:
    """The protocol without a model: the observation is mapped (frames resized) and a fixed chunk returned."""

    def __init__(self, served: ServedPolicy) -> None:
        self.served = served
        self.metadata = served.metadata

    def session(self):
        return self

    def infer(self, obs: dict) -> dict:
        self.served.map.parse(obs, self.served.state_dim, self.served.action_dim)
        return {ACTIONS: np.zeros((8, 14), np.float32), POLICY_TIMING: {INFER_MS: 0.0}}


def measure(paths: dict[str, Callable[[dict], dict]], observations: list[dict]) -> dict[str, tuple[list, list]]:
    """Per path, (round trips ms, policy infer ms) per request. The paths take turns request by request, so a load
    change on a shared machine hits every row alike; the first 3 requests of each warm up and are left out."""
    for obs in observations[:3]:
        for call in paths.values():
            call(obs)
    measured: dict[str, tuple[list, list]] = {name: ([], []) for name in paths}
    for obs in observations[1:]:
        for name, call in paths.items():
            started = time.perf_counter()
            response = call(obs)
            measured[name][0].append((time.perf_counter() - started) * 1e3)
            measured[name][1].append(response[POLICY_TIMING][INFER_MS])
    return measured


def row(name: str, trips: list[float], infers: list[float], baseline: float | None) -> list[str]:
    overhead = [t - i for t, i in zip(trips, infers)]
    p50 = statistics.median(trips)
    return [name, f"{p50:.2f}", f"{statistics.median(infers):.2f}", f"{statistics.median(overhead):.2f}",
            f"{np.percentile(overhead, 95):.2f}", "-" if baseline is None else f"{p50 / baseline:.2f}x"]


def compare(served: ServedPolicy, observations: list[dict], note: str) -> list[list[str]]:
    """The in-process baseline, then each client against the server with the tiny and the null policy."""
    servers = {name: PolicyServer(endpoint, port=0) for name, endpoint in
               (("tiny policy", served), ("null policy", NullEndpoint(served)))}
    # On a worker thread, as the server runs inference: torch's CPU kernels run at different speeds on the main
    # thread and on others on a loaded machine, and the comparison must not measure that.
    with contextlib.ExitStack() as stack:
        worker = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        session = served.session()
        paths = {"in-process (baseline)": lambda obs: worker.submit(session.infer, obs).result()}
        for name, server in servers.items():
            url = server.start()
            stack.callback(server.stop)
            paths[f"vlaforge client, {name}"] = stack.enter_context(PolicyClient(url)).infer
            if WebsocketClientPolicy is not None:
                paths[f"openpi-client, {name}"] = WebsocketClientPolicy(url).infer
        measured = measure(paths, observations)
    baseline = statistics.median(measured["in-process (baseline)"][0])
    return [row(f"{note}: {name}", *measured[name], None if name.startswith("in-process") else baseline)
            for name in paths]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10 requests")
    parser.add_argument("--device", default="cpu", help="cuda on a GPU machine: the served policy runs there")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="model dtype (default: as saved)")
    args = parser.parse_args()
    count = 10 if args.quick else args.requests
    rng = np.random.default_rng(0)
    directory = write_tiny_policy(pathlib.Path(tempfile.mkdtemp()) / "policy", TinyPolicySpec(observation_map=MAP))
    import torch

    policy = Policy.from_pretrained(directory, device=args.device,
                                    dtype=getattr(torch, args.dtype) if args.dtype else None)
    served = ServedPolicy(policy, ObservationMap.load(directory / "observation_map.json"))
    rows = []
    for size, note in (((480, 640), "480x640, server resizes"), ((224, 224), "224x224, client resized")):
        observations = [observation(rng, size) for _ in range(count + 1)]
        rows += compare(served, observations, note)
    header = ["path", "round trip p50 ms", "policy p50 ms", "overhead p50 ms", "overhead p95 ms", "vs in-process"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"{count} requests per row; 3 cameras + 14-D state; frames reach the tiny policy at 224x224")
    for line in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
