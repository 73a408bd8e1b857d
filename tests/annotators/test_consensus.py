"""The consensus engine on hand-built detections whose right answer is known."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlaforge.annotators.audit_table import AuditTable, candidate_row, decode_rle
from vlaforge.annotators.consensus import ConsensusStage, decide_frame
from vlaforge.annotators.grounding_frame import (
    Decision,
    DecisionReason,
    Detection,
    DetectorRun,
    GroundingFrame,
    RunStatus,
    Vote,
)

H, W = 60, 80
MUG = (10.0, 10.0, 30.0, 40.0)
SHELF = (40.0, 5.0, 78.0, 20.0)


def mask_of(box):
    mask = np.zeros((H, W), bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[y1:y2, x1:x2] = True
    return mask


def det(phrase, box, score=0.8, mask="box"):
    return Detection(phrase, tuple(float(v) for v in box), score, mask_of(box) if isinstance(mask, str) else mask)


def run(name, *detections, failed=""):
    status = RunStatus.FAILED if failed else RunStatus.OK
    return DetectorRun(name, f"{name}-model", "rev1", status, list(detections), error=failed)


def frame(*runs, phrases=("mug", "shelf"), negatives=()):
    return GroundingFrame(
        dataset="droid", episode_id="ep-1", source_file="a.tar", step=3, camera="wrist", jpeg=b"",
        pixels=np.zeros((H, W, 3), np.uint8), selected_by="first", instructions=["put the mug on the shelf"],
        phrases=list(phrases), negatives=list(negatives), runs=list(runs),
    )


CONFIG = ConsensusStage.Config(min_votes=2, box_iou=0.6, mask_iou=0.6, review_margin=0.1)


def test_three_detectors_that_agree_give_one_accepted_object_per_phrase():
    shifted = (11.0, 10.0, 31.0, 41.0)
    f = frame(run("gdino", det("mug", MUG, 0.9), det("shelf", SHELF)),
              run("llmdet", det("mug", shifted, 0.6), det("shelf", SHELF)),
              run("hosted", det("mug", MUG, 0.3), det("shelf", SHELF)))
    candidates = decide_frame(f, CONFIG)
    assert [(c.phrase, c.decision, c.reason) for c in candidates] == [
        ("mug", Decision.ACCEPTED, DecisionReason.AGREED), ("shelf", Decision.ACCEPTED, DecisionReason.AGREED)]
    mug = candidates[0]
    assert mug.agreeing == ["gdino", "hosted", "llmdet"] and mug.detectors_ran == 3 and not mug.failed
    expected = (0.9 * np.array(MUG) + 0.6 * np.array(shifted) + 0.3 * np.array(MUG)) / 1.8  # score-weighted mean
    np.testing.assert_allclose(mug.fused_box, expected)
    assert mug.fused_score == pytest.approx(0.6)
    assert mug.box_iou == pytest.approx(min(p.box_iou for p in mug.pairs)) and mug.box_iou > 0.8


def test_one_liar_is_outvoted_and_its_box_is_rejected_as_a_lone_detection():
    liar_box = (50.0, 30.0, 70.0, 55.0)
    f = frame(run("gdino", det("mug", MUG)), run("llmdet", det("mug", liar_box, 0.95)),
              run("hosted", det("mug", MUG)), phrases=("mug",))
    candidates = sorted(decide_frame(f, CONFIG), key=lambda c: c.decision.value)
    assert [(c.decision, c.reason, c.agreeing) for c in candidates] == [
        (Decision.ACCEPTED, DecisionReason.AGREED, ["gdino", "hosted"]),
        (Decision.REJECTED, DecisionReason.SINGLE_DETECTOR, ["llmdet"]),
    ]
    np.testing.assert_allclose(candidates[0].fused_box, MUG)


def test_a_liar_that_overlaps_a_little_joins_the_candidate_but_not_the_fused_box():
    sloppy = (10.0, 10.0, 30.0, 70.0)  # IoU 0.5 with MUG: the same candidate (> 0.3), no agreement (< 0.6 - 0.1)
    f = frame(run("gdino", det("mug", MUG)), run("llmdet", det("mug", sloppy, 0.99)),
              run("hosted", det("mug", MUG)), phrases=("mug",))
    (c,) = decide_frame(f, CONFIG)
    assert c.decision == Decision.ACCEPTED and c.agreeing == ["gdino", "hosted"] and len(c.votes) == 3
    np.testing.assert_allclose(c.fused_box, MUG)  # the liar's box does not pull the fused box
    assert c.box_iou == pytest.approx(0.5)


def test_disjoint_boxes_are_all_rejected():
    f = frame(run("gdino", det("mug", (0, 0, 10, 10))), run("llmdet", det("mug", (20, 20, 30, 30))),
              run("hosted", det("mug", (40, 40, 50, 50))), phrases=("mug",))
    candidates = decide_frame(f, CONFIG)
    assert len(candidates) == 3
    assert {(c.decision, c.reason) for c in candidates} == {(Decision.REJECTED, DecisionReason.SINGLE_DETECTOR)}


def test_empty_outputs_give_no_candidates():
    assert decide_frame(frame(run("gdino"), run("llmdet"), run("hosted")), CONFIG) == []


def test_a_failed_detector_is_recorded_and_the_others_still_decide():
    f = frame(run("gdino", det("mug", MUG)), run("llmdet", det("mug", MUG)), run("hosted", failed="timeout after 10 s"),
              phrases=("mug",))
    (c,) = decide_frame(f, CONFIG)
    assert c.decision == Decision.ACCEPTED and c.detectors_ran == 2 and c.detectors_total == 3
    assert c.failed == {"hosted": "timeout after 10 s"}
    assert "2 of 3 detectors agree" in c.detail and "hosted failed: timeout after 10 s" in c.detail


def test_with_two_detectors_failed_a_lone_box_cannot_reach_quorum_and_needs_review():
    f = frame(run("gdino", det("mug", MUG)), run("llmdet", failed="CUDA out of memory"),
              run("hosted", failed="HTTP 503"), phrases=("mug",))
    (c,) = decide_frame(f, CONFIG)
    assert (c.decision, c.reason) == (Decision.NEEDS_REVIEW, DecisionReason.QUORUM_UNREACHABLE)
    assert sorted(c.failed) == ["hosted", "llmdet"]


def test_borderline_box_agreement_needs_review():
    near = (10.0, 10.0, 30.0, 47.0)  # IoU 30/37 ~ 0.81 -> make it borderline with a stricter threshold
    config = ConsensusStage.Config(min_votes=2, box_iou=0.85, mask_iou=None, review_margin=0.1)
    f = frame(run("gdino", det("mug", MUG)), run("llmdet", det("mug", near)), phrases=("mug",))
    (c,) = decide_frame(f, config)
    assert (c.decision, c.reason) == (Decision.NEEDS_REVIEW, DecisionReason.BORDERLINE_BOX)


def test_boxes_that_agree_but_masks_that_do_not_are_rejected():
    top, bottom = mask_of((10, 10, 30, 25)), mask_of((10, 25, 30, 40))
    f = frame(run("gdino", det("mug", MUG, mask=top)), run("llmdet", det("mug", MUG, mask=bottom)),
              phrases=("mug",))
    (c,) = decide_frame(f, CONFIG)
    assert (c.decision, c.reason) == (Decision.REJECTED, DecisionReason.MASK_DISAGREEMENT)
    assert c.box_iou == 1.0 and c.mask_iou == 0.0


def test_missing_masks_need_review_unless_masks_are_not_judged():
    f = frame(run("gdino", det("mug", MUG, mask=None)), run("llmdet", det("mug", MUG, mask=None)), phrases=("mug",))
    (c,) = decide_frame(f, CONFIG)
    assert (c.decision, c.reason) == (Decision.NEEDS_REVIEW, DecisionReason.MISSING_MASK)
    (c,) = decide_frame(f, ConsensusStage.Config(mask_iou=None))
    assert c.decision == Decision.ACCEPTED and c.mask_iou is None and c.fused_mask is None


def test_boxes_for_a_negative_phrase_are_hallucinations_even_when_detectors_agree():
    f = frame(run("gdino", det("elephant", MUG)), run("llmdet", det("elephant", MUG)), phrases=("mug",),
              negatives=("elephant",))
    (c,) = decide_frame(f, CONFIG)
    assert c.negative and (c.decision, c.reason) == (Decision.REJECTED, DecisionReason.NEGATIVE_PHRASE)


def test_low_fused_score_rejects_an_agreed_candidate():
    f = frame(run("gdino", det("mug", MUG, 0.1)), run("llmdet", det("mug", MUG, 0.2)), phrases=("mug",))
    (c,) = decide_frame(f, ConsensusStage.Config(min_score=0.5))
    assert (c.decision, c.reason) == (Decision.REJECTED, DecisionReason.LOW_SCORE)


def test_min_votes_one_accepts_a_single_detector():
    f = frame(run("gdino", det("mug", MUG)), run("llmdet"), phrases=("mug",))
    (c,) = decide_frame(f, ConsensusStage.Config(min_votes=1))
    assert c.decision == Decision.ACCEPTED
    assert c.detail.startswith("1 of 2 detectors boxes it (gdino), and min_votes 1 takes a single detector's box")
    assert "its mask is kept" in c.detail
    (lone,) = decide_frame(f, ConsensusStage.Config())
    assert lone.decision == Decision.REJECTED and lone.detail.startswith("no two of 2 detectors agree on the box")


def test_detector_weights_pull_the_fused_box():
    right = (14.0, 10.0, 34.0, 40.0)
    f = frame(run("gdino", det("mug", MUG, 0.5)), run("hosted", det("mug", right, 0.5)), phrases=("mug",))
    (even,) = decide_frame(f, ConsensusStage.Config(mask_iou=None, box_iou=0.5))
    (heavy,) = decide_frame(f, ConsensusStage.Config(mask_iou=None, box_iou=0.5,
                                                     detector_weights=(("hosted", 3.0),)))
    assert even.fused_box[0] == pytest.approx(12.0) and heavy.fused_box[0] == pytest.approx(13.0)


def test_stage_records_one_audit_row_per_candidate_with_the_config_hash():
    stage = ConsensusStage.Config(keep_images="flagged").build()
    f = frame(run("gdino", det("mug", MUG)), run("llmdet", det("mug", MUG), det("shelf", SHELF)),
              run("hosted", failed="HTTP 500"))
    (out,) = stage([f])
    tables = stage.take_tables()
    audit, frames = tables[AuditTable.CANDIDATES.value], tables[AuditTable.FRAMES.value]
    assert [(r["phrase"], r["decision"]) for r in audit] == [("mug", "accepted"), ("shelf", "rejected")]
    row = audit[0]
    assert row["config_hash"] == stage.config.digest() and '"box_iou": 0.6' in row["config"]
    assert [(d["detector"], d["status"], d["voted"]) for d in row["detections"]] == [
        ("gdino", "ok", True), ("llmdet", "ok", True), ("hosted", "failed", False)]
    assert row["detectors_failed"] == ["hosted"] and row["votes"] == 2
    assert decode_rle(row["fused_mask_rle"], H, W).sum() == mask_of(MUG).sum()
    assert frames[0]["rejected"] == 1 and frames[0]["image_jpeg"] == b""  # flagged: its image is kept
    assert stage.take_tables() == {}
    assert ConsensusStage.Config(box_iou=0.7).digest() != stage.config.digest()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="min_votes must be >= 1, got 0"):
        ConsensusStage.Config(min_votes=0)
    with pytest.raises(ValueError, match=r"box_iou must be in \[0, 1\], got 1.5"):
        ConsensusStage.Config(box_iou=1.5)


def test_candidate_row_clips_the_qwen_box_to_the_image():
    f = frame(run("gdino", det("mug", (-5, -5, 90, 70))), run("llmdet", det("mug", (-5, -5, 90, 70))),
              phrases=("mug",))
    (c,) = decide_frame(f, CONFIG)
    assert candidate_row(f, c, "h", "{}")["fused_box_qwen"] == [0, 0, 1000, 1000]


# Real detectors: boxes without scores, scores of 0, scores on different scales, many voters.

def nine_faces(mask="box", score=0.9):
    """Nine detectors boxing one face within a pixel or two of each other (as real face detectors do)."""
    return [run(f"det{i}", det("mug", (10.0 + i % 3, 10.0 + i % 2, 30.0 + i % 3, 40.0), score, mask=mask))
            for i in range(9)]


def test_box_only_consensus_accepts_nine_agreeing_boxes_and_says_so():
    f = frame(*nine_faces(mask=None), phrases=("mug",))
    (c,) = decide_frame(f, ConsensusStage.Config(mask_iou=None))
    assert (c.decision, c.reason) == (Decision.ACCEPTED, DecisionReason.AGREED)
    assert len(c.agreeing) == 9 and c.detail.startswith("9 of 9 detectors agree on the box")
    assert "masks not judged" in c.detail


def test_without_masks_under_a_mask_rule_the_sentence_counts_the_agreeing_boxes():
    f = frame(*nine_faces(mask=None), phrases=("mug",))
    (c,) = decide_frame(f, CONFIG)
    assert (c.decision, c.reason) == (Decision.NEEDS_REVIEW, DecisionReason.MISSING_MASK)
    assert c.detail.startswith("9 of 9 detectors agree on the box") and "masks missing for det0" in c.detail
    assert "1 of 9" not in c.detail


def test_boxes_without_a_score_vote_and_fuse():
    f = frame(run("haar", det("mug", MUG, None)), run("hog", det("mug", (11.0, 10.0, 31.0, 41.0), None)),
              phrases=("mug",))
    (c,) = decide_frame(f, ConsensusStage.Config(mask_iou=None))
    assert c.decision == Decision.ACCEPTED and c.agreeing == ["haar", "hog"]
    np.testing.assert_allclose(c.fused_box, (10.5, 10.0, 30.5, 40.5))  # equal weights: the plain mean
    row = candidate_row(f, c, "h", json.dumps(ConsensusStage.Config(mask_iou=None).as_dict()))
    assert [d["score"] for d in row["detections"]] == [None, None]
    assert [t["confidence"] for t in row["score_tests"]] == [1.0, 1.0]


def test_a_score_of_exactly_zero_fuses_without_dividing_by_zero():
    f = frame(run("a", det("mug", MUG, 0.0)), run("b", det("mug", MUG, 0.0)), run("c", det("mug", MUG, 0.0)),
              phrases=("mug",))
    (c,) = decide_frame(f, ConsensusStage.Config(mask_iou=None))
    assert c.decision == Decision.ACCEPTED and c.fused_score == 0.0
    np.testing.assert_allclose(c.fused_box, MUG)


def test_score_tests_are_per_detector_and_recorded_in_the_audit_row():
    rules = ({"detector": "owlv2", "threshold": 0.1}, {"detector": "gdino", "threshold": 0.35})
    config = ConsensusStage.Config(mask_iou=None, detector_scores=rules)
    # OWLv2 scores run low: 0.15 passes its own threshold though it would fail Grounding DINO's.
    f = frame(run("gdino", det("mug", MUG, 0.5)), run("owlv2", det("mug", MUG, 0.15)), phrases=("mug",))
    (c,) = decide_frame(f, config)
    assert c.decision == Decision.ACCEPTED
    tests = {t["detector"]: t for t in candidate_row(f, c, "h", json.dumps(config.as_dict()))["score_tests"]}
    assert tests["owlv2"] == {"detector": "owlv2", "raw": 0.15, "confidence": 0.15, "threshold": 0.1,
                              "passed": True}
    low = frame(run("gdino", det("mug", MUG, 0.3)), run("owlv2", det("mug", MUG, 0.15)), phrases=("mug",))
    (c,) = decide_frame(low, config)
    assert (c.decision, c.reason) == (Decision.REJECTED, DecisionReason.LOW_SCORE)
    assert "below their score threshold: gdino" in c.detail


def test_calibrated_scores_keep_the_fused_score_within_one():
    # A margin-scored detector (raw 2.4) beside a probability: uncalibrated, the old fusion gave 1.6.
    rules = ({"detector": "dlib", "calibration": "logistic", "scale": 2.0, "offset": -1.0},)
    f = frame(run("dlib", det("mug", MUG, 2.4)), run("gdino", det("mug", MUG, 0.8)), phrases=("mug",))
    (c,) = decide_frame(f, ConsensusStage.Config(mask_iou=None, detector_scores=rules))
    dlib = next(v for v in c.votes if v.detector == "dlib")
    assert dlib.confidence == pytest.approx(1 / (1 + np.exp(-3.8)))
    assert 0 < c.fused_score <= 1


def test_score_rule_validation_names_the_rule_and_field():
    with pytest.raises(ValueError, match=r"ScoreRule\('x'\).calibration must be one of"):
        ConsensusStage.Config(detector_scores=({"detector": "x", "calibration": "isotonic"},))
    with pytest.raises(ValueError, match="one rule per detector"):
        ConsensusStage.Config(detector_scores=({"detector": "x"}, {"detector": "x"}))
    with pytest.raises(ValueError, match="a score rule has fields"):
        ConsensusStage.Config(detector_scores=({"detector": "x", "treshold": 0.1},))


def exhaustive_group(votes, pairs, box_thr):
    """The old search, every subset (the reference for the bounded one)."""
    import itertools

    by_pair = {(p.a, p.b): p for p in pairs}
    for size in range(len(votes), 1, -1):
        groups = [g for g in itertools.combinations(votes, size)
                  if all(by_pair[(a.detector, b.detector)].box_iou >= box_thr for a, b in itertools.combinations(g, 2))]
        if groups:
            return sorted(v.detector for v in max(groups, key=lambda g: sum(v.confidence for v in g)))
    return [max(votes, key=lambda v: v.confidence).detector]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.floats(0.05, 1.0)), min_size=2, max_size=11))
def test_the_bounded_group_search_finds_the_same_group_as_trying_every_subset(boxes):
    from vlaforge.annotators.consensus import _GroupSearch, _pairs

    votes = [Vote(f"d{i:02d}", det("mug", (x, y, x + 20.0, y + 20.0), s, mask=None), confidence=s)
             for i, (x, y, s) in enumerate(boxes)]
    pairs = _pairs(votes)
    found = sorted(v.detector for v in _GroupSearch(votes, pairs, 100_000).largest(votes, 0.6, None))
    assert found == exhaustive_group(votes, pairs, 0.6)


def test_sixteen_voters_are_decided_and_a_tiny_budget_falls_back_to_a_greedy_group():
    runs = [run(f"d{i:02d}", det("mug", (10.0 + (i % 4), 10.0, 30.0 + (i % 4), 40.0), 0.5 + i / 100, mask=None))
            for i in range(16)]
    f = frame(*runs, phrases=("mug",))
    (c,) = decide_frame(f, ConsensusStage.Config(mask_iou=None))
    assert c.decision == Decision.ACCEPTED and len(c.agreeing) == 16
    (greedy,) = decide_frame(f, ConsensusStage.Config(mask_iou=None, max_group_search=3))
    assert greedy.decision == Decision.ACCEPTED and "the group is greedy" in greedy.detail
