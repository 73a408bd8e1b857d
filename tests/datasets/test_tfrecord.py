"""TFRecord framing: round trips, checksums as TensorFlow computes them, and the three kinds of damage."""

import io
import struct

import pytest

from vlaforge.datasets.tfrecord import (
    DataCrcError,
    LengthCrcError,
    TFRecordReader,
    TruncatedRecordError,
    frame_record,
    masked_crc32c,
    read_records,
    write_records,
)

RECORDS = [b"first record", b"second, longer than the first", b"", b"x" * 70_000, b"last"]


def _offsets(records):
    offsets, position = [], 0
    for data in records:
        offsets.append(position)
        position += 16 + len(data)
    return offsets


def test_round_trip_keeps_every_record_its_index_and_offset(tmp_path):
    path = tmp_path / "a.tfrecord"
    size = write_records(path, RECORDS)
    assert size == path.stat().st_size == sum(16 + len(r) for r in RECORDS)
    assert list(read_records(path)) == RECORDS
    with open(path, "rb") as file:
        records = list(TFRecordReader(file, "a.tfrecord"))
    assert [r.index for r in records] == list(range(len(RECORDS)))
    assert [r.offset for r in records] == _offsets(RECORDS)


def test_checksums_match_the_independent_tfrecord_package(tmp_path):
    """The PyPI `tfrecord` writer frames records with its own masked-CRC code; our framing must be identical."""
    from tfrecord.writer import TFRecordWriter as ThirdPartyWriter

    path = tmp_path / "theirs.tfrecord"
    writer = ThirdPartyWriter(str(path))
    writer.write({"text": (b"hello", "byte"), "value": ([1.5, 2.5], "float")})
    writer.close()
    theirs = path.read_bytes()
    (length,) = struct.unpack_from("<Q", theirs)
    assert frame_record(theirs[12 : 12 + length]) == theirs
    assert masked_crc32c(b"") == 0xA282EAD8  # crc32c("") is 0, so only the mask delta remains


def test_reader_never_reads_more_than_the_current_record(tmp_path):
    """Memory is bounded by one record: when a record is handed out, the file has not been read past it."""
    stream = io.BytesIO(b"".join(frame_record(r) for r in RECORDS))
    largest_read = 0
    original_read = stream.read

    def counting_read(size=-1):
        nonlocal largest_read
        assert size >= 0, "the reader must never read the rest of the file at once"
        largest_read = max(largest_read, size)
        return original_read(size)

    stream.read = counting_read
    reader = TFRecordReader(stream, "stream")
    for data, end in zip(RECORDS, [o + 16 + len(d) for o, d in zip(_offsets(RECORDS), RECORDS)]):
        assert reader.read().data == data
        assert stream.tell() == end
    assert reader.read() is None
    assert largest_read == max(len(r) for r in RECORDS)


@pytest.mark.parametrize("cut", [5, 12 + 3, 12 + len(RECORDS[1]) + 2], ids=["in-length", "in-data", "in-footer"])
def test_truncation_names_the_record_and_offset_after_reading_the_complete_ones(tmp_path, cut):
    data = b"".join(frame_record(r) for r in RECORDS)
    second = 16 + len(RECORDS[0])
    stream = io.BytesIO(data[: second + cut])
    reader = TFRecordReader(stream, "shard-0")
    assert reader.read().data == RECORDS[0]
    with pytest.raises(TruncatedRecordError) as caught:
        reader.read()
    assert (caught.value.index, caught.value.offset) == (1, second)
    assert "shard-0: record 1 at byte offset" in str(caught.value)
    assert reader.read() is None


def test_a_data_checksum_mismatch_skips_only_that_record(tmp_path):
    data = bytearray(b"".join(frame_record(r) for r in RECORDS))
    data[12 + 3] ^= 0x01  # a bit flip inside record 0's payload
    path = tmp_path / "flipped.tfrecord"
    path.write_bytes(bytes(data))
    with open(path, "rb") as file:
        reader = TFRecordReader(file, "flipped.tfrecord")
        with pytest.raises(DataCrcError) as caught:
            reader.read()
        assert (caught.value.index, caught.value.offset) == (0, 0)
        assert [r.data for r in reader] == RECORDS[1:]
    with pytest.raises(DataCrcError):
        list(read_records(path))


def test_a_length_checksum_mismatch_stops_the_file(tmp_path):
    data = bytearray(b"".join(frame_record(r) for r in RECORDS))
    second = 16 + len(RECORDS[0])
    data[second] ^= 0x04  # the second record's length field
    reader = TFRecordReader(io.BytesIO(bytes(data)), "bad-length")
    assert reader.read().data == RECORDS[0]
    with pytest.raises(LengthCrcError) as caught:
        reader.read()
    assert caught.value.index == 1 and "rest of the file" in str(caught.value)
    assert reader.finished and reader.read() is None


def test_a_huge_length_with_a_valid_checksum_is_truncation_not_an_allocation(tmp_path):
    length = struct.pack("<Q", 1 << 60)
    path = tmp_path / "huge.tfrecord"
    path.write_bytes(length + struct.pack("<I", masked_crc32c(length)) + b"tiny")
    with open(path, "rb") as file, pytest.raises(TruncatedRecordError, match="declares 1152921504606846976 bytes"):
        TFRecordReader(file, "huge").read()


def test_mapped_records_are_read_only_views_that_outlive_the_file(tmp_path):
    path = tmp_path / "a.tfrecord"
    write_records(path, RECORDS)
    with open(path, "rb") as file:
        records = list(TFRecordReader(file, "a", map_records=True))
    assert [bytes(record.data) for record in records] == RECORDS  # every view still holds its record
    assert all(isinstance(record.data, memoryview) and record.data.readonly for record in records)
    with pytest.raises(TypeError):
        records[0].data[0] = 0


def test_mapped_records_report_truncation_and_bad_checksums_like_read_ones(tmp_path):
    path = tmp_path / "a.tfrecord"
    size = write_records(path, RECORDS)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data[: size - 3]))
    with open(path, "rb") as file:
        reader = TFRecordReader(file, "a", map_records=True)
        with pytest.raises(DataCrcError):
            reader.read()
        assert bytes(reader.read().data) == RECORDS[1]
        with pytest.raises(TruncatedRecordError):
            while reader.read() is not None:
                pass


def test_a_file_that_cannot_be_mapped_is_read_instead(tmp_path, monkeypatch):
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")  # what mmap gives on a file system without mmap support

    monkeypatch.setattr(mmap, "mmap", refuse)
    path = tmp_path / "a.tfrecord"
    write_records(path, RECORDS)
    with open(path, "rb") as file:
        records = list(TFRecordReader(file, "a", map_records=True))
    assert [record.data for record in records] == RECORDS and all(isinstance(r.data, bytes) for r in records)
