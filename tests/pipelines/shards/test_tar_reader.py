"""The tar member reader against `tarfile` itself: the same members from ustar, GNU and pax archives, and an error
(never a silent short read) for every way of cutting an archive before its end-of-archive block."""

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlaforge.pipelines.shards.tar_reader import TarFormatError, TarReader

names = st.text(st.characters(min_codepoint=48, max_codepoint=0x2FF, exclude_categories=("Cs",)), min_size=1,
                max_size=140).map(lambda s: s.replace("/", "_"))
members = st.lists(st.tuples(names, st.binary(max_size=1500)), min_size=1, max_size=6,
                   unique_by=lambda m: m[0])
formats = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])


def archive(entries, format_) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format_) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_all(data: bytes, *, seekable: bool, read_every=1):
    reader = TarReader(io.BytesIO(data), seekable=seekable)
    return [(m.name, m.size, m.read() if i % read_every == 0 else None) for i, m in enumerate(reader.members())]


@settings(max_examples=80, deadline=None)
@given(entries=members, format_=formats, seekable=st.booleans())
def test_members_match_tarfile(entries, format_, seekable):
    if format_ == tarfile.USTAR_FORMAT:
        entries = [(n.encode("ascii", "replace").decode()[:100], d) for n, d in entries]
        entries = list({n: (n, d) for n, d in entries}.values())
    data = archive(entries, format_)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [(m.name, m.size, tar.extractfile(m).read()) for m in tar]
    assert read_all(data, seekable=seekable) == expected
    skipping = read_all(data, seekable=seekable, read_every=2)
    assert [m[:2] for m in skipping] == [m[:2] for m in expected]
    assert [m[2] for m in skipping[::2]] == [m[2] for m in expected[::2]]


def test_every_cut_before_the_end_of_archive_block_is_an_error():
    data = archive([("k0.meta.json", b"{}"), ("k0.state.npy", b"x" * 700), ("k1.meta.json", b"[]")],
                   tarfile.USTAR_FORMAT)
    end = 512 * (1 + 1) + 512 * (1 + 2) + 512 * (1 + 1)  # three headers and their padded data
    assert data[end:end + 512] == bytes(512)
    for cut in range(0, end, 97):
        with pytest.raises(TarFormatError):
            read_all(data[:cut], seekable=False)
    assert len(read_all(data[:end + 512], seekable=False)) == 3


def test_a_damaged_header_is_refused_by_its_checksum():
    data = bytearray(archive([("k0.meta.json", b"{}")], tarfile.USTAR_FORMAT))
    data[5] ^= 0x01
    with pytest.raises(TarFormatError, match="checksum"):
        read_all(bytes(data), seekable=True)


def test_a_member_reads_once_and_only_before_the_next():
    reader = TarReader(io.BytesIO(archive([("a.json", b"1"), ("b.json", b"2")], tarfile.USTAR_FORMAT)))
    members = reader.members()
    first = next(members)
    assert first.read() == b"1"
    with pytest.raises(RuntimeError, match="once"):
        first.read()
    next(members)
    with pytest.raises(RuntimeError):
        first.read()
