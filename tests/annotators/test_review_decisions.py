"""Reviewers' decisions imported from a review tool's COCO export: what counts as accept, reject, a correction or no
decision; bad files named; the last import of a candidate wins."""

import datetime
import json

import pytest

from vlaforge.annotators.grounding_frame import Candidate, Decision, DecisionReason
from vlaforge.annotators.review_decisions import ReviewBook, ReviewError, import_reviews

NOW = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.timezone.utc)


def coco(annotations, exported):
    return {"info": {"vlaforge_exported": exported}, "images": [], "categories": [], "annotations": annotations}


def annotation(candidate, bbox, review=""):
    return {"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "attributes": {"candidate_id": candidate,
                                                                                     "review": review}}


def candidate(candidate_id):
    return Candidate(candidate_id=candidate_id, phrase="cup", negative=False, votes=[], pairs=[], agreeing=[],
                     fused_box=(0.0, 0.0, 10.0, 10.0), fused_score=0.5, fused_mask=None,
                     decision=Decision.NEEDS_REVIEW, reason=DecisionReason.BORDERLINE_BOX, detail="2 agree",
                     detectors_total=2, detectors_ran=2, failed={})


def test_accept_reject_correct_delete_and_leave_alone(tmp_path):
    exported = {"a": [0, 0, 10, 10], "b": [0, 0, 10, 10], "c": [0, 0, 10, 10], "d": [0, 0, 10, 10],
                "e": [0, 0, 10, 10]}
    (tmp_path / "r.json").write_text(json.dumps(coco([
        annotation("a", [0, 0, 10, 10], "accept"), annotation("b", [0, 0, 10, 10], "Reject"),
        annotation("c", [2, 2, 6, 6]), annotation("e", [0.2, 0, 10, 10]),
        annotation(None, [5, 5, 1, 1]),  # a box the reviewer drew: none of ours
    ], exported)))
    summary = import_reviews(tmp_path / "r.json", tmp_path / "audit", reviewer="alice", now=NOW)
    assert (summary.accepted, summary.rejected, summary.corrected, summary.unchanged) == (1, 2, 1, 1)
    book = ReviewBook.load(summary.path)
    assert sorted(book.reviews) == ["a", "b", "c", "d"]  # e moved less than half a pixel: no decision
    assert book.reviews["c"].box == (2.0, 2.0, 8.0, 8.0) and book.reviews["c"].decision == Decision.ACCEPTED
    assert book.reviews["d"].decision == Decision.REJECTED  # deleted in the tool
    assert book.reviews["a"].reviewed_at == "2026-12-01T09:30:00+00:00" and book.reviews["a"].reviewer == "alice"
    candidates = [candidate("c"), candidate("zzz")]
    book.apply(candidates)
    assert (candidates[0].decision, candidates[0].reason, candidates[0].fused_box) == (
        Decision.ACCEPTED, DecisionReason.REVIEWED, (2.0, 2.0, 8.0, 8.0))
    assert "reviewed by alice at 2026-12-01T09:30:00+00:00: accepted, box corrected" in candidates[0].detail
    assert candidates[1].decision == Decision.NEEDS_REVIEW and candidates[1].review is None


def test_the_last_import_of_a_candidate_wins(tmp_path):
    exported = {"a": [0, 0, 10, 10]}
    for review, who in (("accept", "alice"), ("reject", "bob")):
        (tmp_path / f"{who}.json").write_text(json.dumps(coco([annotation("a", [0, 0, 10, 10], review)], exported)))
        import_reviews(tmp_path / f"{who}.json", tmp_path, reviewer=who, now=NOW)
    review = ReviewBook.load(tmp_path / "reviews.parquet").reviews["a"]
    assert (review.decision, review.reviewer) == (Decision.REJECTED, "bob")


def test_bad_files_are_named(tmp_path):
    (tmp_path / "no-info.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ReviewError, match="lacks 'vlaforge_exported'"):
        import_reviews(tmp_path / "no-info.json", tmp_path, reviewer="alice")
    (tmp_path / "maybe.json").write_text(json.dumps(coco([annotation("a", [0, 0, 1, 1], "maybe")],
                                                         {"a": [0, 0, 1, 1]})))
    with pytest.raises(ReviewError, match="annotation 0 has review 'maybe'; use 'accept' or 'reject'"):
        import_reviews(tmp_path / "maybe.json", tmp_path, reviewer="alice")
    with pytest.raises(ReviewError, match="--reviewer must name who reviewed"):
        import_reviews(tmp_path / "maybe.json", tmp_path, reviewer=" ")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ReviewError, match="broken.json: cannot read it as JSON"):
        import_reviews(tmp_path / "broken.json", tmp_path, reviewer="alice")
