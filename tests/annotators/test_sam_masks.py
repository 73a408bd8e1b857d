"""SAM masks for every detector box, on a tiny random-weight SAM loaded through `from_pretrained`."""

import numpy as np
import pytest

from vlaforge.annotators.grounding_frame import Detection, DetectorRun, RunStatus
from vlaforge.annotators.sam_masks import SamMasker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_runs(frame):
    boxes = [(2.0, 3.0, 30.0, 40.0), (20.0, 10.0, 60.0, 45.0), (0.0, 0.0, 64.0, 48.0)]
    frame.runs = [
        DetectorRun("a", "m", "r", RunStatus.OK, [Detection("red mug", b, 0.9) for b in boxes[:2]]),
        DetectorRun("b", "m", "r", RunStatus.OK, [Detection("shelf", boxes[2], 0.5)]),
        DetectorRun("c", "m", "r", RunStatus.FAILED, [], "timeout"),
    ]
    return frame


def _masks(frames):
    return [d.mask for f in frames for r in f.runs for d in r.detections]


def _run(tiny_sam, frames, **options):
    stage = SamMasker.Config(model=str(tiny_sam), device="cpu", **options).build()
    stage.setup()
    return stage(frames), stage


def test_every_box_gets_a_mask_of_the_image_size(tiny_sam, frame_factory):
    empty = frame_factory(1)
    frames, stage = _run(tiny_sam, [_with_runs(frame_factory(0)), empty])
    masks = _masks(frames[:1])
    assert len(masks) == 3 and all(m.shape == (48, 64) and m.dtype == bool for m in masks)
    assert stage.revision.startswith("sha256:") and empty.runs == []


def test_masks_do_not_depend_on_batching(tiny_sam, frame_factory):
    def frames():
        return [_with_runs(frame_factory(i)) for i in range(3)]

    batched, _ = _run(tiny_sam, frames(), batch_size=3, max_boxes_per_pass=64)
    single, _ = _run(tiny_sam, frames(), batch_size=1, max_boxes_per_pass=1)
    for a, b in zip(_masks(batched), _masks(single)):
        assert np.array_equal(a, b)


def test_different_boxes_prompt_different_masks(tiny_sam, frame_factory):
    frames, _ = _run(tiny_sam, [_with_runs(frame_factory(0))])
    first, second, whole = _masks(frames)
    assert not np.array_equal(first, whole) or not np.array_equal(second, whole)


def test_a_pickled_checkpoint_is_refused(tiny_sam, tmp_path):
    """Only safetensors weights load: a `pytorch_model.bin` (a pickle) is never unpickled."""
    import shutil

    import torch
    from transformers import SamModel

    # transformers 5 only writes safetensors; an older checkpoint is config.json + a torch.save'd state dict.
    pickled = tmp_path / "pickled-sam"
    shutil.copytree(tiny_sam, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(SamModel.from_pretrained(tiny_sam).state_dict(), pickled / "pytorch_model.bin")
    assert (pickled / "pytorch_model.bin").exists() and not list(pickled.glob("*.safetensors"))
    stage = SamMasker.Config(model=str(pickled), device="cpu").build()
    with pytest.raises(OSError, match="safetensors"):
        stage.setup()
