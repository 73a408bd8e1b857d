"""The `corpus` Prefect flow: a corpus manifest over finished robot and VL datasets, for scheduled pipelines (the
`vlaforge corpus build` command writes the same file without Prefect). Thin wiring over
`pipelines/corpus_manifest.py`."""

from __future__ import annotations

import pathlib
from typing import Any

from prefect import flow, get_run_logger

from vlaforge.flows.object_arguments import local_input, local_output
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
from vlaforge.pipelines.object_mirror import is_object_url


@flow(name="corpus")
def corpus(output: str, robot: dict[str, str] | None = None, vl: dict[str, str] | None = None,
           ratio: dict[str, float] | None = None, seed: int = 0,
           weights: dict[str, float] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the corpus manifest `output` over `robot` and `vl` datasets (component name -> dataset directory),
    drawn VL:robot at `ratio` (default {"vl": 1, "robot": 6}); returns its counts. A different corpus already at
    `output` is refused unless `overwrite` (trainers may be reading it)."""
    # s3:// given to a deployment: manifests and statistics pulled, the corpus written in its folder's mirror
    inputs = [CorpusInput(path=pathlib.Path(local_input(path, skip_suffixes=(".tar",))), kind=kind, name=name)
              for kind, paths in ((ComponentKind.ROBOT, robot), (ComponentKind.VL, vl))
              for name, path in (paths or {}).items()]
    folder, _, file_name = output.rpartition("/") if is_object_url(output) else ("", "", "")
    local, mirror = local_output(folder) if folder else (output, None)
    path = pathlib.Path(local) / file_name if folder else pathlib.Path(output)
    config = CorpusConfig(ratio=ratio or CorpusConfig().ratio, seed=seed, weights=weights or {})
    manifest = build_corpus(inputs, path, config)
    write_corpus(manifest, path, overwrite=overwrite)
    if mirror is not None:
        mirror.push()
    counts = {"output": output, "components": len(manifest.components),
              "shards": sum(len(c.shards) for c in manifest.components)}
    get_run_logger().info("corpus %s: %s", output, counts)
    return counts
