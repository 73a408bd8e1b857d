"""Shards by URL against real local servers: plain paths, file://, http:// (a threaded http.server on 127.0.0.1
that can fail, drop connections, honour Range or not, omit Content-Length) and s3:// (moto's S3 server)."""

import dataclasses
import functools
import hashlib
import http.server
import shutil
import socket
import tempfile
import threading
import time

import pytest

from vlaforge.pipelines.shards.reader import BadShardError, ShardEntry, ShardReader, sha256_of
from vlaforge.pipelines.shards.urls import ShardAccessError, ShardNotFoundError, ShardOpener, resolve_url
from vlaforge.training.data.corpus_stream import CorpusStream

CONFIG = CorpusStream.Config(block=16, interleave=3)


class Faults:
    """What the test server does wrong, and what it was asked."""

    def __init__(self, *, fail_first=0, drop_first_after=None, ranges=True, omit_length=False, status=503):
        self.fail_first = fail_first
        self.drop_first_after = drop_first_after
        self.ranges = ranges
        self.omit_length = omit_length
        self.status = status
        self.requests: list[tuple[str, str | None]] = []


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        faults: Faults = self.server.faults
        faults.requests.append((self.path, self.headers.get("Range")))
        if faults.fail_first > 0:
            faults.fail_first -= 1
            self.send_error(faults.status, "injected failure")
            return
        path = self.translate_path(self.path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            self.send_error(404, "not found")
            return
        start = 0
        wanted = self.headers.get("Range")
        if wanted and faults.ranges:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if not faults.omit_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if faults.drop_first_after is not None:
            body, faults.drop_first_after = body[: faults.drop_first_after], None
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def serve():
    """`serve(directory, faults)` starts an HTTP server on 127.0.0.1 and returns its base URL; stopped at the end."""
    servers = []

    def start(directory, faults=None):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        server.faults = faults or Faults()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def quick_opener(waits=None, retries=4):
    sleep = waits.append if waits is not None else (lambda seconds: None)
    return ShardOpener(ShardOpener.Config(retries=retries, backoff_s=0.01, max_backoff_s=0.03), sleep=sleep)


def test_relative_shard_urls_resolve_against_the_corpus_url():
    assert resolve_url("s3://bucket/c/corpus.json", "arm/train/x.tar") == "s3://bucket/c/arm/train/x.tar"
    assert resolve_url("http://h:8/a/corpus.json", "../d/x.tar") == "http://h:8/d/x.tar"
    assert resolve_url("file:///data/corpus.json", "d/x.tar") == "file:///data/d/x.tar"
    assert resolve_url("/data/corpus.json", "d/x.tar") == "/data/d/x.tar"
    assert resolve_url("/data/corpus.json", "s3://other/x.tar") == "s3://other/x.tar"


def test_transient_http_errors_are_retried_with_exponential_backoff(tmp_path, serve):
    (tmp_path / "blob").write_bytes(b"x" * 5000)
    faults = Faults(fail_first=3)
    waits = []
    data = quick_opener(waits).read_bytes(f"{serve(tmp_path, faults)}/blob")
    assert data == b"x" * 5000
    assert len(faults.requests) == 4 and waits == [0.01, 0.02, 0.03]


def test_retries_are_bounded_and_the_error_names_the_url(tmp_path, serve):
    (tmp_path / "blob").write_bytes(b"x")
    base = serve(tmp_path, Faults(fail_first=100))
    with pytest.raises(ShardAccessError, match=r"/blob: still failing after 3 attempts \(HTTP 503"):
        quick_opener(retries=2).read_bytes(f"{base}/blob")


def test_missing_and_forbidden_objects_are_not_retried(tmp_path, serve):
    faults = Faults()
    base = serve(tmp_path, faults)
    with pytest.raises(ShardNotFoundError, match="404"):
        quick_opener().read_bytes(f"{base}/nothing")
    assert len(faults.requests) == 1
    forbidden = Faults(fail_first=1, status=403)
    with pytest.raises(ShardAccessError, match="403"):
        quick_opener().read_bytes(f"{serve(tmp_path, forbidden)}/nothing")
    assert len(forbidden.requests) == 1


@pytest.mark.parametrize("ranges", [True, False])
def test_a_dropped_connection_resumes_at_the_byte_it_reached(tmp_path, serve, ranges):
    payload = bytes(range(256)) * 400
    (tmp_path / "blob").write_bytes(payload)
    faults = Faults(drop_first_after=30_000, ranges=ranges)
    opener = quick_opener()
    with opener.open(f"{serve(tmp_path, faults)}/blob") as stream:
        assert stream.size == len(payload)
        data = b"".join(iter(lambda: stream.read(8192), b""))
        assert stream.retries == 1
    assert data == payload
    assert faults.requests[1][1] == "bytes=30000-"


def same_samples(first, second):
    strip = lambda s: {k: v for k, v in s.items() if k != "__url__"}  # noqa: E731
    return [strip(s) for s in first] == [strip(s) for s in second]


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_plain_paths_file_urls_and_http_give_the_same_stream(small_corpus, serve):
    base = serve(small_corpus.parent)
    local = take(CorpusStream(str(small_corpus), config=CONFIG), 300)
    by_file = take(CorpusStream(small_corpus.as_uri(), config=CONFIG), 300)
    over_http = CorpusStream(f"{base}/corpus.json", config=CONFIG)
    remote = take(over_http, 300)
    assert same_samples(local, by_file) and same_samples(local, remote)
    assert remote[0]["__url__"].startswith(base) and by_file[0]["__url__"].startswith("file://")
    assert over_http.stats["bad_shards"] == {}


def test_verified_http_shards_are_spooled_and_a_bad_one_is_never_used(small_corpus, tmp_path, serve, monkeypatch):
    root = tmp_path / "tree"
    shutil.copytree(small_corpus.parent, root)
    bad = sorted((root / "arm_a" / "train").glob("*.tar"))[0]
    data = bytearray(bad.read_bytes())
    data[2000] ^= 0xFF
    bad.write_bytes(bytes(data))
    spools, real = [], tempfile.TemporaryFile

    def spool(*args, **kwargs):
        spools.append((kwargs.get("dir"), real(*args, **kwargs)))
        return spools[-1][1]

    monkeypatch.setattr(tempfile, "TemporaryFile", spool)
    stream = CorpusStream(f"{serve(root)}/corpus.json", verify_sha256=True, config=CorpusStream.Config(
        block=16, interleave=3, reader=ShardReader.Config(spool_dir=str(tmp_path))))
    samples = take(stream, 400)
    assert not any(s["__url__"].endswith(f"arm_a/train/{bad.name}") for s in samples)
    assert stream.stats["bad_shards"]["sha256_mismatch"] >= 1
    stream.close()
    assert len(spools) == stream.stats["shards_opened"] and {d for d, _ in spools} == {str(tmp_path)}
    assert all(handle.closed for _, handle in spools), "every spooled copy is closed (and so deleted)"


def test_a_stream_without_length_that_is_cut_hands_out_no_incomplete_sample(small_corpus, tmp_path, serve):
    source = sorted((small_corpus.parent / "arm_a" / "train").glob("*.tar"))[0]
    data = source.read_bytes()
    # Cut right after the 6 members of the first sample: a header boundary, where tarfile would stop silently.
    boundary = 0
    for _ in range(6):
        size = int(data[boundary + 124: boundary + 136].split(b"\x00")[0], 8)
        boundary += 512 + size + (-size % 512)
    (tmp_path / "cut.tar").write_bytes(data[:boundary])
    reader = ShardReader(opener=quick_opener())
    url = f"{serve(tmp_path, Faults(omit_length=True))}/cut.tar"
    got = []
    with pytest.raises(BadShardError, match="end-of-archive") as error:
        for sample in reader.samples(ShardEntry(url, samples=40, bytes=len(data), sha256=""), [(0, 40)]):
            got.append(sample)
    assert error.value.reason.value == "truncated" and got == []


def test_sha256_of_streams_any_url(small_corpus, serve):
    shard = sorted((small_corpus.parent / "vl" / "train").glob("*.tar"))[0]
    expected = hashlib.sha256(shard.read_bytes()).hexdigest()
    url = f"{serve(small_corpus.parent)}/vl/train/{shard.name}"
    assert sha256_of(quick_opener(), url) == (expected, shard.stat().st_size)


@pytest.fixture
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port), stopped at the end; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_urls_through_s3fs_give_the_same_stream(small_corpus, s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="corpora")
    for path in small_corpus.parent.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "corpora", f"small/{path.relative_to(small_corpus.parent).as_posix()}")
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    config = CorpusStream.Config(block=16, interleave=3, opener=ShardOpener.Config(s3_options=options))
    remote = CorpusStream("s3://corpora/small/corpus.json", verify_sha256=True, config=config)
    samples = take(remote, 200)
    assert same_samples(samples, take(CorpusStream(str(small_corpus), config=CONFIG), 200))
    assert samples[0]["__url__"].startswith("s3://corpora/small/")
    assert remote.stats["bad_shards"] == {}
    with pytest.raises(ShardNotFoundError):
        ShardOpener(ShardOpener.Config(s3_options=options)).read_bytes("s3://corpora/small/nothing.json")
    assert "testing" not in repr(config), "a logged config shows no secret"


class _SilentServer:
    """Accepts every connection on 127.0.0.1 and never sends a byte (counting the connections); with `stuck`, a
    listener whose backlog is full and which never accepts, so that connecting itself hangs."""

    def __init__(self, stuck=False):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        if stuck:
            for _ in range(3):  # fill the accept queue: later SYNs are dropped, so connect() waits
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", self.port))
                self.connections.append(filler)
        else:
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.connections.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self):
        for connection in self.connections:
            connection.close()
        self.listener.close()


TIMEOUTS = ShardOpener.Config(connect_timeout_s=0.5, read_timeout_s=0.5, give_up_after_s=2.0, retries=100,
                              backoff_s=0.05, max_backoff_s=0.2)


def test_a_server_that_accepts_but_never_answers_fails_within_the_bound():
    """Before: about 6 minutes (60 s per attempt, 6 attempts). Now: give_up_after_s plus one attempt's timeouts,
    however many retries are allowed."""
    server = _SilentServer()
    try:
        with pytest.raises(ShardAccessError) as failed:
            ShardOpener(TIMEOUTS).read_bytes(f"http://127.0.0.1:{server.port}/shard.tar")
    finally:
        server.close()
    message = str(failed.value)
    assert f"127.0.0.1:{server.port}/shard.tar: no byte for" in message and "give_up_after_s (2 s)" in message
    assert "within the read timeout" in message
    # It retried, and gave up on the silence long before its 100 retries (each costs a 0.5 s read timeout).
    assert 1 < len(server.connections) <= 10


def test_a_server_that_never_accepts_fails_on_the_connect_timeout():
    server = _SilentServer(stuck=True)
    try:
        with pytest.raises(ShardAccessError) as failed:
            ShardOpener(TIMEOUTS).read_bytes(f"http://127.0.0.1:{server.port}/shard.tar")
    finally:
        server.close()
    assert f"no connection to 127.0.0.1:{server.port} within 0.5 s (connect_timeout_s)" in str(failed.value)


def test_a_slow_but_steady_download_is_not_cut_off(tmp_path):
    """A body that trickles in (a piece every 0.3 s, 2.4 s in all) outlasts give_up_after_s but is never silent
    for read_timeout_s: it completes."""
    payload = bytes(range(256)) * 8

    class Trickle(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            for start in range(0, len(payload), 256):
                self.wfile.write(payload[start : start + 256])
                self.wfile.flush()
                time.sleep(0.3)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = dataclasses.replace(TIMEOUTS, read_timeout_s=1.0, give_up_after_s=1.5)
        assert ShardOpener(config).read_bytes(f"http://127.0.0.1:{server.server_address[1]}/x") == payload
    finally:
        server.shutdown()
        server.server_close()
