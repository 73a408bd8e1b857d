"""Meta's original SAM checkpoints (`sam_vit_b_01ec64.pth` and the like) through Meta's `segment-anything` package.

The released `.pth` files hold a bare state dict, loaded with `torch.load(..., weights_only=True)` (no pickle code
runs). The package builds ViT-B, -L and -H by name; here the architecture is read from the state dict's own shapes
instead, so any SAM-format checkpoint loads, a fine-tuned or a tiny test model as well as the three releases:

- image encoder: embedding width and patch size from `patch_embed.proj.weight` [D, 3, p, p], input size from
  `pos_embed` [1, H/p, W/p, D], depth from the block count, heads from the relative position tables
  (`rel_pos_h` [2s - 1, D / heads]), the window size from a windowed block's table and the global-attention blocks
  from the tables spanning the whole grid, the neck's width from `neck.0.weight`;
- prompt encoder: the mask-input channels from `mask_downscaling.0.weight` [c / 4, 1, 2, 2];
- mask decoder: width from `iou_token`, masks from `mask_tokens`, the two-way transformer's depth and MLP width from
  its layers, the IoU head's depth and width from its layers. Its head count is not in any shape: every released
  SAM uses 8 (`decoder_heads`).

Masks come from `SamPredictor`: one image embedding per image, each box a prompt, one mask per box.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
from typing import Any

import numpy as np

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class SamCheckpointError(ValueError):
    """A checkpoint that is not a SAM state dict; the message names the file and what is missing."""


@dataclasses.dataclass(frozen=True)
class SamArchitecture:
    """The shapes that build a `segment_anything` Sam, as read from a state dict."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    image_size: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    out_chans: int
    mask_in_chans: int
    transformer_depth: int
    transformer_mlp_dim: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int

    @classmethod
    def of(cls, state: dict[str, Any], where: str) -> "SamArchitecture":
        try:
            return cls._read(state)
        except (KeyError, IndexError, ValueError) as error:
            raise SamCheckpointError(f"{where}: not a SAM state dict ({type(error).__name__}: {error}); pass Meta's "
                                     "segment-anything .pth (e.g. sam_vit_b_01ec64.pth)") from None

    @classmethod
    def _read(cls, state: dict[str, Any]) -> "SamArchitecture":
        embed_dim, _, patch, _ = state["image_encoder.patch_embed.proj.weight"].shape
        grid = state["image_encoder.pos_embed"].shape[1]
        depth = _count(state, r"image_encoder\.blocks\.(\d+)\.")
        tables = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
        head_dim = tables[0][1]
        spans = [(rows + 1) // 2 for rows, _ in tables]
        windowed = [span for span in spans if span != grid]
        return cls(
            embed_dim=embed_dim, depth=depth, num_heads=embed_dim // head_dim, patch_size=patch,
            image_size=grid * patch, window_size=windowed[0] if windowed else grid,
            global_attn_indexes=tuple(i for i, span in enumerate(spans) if span == grid and windowed),
            out_chans=state["image_encoder.neck.0.weight"].shape[0],
            mask_in_chans=state["prompt_encoder.mask_downscaling.0.weight"].shape[0] * 4,
            transformer_depth=_count(state, r"mask_decoder\.transformer\.layers\.(\d+)\."),
            transformer_mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            num_multimask_outputs=state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            iou_head_depth=_count(state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
            iou_head_hidden_dim=state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        )

    def build(self, decoder_heads: int) -> Any:
        """An untrained `segment_anything.modeling.Sam` of these shapes."""
        import torch
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

        prompt_dim = self.out_chans
        grid = self.image_size // self.patch_size
        return Sam(
            image_encoder=ImageEncoderViT(
                depth=self.depth, embed_dim=self.embed_dim, img_size=self.image_size, mlp_ratio=4,
                norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), num_heads=self.num_heads,
                patch_size=self.patch_size, qkv_bias=True, use_rel_pos=True,
                global_attn_indexes=self.global_attn_indexes, window_size=self.window_size, out_chans=prompt_dim),
            prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                         input_image_size=(self.image_size, self.image_size),
                                         mask_in_chans=self.mask_in_chans),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=self.num_multimask_outputs,
                transformer=TwoWayTransformer(depth=self.transformer_depth, embedding_dim=prompt_dim,
                                              mlp_dim=self.transformer_mlp_dim, num_heads=decoder_heads),
                transformer_dim=prompt_dim, iou_head_depth=self.iou_head_depth,
                iou_head_hidden_dim=self.iou_head_hidden_dim),
            pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD),
        )


def _count(state: dict[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    if not found:
        raise KeyError(pattern.replace("\\", "").replace("(d+)", "N"))
    return max(found) + 1


def load_sam_checkpoint(path: str | pathlib.Path, *, decoder_heads: int = 8) -> Any:
    """A `segment_anything` Sam with the weights of a SAM-format `.pth` (never unpickling code)."""
    import torch

    path = pathlib.Path(path)
    if not path.is_file():
        raise SamCheckpointError(f"{path}: no such file; pass the path of a segment-anything .pth checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or others for a bad file
        raise SamCheckpointError(f"{path}: cannot be loaded as weights ({type(error).__name__}: {error})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise SamCheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    model = SamArchitecture.of(state, str(path)).build(decoder_heads)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SamCheckpointError(f"{path}: does not fit the SAM it describes (missing {missing[:5]}, unexpected "
                                 f"{unexpected[:5]}); is decoder_heads right?")
    return model.eval()


class OriginalSam:
    """One image at a time through `SamPredictor`: boxes in, one [H, W] bool mask per box out."""

    def __init__(self, model: Any, device: Any, max_boxes_per_pass: int, mask_threshold: float) -> None:
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(model.to(device))
        self.predictor.model.mask_threshold = mask_threshold
        self.device = device
        self.max_boxes_per_pass = max_boxes_per_pass

    def masks(self, pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """pixels [H, W, 3] uint8 RGB, boxes [N, 4] xyxy pixels -> [N, H, W] bool."""
        import torch

        height, width = pixels.shape[:2]
        out = np.zeros((len(boxes), height, width), bool)
        with torch.inference_mode():
            self.predictor.set_image(pixels, image_format="RGB")
            for start in range(0, len(boxes), self.max_boxes_per_pass):
                chunk = torch.as_tensor(boxes[start : start + self.max_boxes_per_pass], dtype=torch.float32)
                prompts = self.predictor.transform.apply_boxes_torch(chunk, (height, width)).to(self.device)
                masks, _, _ = self.predictor.predict_torch(point_coords=None, point_labels=None, boxes=prompts,
                                                           multimask_output=False)
                out[start : start + len(chunk)] = masks[:, 0].cpu().numpy()
        return out
