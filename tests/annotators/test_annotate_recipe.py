"""The grounding recipe (a JSON-able dict) -> the Job the annotate flow runs."""

import pickle

import pytest

from vlaforge.annotators.annotate_recipe import annotate_job, decisions_digest, default_recipe, recipe_digest
from vlaforge.annotators.consensus import ConsensusStage
from vlaforge.annotators.frame_selection import FrameSelector
from vlaforge.annotators.grounding_dino import GroundingDinoDetector
from vlaforge.annotators.grounding_samples import GroundingSampleBuilder
from vlaforge.annotators.hosted_detector import HostedDetector
from vlaforge.annotators.phrases import PhraseStage
from vlaforge.annotators.sam_masks import SamMasker
from vlaforge.annotators.vlm_http import HttpVlm


def test_default_recipe_is_the_reports_three_detectors_with_sam(tmp_path):
    job = annotate_job(default_recipe(), str(tmp_path / "droid"), str(tmp_path / "out"), hosted_token="t0k3n")
    kinds = [type(s) for s in job.stages]
    assert kinds == [FrameSelector.Config, PhraseStage.Config, GroundingDinoDetector.Config,
                     GroundingDinoDetector.Config, HostedDetector.Config, SamMasker.Config, ConsensusStage.Config,
                     GroundingSampleBuilder.Config]
    gd, llm, hosted = job.stages[2:5]
    assert (gd.name, gd.architecture, llm.name, llm.architecture) == (
        "grounding_dino", "grounding_dino", "llmdet", "mm_grounding_dino")
    assert hosted.api_token == "t0k3n" and "t0k3n" not in repr(job)
    assert job.sink.dataset == "grounding-droid" and job.stages[0].dataset == "droid" and job.sink.task.value == "grounding"
    assert dict(job.stages[-1].detector_settings)["llmdet"].startswith('{"architecture": "mm_grounding_dino"')
    assert pickle.loads(pickle.dumps(job)) == job  # shipped to Ray workers


def test_sections_set_fields_and_no_sam_means_boxes_only(tmp_path):
    recipe = {**default_recipe(), "sam": None, "detectors": [{"kind": "grounding_dino", "model": "/m/gd"}],
              "consensus": {"min_votes": 1}, "frames": {"policies": ["every_k"], "cameras": ["wrist"]},
              "phrases": {"vlm": "http:http://127.0.0.1:9/v1"}, "shards": {"max_samples": 7}}
    job = annotate_job(recipe, str(tmp_path / "r"), str(tmp_path / "o"))
    consensus = next(s for s in job.stages if isinstance(s, ConsensusStage.Config))
    assert consensus.mask_iou is None and consensus.min_votes == 1
    assert job.stages[0].policies == ("every_k",) and job.stages[0].cameras == ("wrist",)
    assert isinstance(job.stages[1].vlm, HttpVlm.Config) and job.sink.shards.max_samples == 7
    assert not any(isinstance(s, SamMasker.Config) for s in job.stages)


def test_mistakes_are_named(tmp_path):
    def build(**changes):
        return annotate_job({**default_recipe(), **changes}, str(tmp_path), str(tmp_path / "o"))

    with pytest.raises(ValueError, match="unknown option 'box_treshold'; did you mean 'box_threshold'"):
        build(detectors=[{"kind": "grounding_dino", "box_treshold": 0.3}])
    with pytest.raises(ValueError, match=r"unknown detector kind 'yolo'\. Known detector kinds: grounding_dino, "):
        build(detectors=[{"kind": "yolo"}])
    with pytest.raises(ValueError, match=r"unknown detector kind 'lmdet'; did you mean 'llmdet'\?"):
        build(detectors=[{"kind": "lmdet"}])
    with pytest.raises(ValueError, match="duplicate names"):
        build(detectors=[{"kind": "grounding_dino"}, {"kind": "grounding_dino"}])
    with pytest.raises(ValueError, match="detectors is empty"):
        build(detectors=[])
    with pytest.raises(ValueError, match="unknown sections"):
        build(extras={})


def test_recipe_digest_changes_with_any_setting_and_decisions_digest_ignores_runtime_options():
    a, b = default_recipe(), default_recipe()
    b["consensus"] = {"box_iou": 0.7}
    assert recipe_digest(a) == recipe_digest(default_recipe()) != recipe_digest(b)
    assert decisions_digest(a) != decisions_digest(b)
    faster = default_recipe()
    faster["detectors"][0].update(device="cuda", batch_size=16)
    faster["sam"] = {"device": "cuda"}
    assert recipe_digest(faster) != recipe_digest(a) and decisions_digest(faster) == decisions_digest(a)


def test_a_mask_threshold_without_sam_is_refused(tmp_path):
    recipe = {**default_recipe(), "sam": None, "consensus": {"mask_iou": 0.6}}
    with pytest.raises(ValueError, match="consensus.mask_iou is 0.6 but no masks exist"):
        annotate_job(recipe, str(tmp_path / "r"), str(tmp_path / "o"))
