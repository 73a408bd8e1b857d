"""The shard hash computed beside the writer: the same as hashing the file, and failures reported, not hung on."""

import hashlib
import os

import pytest

from vlaforge.pipelines.shards.digest import READ_SIZE, WrittenFileSha256
from vlaforge.pipelines.shards.writer import write_pieces


def test_hash_of_a_file_written_in_pieces_equals_hashlib_of_the_file(tmp_path):
    path = tmp_path / "shard.tar"
    chunks = [os.urandom(size) for size in (10, READ_SIZE + 3, 0, 70_000, 2 * READ_SIZE)]
    with open(path, "wb+", buffering=0) as handle:
        digest = WrittenFileSha256(handle.fileno())
        written = 0
        for chunk in chunks:
            written += write_pieces(handle.fileno(), [chunk[:5], memoryview(chunk)[5:]])
            digest.written(written)
        result = digest.hexdigest()
    assert result == hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_a_file_shorter_than_announced_raises_instead_of_hanging(tmp_path):
    with open(tmp_path / "short", "wb+", buffering=0) as handle:
        handle.write(b"abc")
        digest = WrittenFileSha256(handle.fileno())
        digest.written(10)
        digest.written(20)  # queued behind the failure: must not block hexdigest()
        with pytest.raises(OSError, match="ends at byte 3, before the 10 bytes"):
            digest.hexdigest()


def test_close_stops_the_helper_without_a_hash(tmp_path):
    with open(tmp_path / "f", "wb+", buffering=0) as handle:
        digest = WrittenFileSha256(handle.fileno())
        digest.written(0)
        digest.close()
        assert not digest._thread.is_alive()
        with pytest.raises(RuntimeError, match="after hexdigest"):
            digest.written(1)


def test_more_pieces_than_one_gathering_write_takes_are_written_in_order(tmp_path):
    pieces = [bytes([i % 251]) * (i % 7) for i in range(5000)]
    with open(tmp_path / "f", "wb", buffering=0) as handle:
        assert write_pieces(handle.fileno(), pieces) == sum(map(len, pieces))
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)
