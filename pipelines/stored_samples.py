"""The last stage of a dataset edit: stored episodes back into robot samples, member bytes as they were, and one
`lineage` row per episode written: the input dataset, its manifest's sha256 and the shards the episode came from."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from vlaforge.datasets.schema import MetaField
from vlaforge.pipelines.samples import RobotSample
from vlaforge.pipelines.shards.manifest import MANIFEST_NAME
from vlaforge.pipelines.shards.stored_episodes import KEY, StoredEpisode
from vlaforge.pipelines.split import Split
from vlaforge.pipelines.stage import Stage, StageConfig

LINEAGE_TABLE = "lineage"
LINEAGE_SCHEMA = pa.schema([("episode_id", pa.string()), ("input", pa.string()), ("input_dataset", pa.string()),
                            ("input_manifest_sha256", pa.string()), ("shards", pa.list_(pa.string())),
                            ("steps", pa.int64())])


class StoredSamples(Stage):
    """Stored episodes -> one `RobotSample` per step, in order, with the members (and key) the step was stored with."""

    table_schemas = {LINEAGE_TABLE: LINEAGE_SCHEMA}

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        pass

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._rows: list[dict[str, Any]] = []
        self._digests: dict[str, str] = {}

    def __call__(self, batch: list[StoredEpisode]) -> list[RobotSample]:
        return list(self.stream(batch))

    def stream(self, batch: list[StoredEpisode]) -> Iterator[RobotSample]:
        for episode in batch:
            self._rows.append({"episode_id": episode.episode_id, "input": episode.input,
                               "input_dataset": str(episode.meta.get(MetaField.SOURCE.value, "")),
                               "input_manifest_sha256": self._manifest_digest(episode.input),
                               "shards": episode.shards, "steps": len(episode)})
            split = Split(episode.split)
            for step in episode.steps:
                members = {name: data for name, data in step.items() if name != KEY}
                yield RobotSample(step[KEY].decode(), split, members, episode.episode_id)

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        rows, self._rows = self._rows, []
        return {LINEAGE_TABLE: rows}

    def _manifest_digest(self, root: str) -> str:
        if root not in self._digests:
            self._digests[root] = hashlib.sha256((pathlib.Path(root) / MANIFEST_NAME).read_bytes()).hexdigest()
        return self._digests[root]
