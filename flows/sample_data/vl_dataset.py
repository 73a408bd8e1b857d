"""A small VL dataset written through the real VL shard writer: captions and VQA over real photos.

For tests and the demo of everything that consumes VL shards (the corpus, the loader) before the generators run.
"""

from __future__ import annotations

import pathlib

import numpy as np

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.synth.scenes import CAPTIONS, PHOTOS, QUESTIONS, camera_frames
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_dataset import write_vl_summary, write_vl_unit
from vlaforge.pipelines.vl_samples import VlSample, assistant, build_vl_sample, user

SYNTH_PROVENANCE = [{"model": "vlaforge-synth", "revision": "1", "prompt_version": "none", "settings": {}}]


def synth_vl_sample(index: int, *, dataset: str, task: VlTask, image_size: tuple[int, int], images_per_sample: int,
                    validation_fraction: float) -> VlSample:
    """Sample `index`: one to a few views of one photo, with a caption or a question and its answer."""
    photo = PHOTOS[index % len(PHOTOS)]
    views = camera_frames(index % len(PHOTOS), images_per_sample + index % 3, *image_size)[:images_per_sample]
    images = [encode_jpeg(np.ascontiguousarray(view), FrameConfig(quality=90)) for view in views]
    if task == VlTask.CAPTION:
        turns = [user(*[None] * len(images), "Describe the image in one sentence."), assistant(CAPTIONS[photo])]
    else:
        question, answer = QUESTIONS[photo]
        turns = [user(*[None] * len(images), question), assistant(answer)]
    return build_vl_sample(
        key=f"{dataset}_{index:06d}", task=task, dataset=dataset, images=images, conversation=turns,
        source_key=f"{photo}_{index:06d}", source_group=f"{photo}_{index:06d}", provenance=SYNTH_PROVENANCE,
        validation_fraction=validation_fraction,
    )


def write_vl_dataset(
    output: str | pathlib.Path,
    *,
    n_samples: int = 40,
    task: VlTask = VlTask.CAPTION,
    dataset: str = "synth-vl-caption",
    image_size: tuple[int, int] = (224, 224),
    images_per_sample: int = 1,
    shard_samples: int = 16,
    samples_per_unit: int = 64,
    validation_fraction: float = 0.1,
) -> pathlib.Path:
    """Write a VL dataset of `n_samples` (shards, manifest.parquet, summary.json) under `output`; returns it."""
    output = pathlib.Path(output)
    config = ShardConfig(max_samples=shard_samples, max_bytes=None)
    for unit, start in enumerate(range(0, n_samples, samples_per_unit)):
        samples = (
            synth_vl_sample(i, dataset=dataset, task=task, image_size=image_size,
                            images_per_sample=images_per_sample, validation_fraction=validation_fraction)
            for i in range(start, min(start + samples_per_unit, n_samples))
        )
        write_vl_unit(output, dataset, unit, samples, source_files=["synthetic"], shard_config=config)
    write_vl_summary(output, dataset=dataset, task=task)
    return output
