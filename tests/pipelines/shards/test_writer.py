import hashlib
import io
import tarfile

import pytest

from vlaforge.pipelines.shards.members import UnsafeShardError, iter_samples
from vlaforge.pipelines.shards.writer import ShardConfig, TarShardWriter

SAMPLES = [("ep-a_000000", {"state.npy": b"\x93NUMPY-ish", "meta.json": b"{}", "wrist.jpg": b"\xff\xd8..\xff\xd9"}),
           ("ep-a_000001", {"meta.json": b'{"a":1}', "state.npy": b"xyz"})]


def _write(path):
    writer = TarShardWriter(path)
    for key, members in SAMPLES:
        writer.write(key, members)
    return writer.finish()


def test_same_samples_give_byte_identical_shards(tmp_path):
    first, second = _write(tmp_path / "a.tar"), _write(tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert first.sha256 == hashlib.sha256((tmp_path / "a.tar").read_bytes()).hexdigest()
    assert first.bytes == (tmp_path / "a.tar").stat().st_size and first.samples == 2
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["ep-a_000000.meta.json", "ep-a_000000.state.npy", "ep-a_000000.wrist.jpg"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o444)}


def test_shard_appears_only_when_finished_and_abort_leaves_nothing(tmp_path):
    writer = TarShardWriter(tmp_path / "s.tar")
    writer.write(*SAMPLES[0])
    assert not (tmp_path / "s.tar").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_unsafe_member_names_are_refused_on_write(tmp_path):
    writer = TarShardWriter(tmp_path / "s.tar")
    with pytest.raises(ValueError, match="not a safe WebDataset name"):
        writer.write("../etc/passwd", {"jpg": b""})
    writer.abort()


def _tar_with(name: str, data: bytes = b"x", kind=tarfile.REGTYPE) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "name, kind, message",
    [("../../evil.state.npy", tarfile.REGTYPE, "not a flat"), ("k.meta.pyd", tarfile.REGTYPE, "pickle"),
     ("k.state.npy", tarfile.SYMTYPE, "not a regular file")],
)
def test_reader_refuses_hostile_members(name, kind, message):
    with pytest.raises(UnsafeShardError, match=message):
        list(iter_samples(_tar_with(name, kind=kind), "hostile.tar"))


def test_shard_config_limits():
    assert ShardConfig(max_samples=2, max_bytes=None).is_full(2, 0)
    assert ShardConfig(max_samples=None, max_bytes=100).is_full(1, 100)
    assert not ShardConfig(max_samples=5, max_bytes=100).is_full(4, 99)
    with pytest.raises(ValueError, match="needs max_samples or max_bytes"):
        ShardConfig(max_samples=None, max_bytes=None)


def test_a_shard_of_many_chunks_is_byte_identical_to_tarfile_and_hashed_whole(tmp_path):
    """Past several write chunks, with frames large enough to be written from their own buffers: the same bytes
    as Python's tarfile writing the same members with the same fixed metadata."""
    samples = [(f"ep-b_{i:06d}", {"front.jpg": bytes([i % 256]) * (5000 + i), "state.npy": b"s" * (i % 600),
                                  "meta.json": b'{"i":%d}' % i}) for i in range(1200)]
    writer = TarShardWriter(tmp_path / "s.tar")
    data_bytes = [writer.write(key, members) for key, members in samples]
    written = writer.finish()
    assert data_bytes == [sum(map(len, members.values())) for _, members in samples]

    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for extension in sorted(members):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mode, info.mtime = len(members[extension]), 0o444, 0
                tar.addfile(info, io.BytesIO(members[extension]))
    shard = (tmp_path / "s.tar").read_bytes()
    assert written.bytes > 4 * 2**20 and len(shard) == written.bytes
    assert shard == expected.getvalue()
    assert written.sha256 == hashlib.sha256(shard).hexdigest()


def test_a_refused_sample_leaves_nothing_in_the_shard(tmp_path):
    writer = TarShardWriter(tmp_path / "s.tar")
    with pytest.raises(ValueError, match="not a safe WebDataset name"):
        writer.write("ep-c_000000", {"a.jpg": b"x" * 10_000, "b/../c": b"y"})  # refused after a frame was encoded
    writer.write(*SAMPLES[1])
    written = writer.finish()
    with tarfile.open(tmp_path / "s.tar") as tar:
        assert [m.name for m in tar.getmembers()] == ["ep-a_000001.meta.json", "ep-a_000001.state.npy"]
    assert written.samples == 1
