"""Tiny random-weight detector and SAM checkpoints, written once per session with `save_pretrained`; the stages
load them with `from_pretrained` like real checkpoints."""

import numpy as np
import pytest

from vlaforge.annotators.grounding_frame import GroundingFrame
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import camera_frames


@pytest.fixture(scope="session")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~40x faster than two fighting for cores
    (each op is microseconds of work and OpenMP's barriers dominate under load). Ray workers get this already."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_gdino(tmp_path_factory):
    from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector

    return write_tiny_detector(tmp_path_factory.mktemp("tiny-gdino"), architecture="grounding_dino", seed=0)


@pytest.fixture(scope="session")
def tiny_llmdet(tmp_path_factory):
    from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector

    return write_tiny_detector(tmp_path_factory.mktemp("tiny-llmdet"), architecture="mm_grounding_dino", seed=1)


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory):
    from vlaforge.flows.sample_data.tiny_detectors import write_tiny_sam

    return write_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


def make_frame(index=0, phrases=("red mug", "shelf"), negatives=(), size=(48, 64), episode="ep-1"):
    """A grounding frame over a real photo (scikit-image's), ready for the detectors."""
    pixels = np.ascontiguousarray(camera_frames(index, 3, *size)[index % 3])
    return GroundingFrame(dataset="synth", episode_id=episode, source_file="synth.tar", step=index, camera="wrist",
                          jpeg=encode_jpeg(pixels, FrameConfig()), pixels=pixels, selected_by="first",
                          instructions=["put the red mug on the shelf"], phrases=list(phrases),
                          negatives=list(negatives))


@pytest.fixture
def frame_factory():
    return make_frame
