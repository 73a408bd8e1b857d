"""IDEA's original Grounding DINO checkpoints into the transformers format our `GroundingDinoDetector` loads.

Why a converter and not a backend: IDEA's package (`rf-groundingdino` 0.3.0, the maintained fork of
`groundingdino-py`) installs beside torch 2.14.1, but cannot build a model with transformers 5.23 (our pin, for
Qwen3-VL): its BERT adapter reads `BertModel.get_extended_attention_mask`, which transformers 5 removed:

    File ".../groundingdino/models/GroundingDINO/bertwarper.py", line 27, in __init__
        self.get_extended_attention_mask = bert_model.get_extended_attention_mask
    AttributeError: 'BertModel' object has no attribute 'get_extended_attention_mask'

So a team holding `groundingdino_swint_ogc.pth` converts it once (`vlaforge convert grounding-dino`) and runs it
through transformers like any other checkpoint. Three inputs, all in their original layout:

- the model's Python config (`GroundingDINO_SwinT_OGC.py`): read as literal assignments, never executed;
- the checkpoint (`{"model": state_dict}`, or a bare state dict), loaded with `torch.load(..., weights_only=True)`;
- the text encoder: a local BERT directory (the config's `text_encoder_type`, `bert-base-uncased`, downloaded
  beforehand), whose tokenizer the converted processor uses.

The weights are renamed module by module (Swin's fused qkv and the attention layers' fused in-projections split
into query, key and value); every tensor of the checkpoint must land somewhere, and every weight of the converted
model must come from the checkpoint, or the conversion stops and names them.
"""

from __future__ import annotations

import ast
import pathlib
import re
from typing import Any

SWIN_BACKBONES = {
    "swin_T_224_1k": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
                      "image_size": 224},
    "swin_B_224_22k": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 7,
                       "image_size": 224},
    "swin_B_384_22k": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12,
                       "image_size": 384},
    "swin_L_224_22k": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48], "window_size": 7,
                       "image_size": 224},
    "swin_L_384_22k": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48], "window_size": 12,
                       "image_size": 384},
}
"""The backbones IDEA's code builds by name (its `build_swin_transformer`)."""

_SWIN = "model.backbone.conv_encoder.model."
RENAMES: list[tuple[str, str]] = [
    # The Swin backbone.
    (r"^backbone\.0\.patch_embed\.proj\.", _SWIN + "swin.embeddings.patch_embeddings.projection."),
    (r"^backbone\.0\.patch_embed\.norm\.", _SWIN + "swin.embeddings.norm."),
    (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_before."),
    (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_after."),
    (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.o_proj."),
    (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table"),
    (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.", _SWIN + r"swin.encoder.layers.\1.blocks.\2.mlp."),
    (r"^backbone\.0\.layers\.(\d+)\.downsample\.", _SWIN + r"swin.encoder.layers.\1.downsample."),
    # Text: BERT (its pooler is unused by Grounding DINO) and the projection into the model's width.
    (r"^bert\.(embeddings|encoder)\.", r"model.text_backbone.\1."),
    (r"^feat_map\.", "model.text_projection."),
    (r"^input_proj\.", "model.input_proj_vision."),
    # The encoder: deformable image layers, text enhancer layers, image-text fusion layers.
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"model.encoder.layers.\1.deformable_layer.self_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm1\.",
     r"model.encoder.layers.\1.deformable_layer.self_attn_layer_norm."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear1\.", r"model.encoder.layers.\1.deformable_layer.fc1."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear2\.", r"model.encoder.layers.\1.deformable_layer.fc2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm2\.", r"model.encoder.layers.\1.deformable_layer.final_layer_norm."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.self_attn\.out_proj\.",
     r"model.encoder.layers.\1.text_enhancer_layer.self_attn.out_proj."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.linear1\.", r"model.encoder.layers.\1.text_enhancer_layer.fc1."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.linear2\.", r"model.encoder.layers.\1.text_enhancer_layer.fc2."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.norm1\.",
     r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_before."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.norm2\.",
     r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_after."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.gamma_v$", r"model.encoder.layers.\1.fusion_layer.vision_param"),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.gamma_l$", r"model.encoder.layers.\1.fusion_layer.text_param"),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_v\.",
     r"model.encoder.layers.\1.fusion_layer.layer_norm_vision."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_l\.",
     r"model.encoder.layers.\1.fusion_layer.layer_norm_text."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.(values_|out_)?v_proj\.",
     r"model.encoder.layers.\1.fusion_layer.attn.\2vision_proj."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.(values_|out_)?l_proj\.",
     r"model.encoder.layers.\1.fusion_layer.attn.\2text_proj."),
    # The decoder: self-attention, text cross-attention, deformable image cross-attention, feed-forward.
    (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"model.decoder.layers.\1.encoder_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"model.decoder.layers.\1.encoder_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.out_proj\.",
     r"model.decoder.layers.\1.encoder_attn_text.out_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"model.decoder.layers.\1.encoder_attn_text_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"model.decoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"model.decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear1\.", r"model.decoder.layers.\1.fc1."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear2\.", r"model.decoder.layers.\1.fc2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"model.decoder.layers.\1.final_layer_norm."),
    (r"^transformer\.decoder\.norm\.", "model.decoder.layer_norm."),
    (r"^transformer\.decoder\.ref_point_head\.", "model.decoder.reference_points_head."),
    (r"^transformer\.decoder\.bbox_embed\.", "model.decoder.bbox_embed."),
    # Two-stage query selection, query embeddings, level embeddings and the heads.
    (r"^transformer\.level_embed$", "model.level_embed"),
    (r"^transformer\.tgt_embed\.", "model.query_position_embeddings."),
    (r"^transformer\.enc_output\.", "model.enc_output."),
    (r"^transformer\.enc_output_norm\.", "model.enc_output_norm."),
    (r"^transformer\.enc_out_bbox_embed\.", "model.encoder_output_bbox_embed."),
    (r"^bbox_embed\.", "bbox_embed."),
]
"""(pattern, replacement) for every tensor that is renamed as it is."""

FUSED_IN_PROJECTIONS: list[tuple[str, str, tuple[str, str, str]]] = [
    (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.{}.\3", ("q_proj", "k_proj", "v_proj")),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     r"model.encoder.layers.\1.text_enhancer_layer.self_attn.{}.\2", ("query", "key", "value")),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     r"model.decoder.layers.\1.self_attn.{}.\2", ("query", "key", "value")),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.in_proj_(weight|bias)$",
     r"model.decoder.layers.\1.encoder_attn_text.{}.\2", ("query", "key", "value")),
]
"""(pattern, replacement with `{}` for the part, parts): a fused [3D, D] projection split into three [D, D]."""

DROPPED = (r"\.relative_position_index$", r"^bert\.pooler\.", r"^bert\.embeddings\.position_ids$")
"""Tensors the converted model recomputes (Swin's position index) or does not have (BERT's unused pooler)."""


UNUSED_BY_DETECTION = ("swin.layernorm.weight", "swin.layernorm.bias")
"""Weights the converted model has but never uses: the Swin classifier's final norm (Grounding DINO reads the
stages through their own norms). Left at their initial values."""


class ConversionError(ValueError):
    """Input that cannot be converted; the message names the file and what does not fit."""


def read_original_config(path: str | pathlib.Path) -> dict[str, Any]:
    """The assignments of an original Grounding DINO config file (`name = literal` lines), without running it."""
    path = pathlib.Path(path)
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError) as error:
        raise ConversionError(f"{path}: cannot read the config ({error})") from None
    values: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ConversionError(f"{path}: line {node.lineno} is not a `name = value` assignment; the original "
                                  "configs hold only those (a config that computes values must be flattened first)")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ConversionError(f"{path}: line {node.lineno}: {node.targets[0].id} is not a literal") from None
    return values


def hf_config(original: dict[str, Any], text_config: Any) -> Any:
    """The `GroundingDinoConfig` of the model an original config describes."""
    from transformers import GroundingDinoConfig, SwinConfig

    backbone = original.get("backbone")
    if backbone not in SWIN_BACKBONES:
        raise ConversionError(f"config backbone {backbone!r} is not one of {sorted(SWIN_BACKBONES)} (IDEA's released "
                              "models use Swin)")
    stages = [index + 1 for index in original.get("return_interm_indices", [1, 2, 3])]
    if original.get("two_stage_type", "standard") != "standard":
        raise ConversionError(f"config two_stage_type {original['two_stage_type']!r}: only 'standard' is converted")
    return GroundingDinoConfig(
        backbone_config=SwinConfig(**SWIN_BACKBONES[backbone], out_indices=stages,
                                   out_features=[f"stage{s}" for s in stages]),
        text_config=text_config, d_model=original["hidden_dim"], num_queries=original["num_queries"],
        encoder_layers=original["enc_layers"], decoder_layers=original["dec_layers"],
        encoder_ffn_dim=original["dim_feedforward"], decoder_ffn_dim=original["dim_feedforward"],
        encoder_attention_heads=original["nheads"], decoder_attention_heads=original["nheads"],
        num_feature_levels=original["num_feature_levels"], encoder_n_points=original["enc_n_points"],
        decoder_n_points=original["dec_n_points"], max_text_len=original["max_text_len"], two_stage=True,
        embedding_init_target=original.get("embed_init_tgt", True),
        decoder_bbox_embed_share=original.get("dec_pred_bbox_embed_share", True),
        two_stage_bbox_embed_share=original.get("two_stage_bbox_embed_share", False),
        positional_embedding_temperature=original.get("pe_temperatureH", 20),
        activation_function=original.get("transformer_activation", "relu"), query_dim=original.get("query_dim", 4),
    )


def convert_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Original tensor names -> transformers names; raises ConversionError for a tensor no rule places."""
    converted: dict[str, Any] = {}
    unplaced = []
    for name, tensor in state.items():
        name = name.removeprefix("module.")  # checkpoints saved from DistributedDataParallel
        if any(re.search(pattern, name) for pattern in DROPPED):
            continue
        placed = _split(name, tensor) or _renamed(name, tensor)
        if placed is None:
            unplaced.append(name)
        else:
            converted.update(placed)
    if unplaced:
        raise ConversionError(f"{len(unplaced)} tensors of the checkpoint fit no known module, e.g. {unplaced[:5]}; "
                              "is it an IDEA Grounding DINO checkpoint?")
    return converted


def _split(name: str, tensor: Any) -> dict[str, Any] | None:
    for pattern, replacement, parts in FUSED_IN_PROJECTIONS:
        if re.search(pattern, name):
            target = re.sub(pattern, replacement, name)
            return {target.format(part): chunk.clone() for part, chunk in zip(parts, tensor.chunk(3, dim=0))}
    return None


def _renamed(name: str, tensor: Any) -> dict[str, Any] | None:
    for pattern, replacement in RENAMES:
        if re.search(pattern, name):
            return {re.sub(pattern, replacement, name): tensor}
    norm = re.match(r"^backbone\.0\.norm(\d+)\.(weight|bias)$", name)  # the Swin stage outputs' norms
    if norm:
        return {f"{_SWIN}hidden_states_norms.stage{int(norm.group(1)) + 1}.{norm.group(2)}": tensor}
    return None


def convert_grounding_dino(config_path: str | pathlib.Path, checkpoint_path: str | pathlib.Path,
                           text_encoder: str | pathlib.Path, output: str | pathlib.Path, *,
                           image_edges: tuple[int, int] = (800, 1333)) -> pathlib.Path:
    """Write a transformers checkpoint directory (model and processor) for `GroundingDinoDetector`. `image_edges`
    are the processor's (shortest, longest) resize edges: the original inference resizes to 800, at most 1333."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    original = read_original_config(config_path)
    text_encoder = pathlib.Path(text_encoder)
    if not (text_encoder / "config.json").is_file():
        raise ConversionError(f"{text_encoder}: no config.json; pass the local BERT directory the original config "
                              f"names as text_encoder_type ({original.get('text_encoder_type')!r})")
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or others for a bad file
        raise ConversionError(f"{checkpoint_path}: cannot be loaded as weights ({type(error).__name__}: "
                              f"{error})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    model = GroundingDinoForObjectDetection(hf_config(original, BertConfig.from_pretrained(text_encoder)))
    _load(model, convert_state_dict(state), checkpoint_path)
    output = pathlib.Path(output)
    model.save_pretrained(output)
    resize = {"shortest_edge": image_edges[0], "longest_edge": image_edges[1]}
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size=resize),
                                       tokenizer=AutoTokenizer.from_pretrained(text_encoder))
    processor.save_pretrained(output)
    return output


def _load(model: Any, weights: dict[str, Any], checkpoint_path: str | pathlib.Path) -> None:
    """Load every converted weight; the model may differ only in buffers it computes itself."""
    expected = model.state_dict()
    shape_errors = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in weights.items()
                    if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if shape_errors:
        raise ConversionError(f"{checkpoint_path}: shapes do not match the config: {shape_errors[:3]}; is the config "
                              "the one this checkpoint was trained with?")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith(UNUSED_BY_DETECTION)]
    if missing or unexpected:
        raise ConversionError(f"{checkpoint_path}: the converted weights do not cover the model (missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]})")
