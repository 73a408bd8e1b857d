"""tf.train.Example by hand: agrees with Google's protobuf runtime both ways, and fails loudly on bad bytes."""

import random
import warnings

import numpy as np
import pytest

from vlaforge.datasets.tf_example import ExampleDecodeError, decode_example, encode_example

FEATURES = {
    "steps/observation/wrist_image_left": [b"\xff\xd8jpeg-0\xff\xd9", b"\xff\xd8jpeg-1\xff\xd9", b""],
    "steps/action": np.array([[0.5, -1.25, np.nan], [3.0e38, -0.0, 1e-7]]),
    "steps/is_first": np.array([True, False]),
    "steps/counter": np.array([0, 1, 127, 128, 300, -1, -(2**63), 2**63 - 1]),
    "episode_metadata/file_path": "gs://bucket/ILIAD/success/trajectory.h5",
    "empty/floats": np.zeros(0, np.float32),
}


def _tfrecord_example_class():
    """Google's protobuf Example message as the `tfrecord` package ships it; if that module does not load with the
    installed protobuf, say so and use the one built from a descriptor (the test never silently loses its oracle)."""
    try:
        from tfrecord import example_pb2

        return example_pb2.Example
    except Exception as error:  # noqa: BLE001 - any import-time incompatibility means: use the fallback
        warnings.warn(f"tfrecord's example_pb2 does not load ({error!r}); using an Example built from a descriptor")
        return _descriptor_example_class()


def _descriptor_example_class():
    """tensorflow/core/example/{example,feature}.proto, built at runtime from a FileDescriptorProto."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    t = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="vlaforge_test_example.proto", package="vt")
    lists = ((1, "bytes_list", "BytesList", t.TYPE_BYTES), (2, "float_list", "FloatList", t.TYPE_FLOAT),
             (3, "int64_list", "Int64List", t.TYPE_INT64))
    for _, _, message_name, kind in lists:
        field = proto.message_type.add(name=message_name).field.add(name="value", number=1, type=kind,
                                                                    label=t.LABEL_REPEATED)
        if kind != t.TYPE_BYTES:
            field.options.packed = True
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name, message_name, _ in lists:
        feature.field.add(name=name, number=number, type=t.TYPE_MESSAGE, type_name=f".vt.{message_name}",
                          label=t.LABEL_OPTIONAL, oneof_index=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=t.TYPE_STRING, label=t.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=t.TYPE_MESSAGE, type_name=".vt.Feature", label=t.LABEL_OPTIONAL)
    features.field.add(name="feature", number=1, type=t.TYPE_MESSAGE, label=t.LABEL_REPEATED,
                       type_name=".vt.Features.FeatureEntry")
    proto.message_type.add(name="Example").field.add(name="features", number=1, type=t.TYPE_MESSAGE,
                                                     type_name=".vt.Features", label=t.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("vt.Example"))


@pytest.fixture(params=["tfrecord-package", "descriptor"])
def example_class(request):
    return _tfrecord_example_class() if request.param == "tfrecord-package" else _descriptor_example_class()


def _check_decoded(decoded):
    assert set(decoded) == set(FEATURES)
    assert decoded["steps/observation/wrist_image_left"] == FEATURES["steps/observation/wrist_image_left"]
    action = decoded["steps/action"]
    assert action.dtype == np.float32 and action.shape == (6,)
    np.testing.assert_array_equal(action, FEATURES["steps/action"].reshape(-1).astype(np.float32))
    assert decoded["steps/is_first"].tolist() == [1, 0]
    assert decoded["steps/counter"].dtype == np.int64
    assert decoded["steps/counter"].tolist() == FEATURES["steps/counter"].tolist()
    assert decoded["episode_metadata/file_path"] == [FEATURES["episode_metadata/file_path"].encode()]
    assert decoded["empty/floats"].size == 0


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_round_trip_packed_and_unpacked(packed):
    _check_decoded(decode_example(encode_example(FEATURES, packed=packed)))


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_google_protobuf_reads_what_we_write(packed, example_class):
    example = example_class()
    example.ParseFromString(encode_example(FEATURES, packed=packed))
    feature = example.features.feature
    assert list(feature["steps/observation/wrist_image_left"].bytes_list.value) == FEATURES[
        "steps/observation/wrist_image_left"
    ]
    assert list(feature["steps/counter"].int64_list.value) == FEATURES["steps/counter"].tolist()
    np.testing.assert_array_equal(
        np.array(feature["steps/action"].float_list.value, np.float32),
        FEATURES["steps/action"].reshape(-1).astype(np.float32),
    )
    assert feature["empty/floats"].WhichOneof("kind") == "float_list"


def test_we_read_what_google_protobuf_writes(example_class):
    example = example_class()
    feature = example.features.feature
    frames = FEATURES["steps/observation/wrist_image_left"]
    feature["steps/observation/wrist_image_left"].bytes_list.value.extend(frames)
    feature["steps/action"].float_list.value.extend(FEATURES["steps/action"].reshape(-1).tolist())
    feature["steps/is_first"].int64_list.value.extend([1, 0])
    feature["steps/counter"].int64_list.value.extend(FEATURES["steps/counter"].tolist())
    feature["episode_metadata/file_path"].bytes_list.value.append(FEATURES["episode_metadata/file_path"].encode())
    feature["empty/floats"].float_list.SetInParent()
    _check_decoded(decode_example(example.SerializeToString()))


def test_every_truncation_raises_the_named_error():
    data = encode_example(FEATURES)
    for cut in range(1, len(data)):
        with pytest.raises(ExampleDecodeError):
            decode_example(data[:cut])
    assert decode_example(b"") == {}


def test_garbage_never_leaks_an_unnamed_exception():
    rng = random.Random(0)
    valid = bytearray(encode_example(FEATURES))
    for _ in range(2000):
        damaged = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            decode_example(bytes(damaged))
        except ExampleDecodeError:
            pass


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x0b", "wire type 3"),  # a group start: not used by Example
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint"),  # an 11-byte length
        (b"\x0a\x05\x0a\x03", "past"),  # a field longer than its message
    ],
)
def test_malformed_bytes_say_what_is_wrong(data, message):
    with pytest.raises(ExampleDecodeError, match=message):
        decode_example(data)
