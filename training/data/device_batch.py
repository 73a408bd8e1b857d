"""A `CorpusBatch` on the training device: every tensor moved there, and a robot batch's pixel values made there.

With `CorpusLoader.Config.robot_pixels="device"` (the default) a worker sends a robot batch's frames once, as uint8
[B, N_cam, H, W, 3], with the processor's tokens and `image_grid_thw` but no `pixel_values`; `to_device` moves the
frames and runs the processor's own image code (rescale, normalize, resize where the size is not already the
processor's, patchify: Qwen2VLImageProcessor runs on torch tensors on any device) on the present frames, in the
order the prompt names them. The result equals what the processor makes in a worker (tested).
"""

from __future__ import annotations

import dataclasses

import torch

from vlaforge.training.data.collate import CorpusBatch, VlBatch
from vlaforge.training.model.vla import RobotBatch
from vlaforge.training.model.vlm import IMAGE_GRID_THW, PIXEL_VALUES


def to_device(batch: CorpusBatch, device: torch.device | str, image_processor=None) -> CorpusBatch:
    """`batch` with its model inputs on `device`; robot pixel values made there from the frames when the worker
    left them out (needs the processor's `image_processor`)."""
    robot = None if batch.robot is None else _robot_to(batch.robot, torch.device(device), image_processor)
    vl = None if batch.vl is None else _vl_to(batch.vl, torch.device(device))
    return CorpusBatch(robot=robot, vl=vl)


def pixels_pending(robot: RobotBatch) -> bool:
    """Whether the batch's tokens name images whose pixel values are still to be made (`to_device`)."""
    inputs = robot.vlm_inputs
    return inputs is not None and IMAGE_GRID_THW in inputs and PIXEL_VALUES not in inputs


def _robot_to(robot: RobotBatch, device: torch.device, image_processor) -> RobotBatch:
    moved = {name: _moved(getattr(robot, name), device)
             for name in ("state", "actions", "action_mask", "valid_len", "state_mask", "images", "image_mask")}
    inputs = None
    if robot.vlm_inputs is not None:
        inputs = {name: value.to(device, non_blocking=True) for name, value in robot.vlm_inputs.items()}
        if pixels_pending(robot):
            if image_processor is None:
                raise ValueError("this robot batch's pixel values are made on the device: pass the processor's "
                                 "image_processor (CorpusLoader.to_device does)")
            inputs[PIXEL_VALUES] = _pixel_values(moved["images"], robot.image_mask, image_processor, device,
                                                 robot.vlm_inputs[IMAGE_GRID_THW])
    return dataclasses.replace(robot, vlm_inputs=inputs, **moved)


def _pixel_values(images: torch.Tensor, image_mask: torch.Tensor, image_processor, device: torch.device,
                  grids: torch.Tensor) -> torch.Tensor:
    """[ΣP, C·T_p·P·P] pixel values of the present frames `images` [B, N, H, W, 3] uint8 (on `device`), sample by
    sample, slot by slot; `image_mask` [B, N] and `grids` stay on the host (no device sync to find the frames)."""
    # [3, H, W] views, sample by sample and slot by slot (the prompt's order); views rather than a boolean-mask
    # gather, whose CPU kernel costs milliseconds under a loaded machine's thread contention.
    frames = [images[sample, slot].permute(2, 0, 1) for sample, slot in image_mask.nonzero().tolist()]
    made = image_processor(images=frames, return_tensors="pt", device=device)
    if not torch.equal(made[IMAGE_GRID_THW].cpu(), grids.cpu()):
        raise ValueError(f"the frames' patch grids {made[IMAGE_GRID_THW].tolist()} differ from the grids the tokens "
                         f"were made for {grids.tolist()}: the processor changed between collation and now")
    return made[PIXEL_VALUES].to(device)


def _vl_to(vl: VlBatch, device: torch.device) -> VlBatch:
    return dataclasses.replace(vl, inputs={k: v.to(device, non_blocking=True) for k, v in vl.inputs.items()},
                               labels=vl.labels.to(device, non_blocking=True))


def _moved(value, device: torch.device):
    return None if value is None else value.to(device, non_blocking=True)
