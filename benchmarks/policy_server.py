"""Policy server overhead: the round trip of one request minus the policy's own inference time, at the observation
sizes of an ALOHA robot (three 480x640 cameras and a 14-D state), against the same request answered in-process.

    .venv/bin/python benchmarks/policy_server.py [--requests 50] [--quick]

Rows, all on one machine, side by side:
- in-process: `Session.infer` called directly (observation mapping, the three frames resized, the policy): the
  baseline, no socket and no serialization;
- our client -> server and openpi-client -> server: the same observations over the websocket (msgpack-numpy);
- the same with a null policy (a fixed chunk, no model): what the protocol itself costs.
Overhead = round trip - the policy's `infer_ms` as the server reports it, so it holds serialization, the socket,
the server's observation mapping (the resize of three frames) and scheduling. The target is under 5 ms.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy
from vlaforge.training.policy.client import PolicyClient
from vlaforge.training.policy.observation_map import ObservationMap
from vlaforge.training.policy.policy import Policy
from vlaforge.training.policy.served_policy import ACTIONS, INFER_MS, POLICY_TIMING, ServedPolicy
from vlaforge.training.policy.server import PolicyServer

CAMERAS = {"images/cam_high": "exterior_1", "images/cam_left_wrist": "left_wrist",
           "images/cam_right_wrist": "right_wrist"}
MAP = {"embodiment": "bimanual_2x6dof", "cameras": CAMERAS, "default_prompt": "fold the towel",
       "image_size": [224, 224]}


def observation(rng: np.random.Generator) -> dict:
    """An ALOHA-sized observation: three 480x640 uint8 cameras (2.7 MiB), a 14-D state."""
    images = {key.split("/")[1]: rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for key in CAMERAS}
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


def measure(call, observations: list[dict]) -> tuple[list[float], list[float]]:
    """(round trips ms, policy infer ms) per request; the first request warms up and is left out."""
    call(observations[0])
    trips, infers = [], []
    for obs in observations[1:]:
        started = time.perf_counter()
        response = call(obs)
        trips.append((time.perf_counter() - started) * 1e3)
        infers.append(response[POLICY_TIMING][INFER_MS])
    return trips, infers


def row(name: str, trips: list[float], infers: list[float], baseline: float | None) -> list[str]:
    overhead = [t - i for t, i in zip(trips, infers)]
    p50 = statistics.median(trips)
    return [name, f"{p50:.2f}", f"{statistics.median(infers):.2f}", f"{statistics.median(overhead):.2f}",
            f"{np.percentile(overhead, 95):.2f}", "-" if baseline is None else f"{p50 / baseline:.2f}x"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10 requests")
    args = parser.parse_args()
    count = 10 if args.quick else args.requests
    rng = np.random.default_rng(0)
    observations = [observation(rng) for _ in range(count + 1)]
    directory = write_tiny_policy(pathlib.Path(tempfile.mkdtemp()) / "policy", TinyPolicySpec(observation_map=MAP))
    served = ServedPolicy(Policy.from_pretrained(directory), ObservationMap.load(directory / "observation_map.json"))
    rows = []
    trips, infers = measure(served.session().infer, observations)
    baseline = statistics.median(trips)
    rows.append(row("in-process (baseline)", trips, infers, None))
    for name, endpoint in (("tiny policy", served), ("null policy", NullEndpoint(served))):
        server = PolicyServer(endpoint, port=0)
        url = server.start()
        try:
            with PolicyClient(url) as client:
                rows.append(row(f"vlaforge client -> server, {name}", *measure(client.infer, observations),
                                baseline))
            try:
                from openpi_client.websocket_client_policy import WebsocketClientPolicy
            except ImportError:
                pass
            else:
                openpi = WebsocketClientPolicy(url)
                rows.append(row(f"openpi-client -> server, {name}", *measure(openpi.infer, observations), baseline))
        finally:
            server.stop()
    header = ["path", "round trip p50 ms", "policy p50 ms", "overhead p50 ms", "overhead p95 ms", "vs in-process"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    size = sum(image.nbytes for image in observations[0]["images"].values()) / 2**20
    print(f"{count} requests, 3 cameras 480x640 + 14-D state ({size:.1f} MiB per observation)")
    for line in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
