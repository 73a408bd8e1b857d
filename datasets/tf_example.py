"""`tf.train.Example` read and written straight from the protobuf wire format, without TensorFlow or protoc.

The messages involved (tensorflow/core/example/{example,feature}.proto):

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }      # each entry: key = 1, value = 2
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Decoded values are `list[bytes]` (bytes_list), float32 arrays (float_list) or int64 arrays (int64_list). Packed
and unpacked repeated encodings are both accepted, as protobuf parsers must. Anything malformed raises
`ExampleDecodeError` with the byte position.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np

FeatureValue = list[bytes] | np.ndarray

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3
_U64 = (1 << 64) - 1


class ExampleDecodeError(ValueError):
    """Bytes that are not a well-formed serialized `tf.train.Example`."""


def decode_example(data: bytes | bytearray | memoryview, *, views: Collection[str] = ()) -> dict[str, FeatureValue]:
    """The features of one serialized Example, by key: list[bytes], float32 [k] or int64 [k] arrays.

    Every returned value is a copy, so `data` may be a reused buffer; except the bytes_list values of the features
    named in `views`, which are read-only memoryviews into `data`, which must then be read-only (bytes, or a
    mapped record). A JPEG per frame is most of an episode's bytes: copying them out costs more than reading it.
    """
    if views and not memoryview(data).readonly:
        raise TypeError(f"decode_example(views=...) needs read-only data, got a writable {type(data).__name__}")
    source = memoryview(data) if views else None
    features: dict[str, FeatureValue] = {}
    for field, wire, start, stop in _fields(data, 0, len(data)):
        if field == 1 and wire == _LEN:
            for field, wire, entry_start, entry_stop in _fields(data, start, stop):
                if field == 1 and wire == _LEN:
                    key, value = _decode_map_entry(data, entry_start, entry_stop, views, source)
                    features[key] = value
    return features


def _decode_map_entry(buf: bytes, pos: int, end: int, views: Collection[str],
                      source: memoryview | None) -> tuple[str, FeatureValue]:
    key, value = b"", None
    for field, wire, start, stop in _fields(buf, pos, end):
        if field == 1 and wire == _LEN:
            key = buf[start:stop]
        elif field == 2 and wire == _LEN:
            value = (start, stop)
    try:
        name = bytes(key).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ExampleDecodeError(f"feature key at byte {pos} is not UTF-8: {key[:40]!r}") from error
    if value is None:
        return name, []
    return name, _decode_feature(buf, *value, source if name in views else None)


def _decode_feature(buf: bytes, pos: int, end: int, source: memoryview | None) -> FeatureValue:
    """The Feature's list. A oneof set twice keeps the last kind; the same kind twice concatenates (merge)."""
    kind, chunks = None, []
    for field, wire, start, stop in _fields(buf, pos, end):
        if wire != _LEN or field not in (_BYTES_LIST, _FLOAT_LIST, _INT64_LIST):
            continue
        if field != kind:
            kind, chunks = field, []
        chunks.append(_bytes_list(buf, start, stop, source) if field == _BYTES_LIST else
                      _LIST_DECODERS[field](buf, start, stop))
    if kind is None:
        return []
    if kind == _BYTES_LIST:
        return [value for chunk in chunks for value in chunk]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _bytes_list(buf: bytes, pos: int, end: int, source: memoryview | None = None) -> list[bytes]:
    """Values of a BytesList: copies, or views of `source` (the same bytes as `buf`) when given. Hot path (one entry
    per frame): an inlined loop for the usual `value = 1` tags."""
    out: list[bytes] = []
    while pos < end:
        if buf[pos] != 0x0A:  # not field 1 / LEN: let the general parser handle (or skip) the rest
            rest = [(a, b) for field, wire, a, b in _fields(buf, pos, end) if field == 1 and wire == _LEN]
            return out + [bytes(buf[a:b]) if source is None else source[a:b] for a, b in rest]
        if pos + 1 < end and buf[pos + 1] < 0x80:  # under 128 B: per-step text such as instructions
            size, pos = buf[pos + 1], pos + 2
        elif pos + 2 < end and buf[pos + 1] >= 0x80 and buf[pos + 2] < 0x80:  # 128 B..16 KiB: many JPEG frames
            size, pos = (buf[pos + 1] & 0x7F) | (buf[pos + 2] << 7), pos + 3
        else:
            size, pos = _varint(buf, pos + 1, end)
        stop = pos + size
        if stop > end:
            raise ExampleDecodeError(f"bytes value at byte {pos} runs {stop - end} bytes past its list")
        out.append(bytes(buf[pos:stop]) if source is None else source[pos:stop])
        pos = stop
    return out


def _float_list(buf: bytes, pos: int, end: int) -> np.ndarray:
    chunks = []
    for field, wire, start, stop in _fields(buf, pos, end):
        if field != 1:
            continue
        if wire == _LEN and (stop - start) % 4:
            raise ExampleDecodeError(f"packed float list at byte {start} is {stop - start} bytes, not a multiple of 4")
        if wire in (_LEN, _I32):
            chunks.append(np.frombuffer(buf, "<f4", count=(stop - start) // 4, offset=start))
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _int64_list(buf: bytes, pos: int, end: int) -> np.ndarray:
    chunks, singles = [], []
    for field, wire, start, stop in _fields(buf, pos, end):
        if field == 1 and wire == _LEN:
            chunks.append(_packed_varints(buf, start, stop))
        elif field == 1 and wire == _VARINT:
            chunks.append(np.array([start], np.uint64))  # `start` holds the varint's value
    values = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    return values.view(np.int64)


_LIST_DECODERS = {_FLOAT_LIST: _float_list, _INT64_LIST: _int64_list}


def _packed_varints(buf: bytes, pos: int, end: int) -> np.ndarray:
    """uint64 [k] values of a packed varint run, decoded with array operations (no per-value Python loop)."""
    raw = np.frombuffer(buf, np.uint8, count=end - pos, offset=pos)
    if raw.size == 0:
        return np.zeros(0, np.uint64)
    last = np.flatnonzero(raw < 0x80)
    if last.size == 0 or last[-1] != raw.size - 1:
        raise ExampleDecodeError(f"packed int64 list at byte {pos} ends inside a varint")
    if last.size == raw.size:
        return raw.astype(np.uint64)
    first = np.concatenate(([0], last[:-1] + 1))
    lengths = last - first + 1
    if lengths.max() > 10:
        raise ExampleDecodeError(f"packed int64 list at byte {pos} holds a varint longer than 10 bytes")
    shifts = (np.arange(raw.size) - np.repeat(first, lengths)).astype(np.uint64) * np.uint64(7)
    parts = (raw & 0x7F).astype(np.uint64) << shifts
    return np.bitwise_or.reduceat(parts, first)


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, stop) per field in buf[pos:end]; a varint field's value is in `start`."""
    while pos < end:
        tag = buf[pos]
        tag, pos = (tag, pos + 1) if tag < 0x80 else _varint(buf, pos, end)  # one byte for fields 1..15
        field, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
            continue
        if wire == _LEN:
            size = buf[pos] if pos < end else 0x80
            size, pos = (size, pos + 1) if size < 0x80 else _varint(buf, pos, end)
        elif wire in (_I32, _I64):
            size = 4 if wire == _I32 else 8
        else:
            raise ExampleDecodeError(f"unsupported protobuf wire type {wire} (field {field}) at byte {pos}")
        if field == 0 or pos + size > end:
            raise ExampleDecodeError(f"field {field} at byte {pos} runs {pos + size - end} bytes past its message")
        yield field, wire, pos, pos + size
        pos += size


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            break
    raise ExampleDecodeError(f"truncated or overlong varint ending at byte {pos}")


def encode_example(features: Mapping[str, FeatureValue | Sequence], *, packed: bool = True) -> bytes:
    """Serialize features as a `tf.train.Example`.

    bytes/str values (or lists of them) become bytes_list; float arrays float_list (as float32, like TF);
    integer and bool arrays int64_list. `packed=False` writes repeated numbers unpacked (for testing readers).
    """
    entries = []
    for key, value in features.items():
        feature = _encode_feature(value, packed)
        entry = _len_field(1, key.encode("utf-8")) + _len_field(2, feature)
        entries.append(_len_field(1, entry))
    return _len_field(1, b"".join(entries))


def _encode_feature(value: FeatureValue | Sequence | bytes | str, packed: bool) -> bytes:
    if isinstance(value, (bytes, str)):
        value = [value]
    if not isinstance(value, np.ndarray) and all(isinstance(v, (bytes, str)) for v in value):
        items = [v.encode("utf-8") if isinstance(v, str) else v for v in value]
        return _len_field(_BYTES_LIST, b"".join(_len_field(1, item) for item in items))
    array = np.asarray(value).reshape(-1)
    if array.dtype.kind == "f":
        return _len_field(_FLOAT_LIST, _encode_floats(array.astype("<f4"), packed))
    if array.dtype.kind in "iub":
        return _len_field(_INT64_LIST, _encode_ints(array.astype(np.int64), packed))
    if array.dtype.kind in "SUO":
        return _encode_feature([v for v in array.tolist()], packed)
    raise TypeError(f"cannot store a {array.dtype} array in a tf.train.Feature")


def _encode_floats(values: np.ndarray, packed: bool) -> bytes:
    if packed:
        return _len_field(1, values.tobytes()) if values.size else b""
    return b"".join(bytes([(1 << 3) | _I32]) + values[i : i + 1].tobytes() for i in range(values.size))


def _encode_ints(values: np.ndarray, packed: bool) -> bytes:
    varints = [_varint_bytes(v) for v in values.tolist()]
    if packed:
        return _len_field(1, b"".join(varints)) if varints else b""
    return b"".join(bytes([(1 << 3) | _VARINT]) + v for v in varints)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint_bytes((field << 3) | _LEN) + _varint_bytes(len(payload)) + payload


def _varint_bytes(value: int) -> bytes:
    """Protobuf varint; a negative int64 is its 64-bit two's complement (10 bytes)."""
    value &= _U64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
