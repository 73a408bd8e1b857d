"""The quarantine table: one row per item set aside as bad input, beside the manifest of every dataset output."""

from __future__ import annotations

import pathlib

import pyarrow as pa

from vlaforge.datasets.drops import Drop
from vlaforge.pipelines.atomic_files import atomic_write_table

QUARANTINE_NAME = "quarantine.parquet"
QUARANTINE_SCHEMA = pa.schema(
    [("file", pa.string()), ("episode", pa.string()), ("reason", pa.string()), ("message", pa.string()),
     ("steps", pa.int64())]
)


def write_quarantine(output: pathlib.Path, drops: list[Drop]) -> None:
    """`quarantine.parquet` in `output`: one row per quarantined item of `drops` (deliberate drops are left out)."""
    rows = [{name: d.as_row()[name] for name in QUARANTINE_SCHEMA.names} for d in drops if d.quarantined]
    atomic_write_table(output / QUARANTINE_NAME, pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA))
