"""Tiny models shared by the training tests: one random-weight Qwen3-VL saved once and loaded like production."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlaforge.training.model import presets
from vlaforge.training.model.vla import VLAModel
from vlaforge.training.model.vlm import VLMBackbone


def camera_frame(name: str, size: int = 64) -> np.ndarray:
    """A real photograph from scikit-image, resized to size x size (uint8 [H, W, 3])."""
    import skimage.data
    import skimage.transform

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return (skimage.transform.resize(image[..., :3], (size, size), anti_aliasing=True) * 255).astype(np.uint8)


def activate_modulation(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Give the zero-initialised adaLN modulation random values, as training would, so every block is live.

    At initialisation each DiT block is the identity by design (adaLN-Zero), so a fresh DiT cannot show how it
    uses the VLM context, the prefix or the positions.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "modulation" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


@pytest.fixture(scope="session")
def camera():
    """Factory: camera_frame(name) -> a real 64x64 photograph."""
    return camera_frame


@pytest.fixture(scope="session")
def processor():
    return presets.tiny_processor()


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory, processor):
    """A tiny random-weight Qwen3-VL checkpoint with its processor, written by save_pretrained."""
    torch.manual_seed(1234)
    directory = tmp_path_factory.mktemp("tiny-qwen3-vl")
    VLMBackbone.from_config(presets.qwen3_vl_tiny(), num_kv_layers=2).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def build_model(tiny_vlm_dir):
    """Factory: a fresh tiny VLA model whose VLM is loaded through VLMBackbone.from_pretrained."""

    def build(config=None, *, live=True, seed=0) -> VLAModel:
        config = config or presets.vla_tiny()
        torch.manual_seed(seed)
        vlm = VLMBackbone.from_pretrained(tiny_vlm_dir, num_kv_layers=config.dit.num_layers)
        model = VLAModel(vlm, config).eval()
        if live:
            activate_modulation(model.dit, seed)
        return model

    return build


@pytest.fixture(scope="session")
def make_inputs(processor):
    """Factory: processor tensors for (image name or array, instruction) pairs, right-padded to one batch."""

    def make(pairs):
        texts, images = [], []
        for image, instruction in pairs:
            content = [{"type": "image"}, {"type": "text", "text": instruction}]
            texts.append(processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False))
            images.append(camera_frame(image) if isinstance(image, str) else image)
        return dict(processor(text=texts, images=images, return_tensors="pt", padding=True))

    return make
