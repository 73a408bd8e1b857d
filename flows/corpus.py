"""The `corpus` Prefect flow: a corpus manifest over finished robot and VL datasets, for scheduled pipelines (the
`vlaforge corpus build` command writes the same file without Prefect). Thin wiring over
`pipelines/corpus_manifest.py`."""

from __future__ import annotations

import pathlib
from typing import Any

from prefect import flow, get_run_logger

from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus


@flow(name="corpus")
def corpus(output: str, robot: dict[str, str] | None = None, vl: dict[str, str] | None = None,
           ratio: dict[str, float] | None = None, seed: int = 0,
           weights: dict[str, float] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the corpus manifest `output` over `robot` and `vl` datasets (component name -> dataset directory),
    drawn VL:robot at `ratio` (default {"vl": 1, "robot": 6}); returns its counts. A different corpus already at
    `output` is refused unless `overwrite` (trainers may be reading it)."""
    inputs = [CorpusInput(path=pathlib.Path(path), kind=ComponentKind.ROBOT, name=name)
              for name, path in (robot or {}).items()]
    inputs += [CorpusInput(path=pathlib.Path(path), kind=ComponentKind.VL, name=name) for name, path in (vl or {}).items()]
    config = CorpusConfig(ratio=ratio or CorpusConfig().ratio, seed=seed, weights=weights or {})
    manifest = build_corpus(inputs, pathlib.Path(output), config)
    write_corpus(manifest, pathlib.Path(output), overwrite=overwrite)
    counts = {"output": output, "components": len(manifest.components),
              "shards": sum(len(c.shards) for c in manifest.components)}
    get_run_logger().info("corpus %s: %s", output, counts)
    return counts
