"""Box IoU, mask IoU and weighted box fusion: properties, and the reference implementation (ensemble-boxes)."""

import numpy as np
import pytest
from ensemble_boxes import weighted_boxes_fusion as reference_wbf
from hypothesis import given, settings
from hypothesis import strategies as st

from vlaforge.annotators.box_fusion import box_iou, mask_iou, weighted_boxes_fusion

@st.composite
def boxes(draw, min_side=1e-3):
    """A box of positive area inside the unit square."""
    x1 = draw(st.floats(0.0, 1.0 - min_side))
    y1 = draw(st.floats(0.0, 1.0 - min_side))
    x2 = draw(st.floats(x1 + min_side, 1.0))
    y2 = draw(st.floats(y1 + min_side, 1.0))
    return np.array([x1, y1, x2, y2])


@given(boxes(), boxes())
def test_iou_is_symmetric_bounded_and_one_with_itself(a, b):
    ab, ba = box_iou(a, b)[0, 0], box_iou(b, a)[0, 0]
    assert ab == pytest.approx(ba) and 0.0 <= ab <= 1.0
    assert box_iou(a, a)[0, 0] == pytest.approx(1.0)


@given(boxes(), boxes(), st.floats(0.1, 100.0))
def test_iou_does_not_change_when_both_boxes_are_scaled(a, b, scale):
    assert box_iou(a * scale, b * scale)[0, 0] == pytest.approx(box_iou(a, b)[0, 0], abs=1e-9)


def test_iou_of_known_boxes():
    assert box_iou(np.array([0, 0, 2, 2]), np.array([1, 0, 3, 2]))[0, 0] == pytest.approx(2 / 6)
    assert box_iou(np.array([0, 0, 1, 1]), np.array([2, 2, 3, 3]))[0, 0] == 0.0
    assert box_iou(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))[0, 0] == 0.0  # empty union, not NaN
    assert box_iou(np.zeros((0, 4)), np.array([0, 0, 1, 1])).shape == (0, 1)


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a) == 1.0 and mask_iou(a, ~a) == 0.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        mask_iou(a, np.zeros((3, 3), bool))


@st.composite
def model_outputs(draw):
    """2-4 models' boxes with distinct scores (ties would make the visiting order, and so the answer, arbitrary)."""
    n_models = draw(st.integers(2, 4))
    counts = [draw(st.integers(0, 5)) for _ in range(n_models)]
    scores = draw(st.lists(st.floats(0.05, 1.0), min_size=sum(counts), max_size=sum(counts),
                           unique=True))
    all_boxes = [draw(boxes(min_side=0.02)) for _ in range(sum(counts))]
    weights = [draw(st.floats(0.5, 3.0)) for _ in range(n_models)]
    per_model, start = [], 0
    for count in counts:
        per_model.append((np.array(all_boxes[start:start + count]).reshape(-1, 4),
                          np.array(scores[start:start + count])))
        start += count
    return per_model, weights


@settings(max_examples=150, deadline=None)
@given(model_outputs(), st.floats(0.1, 0.9))
def test_fusion_matches_ensemble_boxes(outputs, iou_thr):
    per_model, weights = outputs
    # An IoU exactly at the threshold (boxes on a grid against a threshold such as 0.5) is a tie that the last bit
    # of float rounding decides, differently in numpy and in plain floats: keep the threshold off such ties.
    iou_thr += 3.7e-9
    ours = weighted_boxes_fusion([b for b, _ in per_model], [s for _, s in per_model], weights=weights,
                                 iou_thr=iou_thr)
    ref_boxes, ref_scores, _ = reference_wbf(
        [b.tolist() for b, _ in per_model], [s.tolist() for _, s in per_model],
        [[0] * len(s) for _, s in per_model], weights=weights, iou_thr=iou_thr)
    assert len(ours) == len(ref_boxes)
    np.testing.assert_allclose([f.score for f in ours], ref_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([f.box for f in ours] if ours else np.zeros((0, 4)), ref_boxes, atol=1e-5)


@settings(max_examples=100, deadline=None)
@given(model_outputs())
def test_fused_box_lies_within_its_members_and_every_box_is_used_once(outputs):
    per_model, weights = outputs
    fused = weighted_boxes_fusion([b for b, _ in per_model], [s for _, s in per_model], weights=weights,
                                  iou_thr=0.3, one_per_model=True)
    members = [m for f in fused for m in f.members]
    assert sorted(members) == sorted((m, i) for m, (b, _) in enumerate(per_model) for i in range(len(b)))
    for f in fused:
        member_boxes = np.array([per_model[m][0][i] for m, i in f.members])
        assert np.all(f.box >= member_boxes.min(0) - 1e-9) and np.all(f.box <= member_boxes.max(0) + 1e-9)
        assert len({m for m, _ in f.members}) == len(f.members)  # one box per model per cluster


def test_identical_boxes_fuse_into_that_box_with_the_mean_score():
    box = np.array([[10.0, 20.0, 50.0, 60.0]])
    (fused,) = weighted_boxes_fusion([box, box, box], [np.array([0.9]), np.array([0.6]), np.array([0.3])])
    np.testing.assert_allclose(fused.box, box[0])
    assert fused.score == pytest.approx(0.6)
    assert weighted_boxes_fusion([np.zeros((0, 4))], [np.zeros(0)]) == []


def test_fusion_rejects_a_wrong_number_of_weights():
    with pytest.raises(ValueError, match="2 weights for 1 models"):
        weighted_boxes_fusion([np.zeros((0, 4))], [np.zeros(0)], weights=[1, 2])
