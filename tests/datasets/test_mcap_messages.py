"""Messages found again by location: chunked and unchunked files, private records in between, bounded chunk cache."""

import os
import pathlib
import struct

import pytest
from mcap.records import Channel, Message, Schema
from mcap.writer import Writer

from vlaforge.datasets.mcap_messages import McapMessages, field_offset, located_records
from vlaforge.datasets.synth.teleop import make_recording
from vlaforge.datasets.synth.teleop_mcap import write_teleop_mcap


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """A ROS 2 log as `mcap_ros2`'s writer writes it: zstd chunks of 1 MiB, with a summary."""
    return write_teleop_mcap(tmp_path_factory.mktemp("mcap") / "e.mcap", make_recording(seed=4, duration_s=3.0))


def _records(path):
    with open(path, "rb") as handle:
        return list(located_records(handle))


def _messages(path):
    return [(record, location) for record, location in _records(path) if isinstance(record, Message)]


def _rewrite(source: pathlib.Path, target: pathlib.Path, *, private_record: bool = False, **writer_options):
    """The same messages in a file laid out differently (`Writer` options); `private_record` puts a record of opcode
    0x80 (the spec reserves 0x80-0xFF for private records, which readers skip) before the first message."""
    with open(target, "wb") as out:
        writer = Writer(out, **writer_options)
        writer.start(profile="ros2", library="test")
        if private_record:
            out.write(struct.pack("<BQ", 0x80, 5) + b"hello")  # the writer takes offsets from tell(): they stay right
        schemas, channels = {}, {}
        for record, _ in _records(source):
            if isinstance(record, Schema):
                schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel):
                channels[record.id] = writer.register_channel(record.topic, record.message_encoding,
                                                              schemas[record.schema_id], record.metadata)
            elif isinstance(record, Message):
                writer.add_message(channels[record.channel_id], record.log_time, record.data, record.publish_time,
                                   record.sequence)
        writer.finish()
    return target


def test_every_message_is_found_again_at_its_location(chunked):
    messages = _messages(chunked)
    assert len(messages) > 1000 and len({location.offset for _, location in messages}) > 1  # several chunks
    reader = McapMessages(chunked, chunks_kept=2)
    for record, location in messages[::7]:
        assert reader.message(location).data == record.data
        assert len(reader._chunks) <= 2  # a walk in file order keeps at most `chunks_kept` chunks
    reader.release()


@pytest.mark.parametrize("layout", [{"use_chunking": False}, {"chunk_size": 4096, "private_record": True}])
def test_unchunked_files_and_private_records_between_messages(chunked, tmp_path, layout):
    path = _rewrite(chunked, tmp_path / "e.mcap", **layout)
    messages = _messages(path)
    assert [r.data for r, _ in messages] == [r.data for r, _ in _messages(chunked)]
    if not layout.get("use_chunking", True):
        assert all(location.ordinal == -1 for _, location in messages)  # each message is its own top-level record
    reader = McapMessages(path)
    assert all(reader.message(location).data == record.data for record, location in messages[::5])


def test_after_release_a_read_opens_and_closes_the_file(chunked):
    record, location = _messages(chunked)[-1]
    reader = McapMessages(chunked)
    reader.message(location)
    assert _open_fds(chunked) == 1  # held while the source processes the file's episodes
    reader.release()
    assert _open_fds(chunked) == 0
    assert reader.message(location).data == record.data and _open_fds(chunked) == 0


def _open_fds(path):
    target = os.path.realpath(path)
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == target for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def test_field_offset_finds_a_byte_field_in_its_encoded_message():
    jpeg = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"
    cdr = b"\x00\x01\x00\x00" + b"\x07\x00\x00\x00cam_hi\x00" + struct.pack("<I", len(jpeg)) + jpeg + b"\x00\x00"
    start = field_offset(cdr, jpeg)
    assert cdr[start : start + len(jpeg)] == jpeg and start == 19
    decoy = jpeg[:16] + b"not it" + cdr  # the same first bytes earlier in the message: the whole is compared
    assert decoy[field_offset(decoy, jpeg) :][: len(jpeg)] == jpeg
    assert field_offset(cdr, b"\xff\xd8 absent") == -1
