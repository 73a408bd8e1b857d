"""Config fields renamed since saved files were written, and how a saved config is read under today's names.

A `policy.json` (`VLAConfig.from_dict`) or `trainer_config.json` (`TrainerConfig.from_dict`, which a resumed run
reads) written before a rename holds the old names; their readers pass each saved dataclass's fields through
`current_names`, so those files keep loading. Writers use only the new names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RENAMED_FIELDS = {"chunk_length": "chunk_len"}
"""Old name -> new name. `chunk_length` was a field of `DiTConfig`, `ChoicePoliciesConfig` and
`RobotSampleTransform.Config` (one name for the action chunk T, as in shard `meta.json` and `vlaforge ingest`)."""


def current_names(fields: Mapping[str, Any]) -> dict[str, Any]:
    """One saved dataclass's {field: value}, with every old field name replaced by its new one."""
    return {RENAMED_FIELDS.get(name, name): value for name, value in fields.items()}
