"""Named presets: the report-scale model has the report's size; configs validate what they are given."""

import pytest
import torch

from vlaforge.training.model import presets
from vlaforge.training.model.dit import DiTConfig
from vlaforge.training.model.vla import VLAModel


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_report_scale_model_counts_4_7_billion_parameters_on_the_meta_device():
    with torch.device("meta"):
        model = VLAModel.from_vlm_config(presets.qwen3_vl_4b_instruct(), presets.report_scale())
    total, vlm, dit = count(model), count(model.vlm), count(model.dit)
    print(f"report scale: total {total:,} = Qwen3-VL-4B {vlm:,} + DiT {dit:,}")
    assert vlm == 4_437_815_808  # Qwen3-VL-4B-Instruct, tied embeddings
    assert round(total / 1e9, 1) == 4.7
    geometry = model.vlm.geometry
    assert (geometry.num_layers, geometry.num_heads, geometry.num_kv_heads, geometry.head_dim) == (36, 32, 8, 128)
    assert len(model.dit.blocks) == 16 and model.vlm.num_kv_layers == 16
    assert model.dit.blocks[0].attn.k_proj.out_features == 8 * 128  # the VLM's KV width, read from its cache


def test_tiny_presets_build_and_share_the_vlm_geometry():
    model = VLAModel.from_vlm_config(presets.qwen3_vl_tiny(), presets.vla_tiny())
    assert model.dit.blocks[0].attn.k_proj.out_features == model.vlm.geometry.num_kv_heads * 16
    assert count(model.dit) < 100_000


def test_dit_config_names_the_bad_field():
    with pytest.raises(ValueError, match="DiTConfig.chunk_len must be >= 1, got 0"):
        DiTConfig(chunk_len=0)
