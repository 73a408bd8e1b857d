"""`vlaforge inspect` for RLDS datasets as TFDS writes them (DROID): the builder, version and split, the episode
and shard counts from `dataset_info.json`, every feature of `features.json`, and the feature mapping the ingest
would need where this dataset's features are not DROID 1.0.1's.

Only the two metadata files are read, and the shard files are only looked for (not opened): a listed shard that is
absent is a problem the ingest refuses.
"""

from __future__ import annotations

import pathlib

from vlaforge.datasets.droid_rlds import DroidRldsSource
from vlaforge.datasets.raw_report import InspectionTable, RawReport
from vlaforge.datasets.source import SourceError
from vlaforge.datasets.tfds_features import FeaturesError, load_dataset_info, load_features


def inspect_rlds(root: pathlib.Path, *, max_files: int = 20) -> RawReport:
    report = RawReport(format="droid", root=root)
    try:
        info = load_dataset_info(root / "dataset_info.json")
        specs = load_features(root / "features.json")
    except FeaturesError as error:
        raise SourceError(f"{error}; vlaforge reads TFDS's own dataset_info.json and features.json") from error
    for name, split in sorted(info.splits.items()):
        files = split.shard_files(info.name, info.file_format)
        absent = [file for file in files if not (root / file).is_file()]
        report.summary.append(f"{info.name} {info.version}, split {name}: {sum(split.shard_lengths):,} episodes in "
                              f"{len(files):,} {info.file_format} shards ({split.num_bytes / 1e9:.2f} GB)")
        if absent:
            report.problems.append(f"split {name}: {len(absent)} of {len(files)} shards are absent, first "
                                   f"{absent[0]}; the ingest refuses the split until they are downloaded")
    table = InspectionTable("features.json", ["feature", "kind", "dtype", "shape", "per step", "encoding"])
    for spec in specs.values():
        table.rows.append([spec.key, spec.kind.value, spec.dtype, str(list(spec.shape)), "yes" if spec.per_step
                           else "episode", spec.encoding or "-"])
    report.tables.append(table)
    source = DroidRldsSource.Config(root=str(root)).build()
    report.settings.update(source.suggested_settings(specs))
    defaults = source.config
    report.name = info.name
    if defaults.split not in info.splits:
        report.problems.append(f"no split {defaults.split!r} (the default); the dataset has {sorted(info.splits)}")
        report.settings["split"] = sorted(info.splits)[0]
    report.summary.append(f"read as: state {list(report.settings.get('state_features', defaults.state_features))}, "
                          f"action {list(report.settings.get('action_features', defaults.action_features))}, "
                          f"{defaults.control_rate_hz:g} Hz (DroidRldsSource's defaults; RLDS does not record a rate)")
    return report
