"""`vlaforge serve-policy` started as a user starts it (its own process), talked to by the real openpi-client."""

import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from vlaforge.flows.serve_policy_cli import load_observation_map


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_policy_dir):
    port = _free_port()
    vlaforge = pathlib.Path(sys.executable).with_name("vlaforge")
    process = subprocess.Popen([str(vlaforge), "serve-policy", "--policy", str(tiny_policy_dir), "--port", str(port),
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # openpi-client 0.1.2 does not retry: wait until the server is up
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"vlaforge serve-policy exited: {process.stdout.read()}")
            time.sleep(0.5)
    yield port, process
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def test_openpi_client_gets_actions_and_a_bad_observation_a_named_error(served):
    port, _ = served
    client = WebsocketClientPolicy(host="127.0.0.1", port=port)
    observation = {"images": {"top": np.zeros((480, 640, 3), np.uint8)}, "state": np.zeros(14, np.float32)}
    assert client.infer(observation)["actions"].shape == (8, 14)
    with pytest.raises(RuntimeError, match=r"observation key 'state': expected a float32 array of shape \[14\]"):
        client.infer({**observation, "state": np.zeros(6)})
    assert client.infer(observation)["actions"].shape == (8, 14)  # the next good one, same connection


def test_the_observation_map_comes_from_the_flag_or_the_policy_and_its_absence_is_explained(tiny_policy_dir,
                                                                                             tmp_path):
    mapping = load_observation_map(tiny_policy_dir, None, "other", (32, 32))
    assert mapping.embodiment == "other" and mapping.image_size == (32, 32)
    with pytest.raises(ValueError, match=r"no observation map: .*observation_map.json does not exist. Write one"):
        load_observation_map(tmp_path, None, None, None)
