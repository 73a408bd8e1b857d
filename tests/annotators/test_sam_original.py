"""SAM's original checkpoints through Meta's `segment-anything` package: a tiny random-weight model saved as the
releases are (a bare state dict in a .pth), loaded with weights_only=True through the SamMasker's backend."""

import pickle

import numpy as np
import pytest
import torch

from vlaforge.annotators.grounding_frame import Detection, DetectorRun, RunStatus
from vlaforge.annotators.sam_masks import SamMasker
from vlaforge.annotators.sam_original import SamArchitecture, SamCheckpointError, load_sam_checkpoint
from vlaforge.flows.sample_data.tiny_detectors import tiny_original_sam, write_tiny_original_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BOXES = [(4.0, 6.0, 30.0, 40.0), (20.0, 10.0, 60.0, 44.0)]


def _frame(frame_factory):
    frame = frame_factory(0, size=(48, 64))
    frame.runs = [DetectorRun("gd", "m", "r", RunStatus.OK, [Detection("red mug", b, 0.9) for b in BOXES])]
    return frame


def test_the_masker_loads_an_original_checkpoint_and_masks_every_box_as_segment_anything_does(tmp_path,
                                                                                            frame_factory):
    from segment_anything import SamPredictor

    path = write_tiny_original_sam(tmp_path / "sam_tiny.pth")
    stage = SamMasker.Config(model=str(path), backend="segment_anything", device="cpu").build()
    stage.setup()
    (frame,) = stage([_frame(frame_factory)])
    masks = [d.mask for d in frame.runs[0].detections]
    assert all(m.shape == (48, 64) and m.dtype == bool for m in masks)
    assert stage.revision.startswith("sha256:")

    predictor = SamPredictor(tiny_original_sam())  # the same weights, through the package's own predictor
    predictor.set_image(frame.pixels)
    for box, mask in zip(BOXES, masks):
        expected, _, _ = predictor.predict(box=np.array(box), multimask_output=False)
        np.testing.assert_array_equal(mask, expected[0])


def test_the_architecture_is_read_from_the_released_vit_b_shapes():
    from segment_anything import build_sam_vit_b

    with torch.device("meta"):  # shapes only: no 375 MB of weights
        state = build_sam_vit_b().state_dict()
    found = SamArchitecture.of(state, "vit_b")
    assert (found.embed_dim, found.depth, found.num_heads, found.patch_size, found.image_size) == (768, 12, 12, 16,
                                                                                                   1024)
    assert (found.window_size, found.global_attn_indexes, found.out_chans) == (14, (2, 5, 8, 11), 256)
    assert (found.transformer_depth, found.transformer_mlp_dim, found.num_multimask_outputs) == (2, 2048, 3)
    assert (found.iou_head_depth, found.iou_head_hidden_dim, found.mask_in_chans) == (3, 256, 16)


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_files_that_are_not_sam_weights_are_refused_by_name(tmp_path):
    torch.save({"head.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(SamCheckpointError, match="other.pth: not a SAM state dict"):
        load_sam_checkpoint(tmp_path / "other.pth")
    (tmp_path / "code.pth").write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(SamCheckpointError, match="code.pth: cannot be loaded as weights"):
        load_sam_checkpoint(tmp_path / "code.pth")
    with pytest.raises(ValueError, match="backend must be one of"):
        SamMasker.Config(backend="onnx")
