"""The policy server against the real `openpi-client` (PyPI): openpi's robot clients get actions from an exported
policy unchanged, a bad observation gets an error naming the key and the shape, and the connection stays usable."""

import logging
import threading
import urllib.request

import numpy as np
import pytest
import torch
from openpi_client import action_chunk_broker, msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from vlaforge.training.policy.observation_map import ObservationMap
from vlaforge.training.policy.policy import Policy
from vlaforge.training.policy.served_policy import ServedPolicy
from vlaforge.training.policy.server import PolicyServer


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return Policy.from_pretrained(tiny_policy_dir)


@pytest.fixture(scope="module")
def server(policy, tiny_policy_dir):
    served = ServedPolicy(policy, ObservationMap.load(tiny_policy_dir / "observation_map.json"), seed=5)
    server = PolicyServer(served, port=0)
    server.start()
    yield server
    server.stop()


def aloha_observation(camera, state=None):
    """What gym-aloha's environment process sends: a 480x640 top camera, the 14-D joint state, the prompt."""
    frame = np.kron(camera("astronaut"), np.ones((8, 10, 1), dtype=np.uint8))[:480, :640]
    return {"images": {"top": frame}, "state": np.linspace(-0.1, 0.1, 14) if state is None else state,
            "prompt": "pick up the cube"}


def test_openpi_client_gets_the_policys_chunk_in_robot_units(server, policy, camera):
    client = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    metadata = client.get_server_metadata()
    assert metadata["observation"]["images/top"]["shape"] == [None, None, 3]
    assert metadata["observation"]["state"] == {"kind": "state", "dtype": "float32", "shape": [14], "required": True}
    assert metadata["actions"]["shape"] == [8, 14] and metadata["prompt_key"] == "prompt"

    observation = aloha_observation(camera)
    first, second = client.infer(observation), client.infer(observation)
    assert first["actions"].shape == (8, 14) and first["actions"].dtype == np.float32
    assert set(first["server_timing"]) == {"infer_ms", "prev_total_ms"}
    assert first["server_timing"]["prev_total_ms"] is None
    assert second["server_timing"]["prev_total_ms"] > 0 and first["policy_timing"]["infer_ms"] > 0

    # The same chunks as the policy itself gives for the frame resized to 64x64, with the connection's noise
    # seeded by the server's seed: the server maps, resizes and unnormalizes nothing differently.
    mapped, _ = server.endpoint.map.parse(observation, 14, 14)
    generator = torch.Generator().manual_seed(5)
    expected = [policy.infer(mapped, generator=generator) for _ in range(2)]
    np.testing.assert_allclose(first["actions"], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second["actions"], expected[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first["actions"], second["actions"])  # fresh noise per request


def test_a_bad_observation_gets_a_named_error_and_the_next_good_one_is_served(server, camera):
    client = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    good = aloha_observation(camera)
    with pytest.raises(RuntimeError, match=r"observation key 'state': expected a float32 array of shape \[14\], got "
                                           r"float64 array of shape \[7\]"):
        client.infer({**good, "state": np.zeros(7)})
    with pytest.raises(RuntimeError, match=r"observation key 'images/top' is missing: expected a uint8 image"):
        client.infer({"state": good["state"]})
    with pytest.raises(RuntimeError, match=r"'images/top': expected a uint8 image of shape \[H, W, 3\].*got float32"):
        client.infer({**good, "images": {"top": np.zeros((64, 64, 3), np.float32)}})
    assert client.infer(good)["actions"].shape == (8, 14)  # same connection, still served


def test_a_committed_prefix_starts_the_chunk_and_a_too_long_one_is_refused(server, camera):
    client = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    observation = aloha_observation(camera)
    prefix = client.infer(observation)["actions"][4:7]
    chunk = client.infer({**observation, "action_prefix": prefix})["actions"]
    assert np.array_equal(chunk[:3], prefix)
    with pytest.raises(RuntimeError, match="'action_prefix': expected at most 7 committed actions"):
        client.infer({**observation, "action_prefix": np.zeros((8, 14), np.float32)})
    with pytest.raises(RuntimeError, match=r"'action_prefix': expected a float32 array of shape \[N, 14\]"):
        client.infer({**observation, "action_prefix": np.zeros((2, 7), np.float32)})


def test_openpis_action_chunk_broker_runs_on_our_chunks(server, camera):
    """openpi's own client-side runtime piece (action_horizon = T_e) works on our responses unchanged."""
    broker = action_chunk_broker.ActionChunkBroker(WebsocketClientPolicy(host="127.0.0.1", port=server.port),
                                                   action_horizon=4)
    steps = [broker.infer(aloha_observation(camera))["actions"] for _ in range(5)]
    assert all(step.shape == (14,) for step in steps)


def test_garbage_and_text_messages_get_errors_and_health_is_served(server):
    with connect(server.url, compression=None, max_size=None) as connection:
        msgpack_numpy.unpackb(connection.recv())  # the metadata comes first
        connection.send(b"\xc1 not msgpack")
        assert connection.recv().startswith("error: the message is not a msgpack-numpy observation")
        connection.send("a text frame")
        assert "send observations as binary msgpack-numpy messages" in connection.recv()
        connection.send(msgpack_numpy.packb({"images": {"top": np.zeros((4, 4, 3), np.uint8)}}))
        assert "'state' is missing" in connection.recv()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
        assert response.status == 200


def test_a_bfloat16_policy_is_served_in_float32_robot_units(tiny_policy_dir, camera):
    """What `serve-policy --dtype bfloat16` loads (on a GPU in production): the chunk still leaves as float32."""
    policy = Policy.from_pretrained(tiny_policy_dir, dtype=torch.bfloat16)
    served = ServedPolicy(policy, ObservationMap.load(tiny_policy_dir / "observation_map.json"))
    observation = aloha_observation(camera)
    response = served.session().infer(observation)
    assert response["actions"].dtype == np.float32 and response["actions"].shape == (8, 14)
    prefix = response["actions"][:2]
    assert np.array_equal(served.session().infer({**observation, "action_prefix": prefix})["actions"][:2], prefix)


class HeldEndpoint:
    """Answers only once the test releases it, so the client can leave while its request is being served."""

    metadata = {"server": "held"}

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def session(self):
        return self

    def infer(self, observation):
        self.started.set()
        self.release.wait(timeout=60)
        return {"actions": np.zeros((2, 2), np.float32)}


def test_a_client_that_leaves_before_its_answer_is_no_server_error(caplog):
    caplog.set_level(logging.INFO)
    endpoint = HeldEndpoint()
    server = PolicyServer(endpoint, port=0)
    url = server.start()
    try:
        with connect(url, compression=None, max_size=None) as connection:
            msgpack_numpy.unpackb(connection.recv())
            connection.send(msgpack_numpy.packb({"state": np.zeros(2)}))
            assert endpoint.started.wait(timeout=60)
        endpoint.release.set()  # the answer is ready only after the client closed the connection
        client = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
        assert client.infer({"state": np.zeros(2)})["actions"].shape == (2, 2)  # the server serves on
    finally:
        server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert any("closed the connection before its answer was sent" in r.getMessage() for r in caplog.records)
