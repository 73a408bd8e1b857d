"""OWLv2 and OWL-ViT (the third detector family) on tiny random-weight checkpoints loaded through `from_pretrained`."""

import numpy as np
import pytest
import torch

from vlaforge.annotators.annotate_recipe import annotate_job, default_recipe
from vlaforge.annotators.grounding_frame import RunStatus
from vlaforge.annotators.owl_detector import OwlDetector
from vlaforge.flows.sample_data.tiny_detectors import write_tiny_owl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["owlv2", "owlvit"])
def tiny_owl(request, tmp_path_factory):
    return request.param, write_tiny_owl(tmp_path_factory.mktemp(request.param), architecture=request.param)


def _stage(architecture, path, **options):
    stage = OwlDetector.Config(name=architecture, model=str(path), architecture=architecture, device="cpu",
                               **options).build()
    stage.setup()
    return stage


def _summary(frames):
    return [[(d.phrase, tuple(np.round(d.box, 3)), round(d.score, 5)) for d in f.runs[-1].detections] for f in frames]


def test_every_phrase_is_a_query_and_boxes_land_inside_the_image(tiny_owl, frame_factory):
    architecture, path = tiny_owl
    stage = _stage(architecture, path, box_threshold=0.0, max_per_phrase=2)  # a patch votes for its best query
    frames = stage([frame_factory(0, negatives=("elephant",)), frame_factory(1, size=(40, 90))])
    assert len({d.score for d in frames[0].runs[0].detections}) > 1
    for frame in frames:
        (run,) = frame.runs
        assert run.status == RunStatus.OK and run.detector == architecture and run.revision.startswith("sha256:")
        assert run.detections and {d.phrase for d in run.detections} <= set(frame.queried)
        for d in run.detections:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= frame.width and 0 <= y1 <= y2 <= frame.height and 0 <= d.score <= 1
    loose = frames[0].runs[0].detections
    threshold = (min(d.score for d in loose) + max(d.score for d in loose)) / 2
    (strict,) = _stage(architecture, path, box_threshold=threshold, max_per_phrase=2)(
        [frame_factory(0, negatives=("elephant",))])
    kept = strict.runs[0].detections
    assert all(d.score >= threshold for d in kept) and len(kept) < len(loose)


def test_a_batch_gives_the_same_boxes_as_one_image_at_a_time(tiny_owl, frame_factory):
    architecture, path = tiny_owl

    def frames():  # different sizes and different numbers of phrases in one batch
        return [frame_factory(0, phrases=("red mug",)), frame_factory(1, phrases=("red mug", "shelf", "cup")),
                frame_factory(2, phrases=("cup",), size=(56, 56))]

    batched = _stage(architecture, path, box_threshold=0.0, batch_size=3)(frames())
    single = _stage(architecture, path, box_threshold=0.0, batch_size=1)(frames())
    assert _summary(batched) == _summary(single)


def test_boxes_match_transformers_own_post_processing(tiny_owl, frame_factory):
    """OWLv2 pads to a square (boxes scale by the long side), OWL-ViT does not: our geometry must agree with the
    library's reference post-processing on a non-square image."""
    architecture, path = tiny_owl
    stage = _stage(architecture, path, box_threshold=0.0, max_per_phrase=1, nms_iou=1.0)
    frame = frame_factory(0, phrases=("red mug",), size=(40, 90))
    inputs = stage.processor(text=[["a photo of a red mug"]], images=[frame.pixels], return_tensors="pt")
    with torch.inference_mode():
        outputs = stage.model(**inputs)
    (reference,) = stage.processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[(frame.height, frame.width)])
    best = int(reference["scores"].argmax())
    expected = np.clip(reference["boxes"][best].numpy(), 0, [frame.width, frame.height] * 2)
    (detection,) = stage([frame])[0].runs[0].detections
    np.testing.assert_allclose(detection.box, expected, atol=1e-3)
    assert detection.score == pytest.approx(float(reference["scores"][best]), abs=1e-5)


def test_a_recipe_asks_for_owl_by_kind(tmp_path):
    recipe = {**default_recipe(), "detectors": [{"kind": "grounding_dino"}, {"kind": "owlv2", "model": "/m/owl"},
                                                {"kind": "owlvit", "box_threshold": 0.05}]}
    job = annotate_job(recipe, str(tmp_path / "droid"), str(tmp_path / "out"))
    owl = [s for s in job.stages if isinstance(s, OwlDetector.Config)]
    assert [(s.name, s.architecture, s.model) for s in owl] == [
        ("owlv2", "owlv2", "/m/owl"), ("owlvit", "owlvit", "google/owlvit-base-patch32")]
    with pytest.raises(ValueError, match=r"text_template must contain \{phrase\}"):
        OwlDetector.Config(text_template="a photo")
