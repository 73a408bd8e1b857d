"""The audit table's mask encoding (COCO uncompressed RLE) and its schema on read."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vlaforge.annotators.audit_table import AuditTable, CANDIDATE_SCHEMA, decode_rle, encode_rle, read_audit


def reference_rle(mask):
    """The definition, pixel by pixel: run lengths in column-major order, starting with zeros."""
    counts, current, run = [], False, 0
    for value in mask.ravel(order="F"):
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    return [*counts, run]


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_rle_matches_the_definition_and_round_trips(mask):
    counts = encode_rle(mask)
    assert counts == reference_rle(mask)
    assert np.array_equal(decode_rle(counts, *mask.shape), mask)


def test_rle_known_values():
    mask = np.zeros((3, 4), bool)
    mask[1:, 1] = True  # column 1, rows 1-2
    assert encode_rle(mask) == [4, 2, 6]
    assert encode_rle(np.ones((2, 2), bool)) == [0, 4] and encode_rle(np.zeros((2, 2), bool)) == [4]
    with pytest.raises(ValueError, match="not 3 x 4"):
        decode_rle([5], 3, 4)


def test_read_audit_casts_to_the_schema_and_names_missing_columns(tmp_path):
    assert read_audit(tmp_path, AuditTable.CANDIDATES).schema == CANDIDATE_SCHEMA  # no rows at all: empty table
    pq.write_table(pa.table({"candidate_id": ["x"]}), tmp_path / "audit.parquet")
    with pytest.raises(ValueError, match="lacks columns"):
        read_audit(tmp_path, AuditTable.CANDIDATES)


def test_columns_read_dictionary_encoded_hold_the_same_values(tmp_path):
    config = '{"box_iou": 0.6, "mask_iou": null}'
    pq.write_table(pa.table({"candidate_id": ["a", "b", "c"], "config_hash": ["h1", "h1", "h2"],
                             "config": [config, config, None]}), tmp_path / "audit.parquet")
    plain = read_audit(tmp_path, AuditTable.CANDIDATES, columns=["candidate_id", "config"])
    encoded = read_audit(tmp_path, AuditTable.CANDIDATES, columns=["candidate_id", "config"], dictionary=("config",))
    assert pa.types.is_dictionary(encoded.schema.field("config").type)
    assert encoded.column("config").to_pylist() == plain.column("config").to_pylist() == [config, config, None]
    empty = read_audit(tmp_path / "none", AuditTable.CANDIDATES, columns=["config"], dictionary=("config",))
    assert empty.num_rows == 0 and pa.types.is_dictionary(empty.schema.field("config").type)
