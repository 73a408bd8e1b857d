"""A robot sample from a shard -> the arrays the model trains on.

One timestep's members (`<camera>.jpg`, `state.npy`, `action.npy` [T_max, D_a], `meta.json`) become:
- camera frames decoded with libjpeg-turbo (simplejpeg), at a reduced DCT scale when the frame is at least twice
  the model's input size, then resized to it: uint8 [N_cam, H, W, 3] in the configured camera slots, with a mask of
  the slots this embodiment fills;
- state and action normalized with the embodiment's statistics (`Normalize`: mean/std, or the q01/q99 quantile
  option) and zero-padded to the model's 32 dimensions with masks of the native ones;
- the stored T_max chunk sliced to the recipe's T, with the number of real steps from `meta.json` `valid_len`;
- the instruction, the embodiment, the key and the component.

Statistics are looked up by embodiment, pooled over every component that holds it (`pooled_stats.py`): two datasets
of one robot are scaled alike. The transform's `normalize` is the object the trainer exports with the policy, so the
policy scales that robot exactly as training did.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import Camera, MetaField, SampleKey
from vlaforge.pipelines.shards.npy import load_npy
from vlaforge.pipelines.shards.reader import StreamField
from vlaforge.training.data.bad_samples import BadSampleError
from vlaforge.training.data.normalization import MODEL_WIDTH, Normalize, NormKind


@dataclasses.dataclass(frozen=True)
class RobotExample:
    """One robot timestep, ready to collate."""

    key: str
    component: str
    epoch: int
    """The component's epoch this sample was drawn in (0 when read outside a corpus stream)."""
    embodiment: str
    instruction: str
    images: np.ndarray
    """[N_cam, H, W, 3] uint8; slots the embodiment lacks are black."""
    image_mask: np.ndarray
    """[N_cam] bool: the slots that hold a real frame."""
    state: np.ndarray
    """[W] float32 normalized, zero past the native dims."""
    state_mask: np.ndarray
    """[W] bool: native state dims."""
    actions: np.ndarray
    """[T, W] float32 normalized; zero past the native dims and past `valid_len`."""
    action_mask: np.ndarray
    """[W] bool: native action dims."""
    valid_len: int
    """Leading timesteps of `actions` that are real (the rest lies past the episode end)."""


def decode_frame(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """JPEG bytes -> uint8 [H, W, 3] at `size` (H, W).

    libjpeg-turbo's scaled IDCT decodes at 1/2, 1/4 or 1/8 scale when the frame is at least twice the target in
    both sides (the smallest scale that still covers the target); a bilinear resize (antialiased by PIL) finishes.
    """
    height, width = size
    image = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=height, min_width=width, min_factor=2)
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return image


class RobotSampleTransform:
    """Maps a raw robot sample dict (members undecoded bytes) to a `RobotExample`."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        cameras: tuple[str, ...] = tuple(camera.value for camera in Camera)
        """Camera slots in model order; a sample fills those it has (`image_mask`)."""
        image_size: tuple[int, int] = (224, 224)
        """(H, W) of the model's input frames."""
        chunk_len: int = 30
        """T, the recipe's action chunk (30 = 1 s at 30 Hz on the real robot; 10 for LIBERO, 4 for SimplerEnv)."""
        width: int = MODEL_WIDTH
        """State and action are zero-padded to this many dims (the DiT's state_dim/action_dim)."""
        norm: NormKind = NormKind.MEAN_STD
        """Normalization of state and action."""

        def __post_init__(self) -> None:
            object.__setattr__(self, "norm", NormKind(self.norm))
            unknown = sorted(set(self.cameras) - {camera.value for camera in Camera})
            if not self.cameras or unknown:
                raise ValueError(f"RobotSampleTransform.Config.cameras must name canonical cameras "
                                 f"{[c.value for c in Camera]}, got {self.cameras}")
            if len(self.image_size) != 2 or min(self.image_size) < 1:
                raise ValueError(f"RobotSampleTransform.Config.image_size must be (H, W) > 0, got {self.image_size}")
            for name in ("chunk_len", "width"):
                if getattr(self, name) < 1:
                    raise ValueError(f"RobotSampleTransform.Config.{name} must be >= 1, got {getattr(self, name)}")

        def build(self, stats: Mapping[str, Mapping[str, Any]]) -> "RobotSampleTransform":
            """`stats`: {component: stats.json document} of every robot component."""
            return RobotSampleTransform(self, stats)

    def __init__(self, config: Config, stats: Mapping[str, Mapping[str, Any]]) -> None:
        self.config = config
        self.normalize = Normalize.from_components(stats, config.norm)
        """Each embodiment's normalization, pooled over the components; the exported policy saves this object."""
        self._members = tuple(SampleKey.camera(camera) for camera in config.cameras)

    def __call__(self, sample: Mapping[str, Any]) -> RobotExample:
        key, url = sample.get(SampleKey.KEY.value, "?"), sample.get(StreamField.URL.value, "?")
        meta = self._meta(sample, key, url)
        images, image_mask = self._images(sample, key, url)
        embodiment = self._embodiment(sample, meta, key, url)
        state = self._array(sample, SampleKey.STATE.value, key, url)
        chunk = self._array(sample, SampleKey.ACTION.value, key, url)
        self._check_shapes(state, chunk, embodiment, key, url)
        state, state_mask = Normalize.pad(self.normalize.normalize_state(embodiment, state), self.config.width)
        valid_len = min(int(meta.get(MetaField.VALID_LEN.value, len(chunk))), self.config.chunk_len)
        actions = np.zeros((self.config.chunk_len, chunk.shape[1]), dtype=np.float32)
        actions[:valid_len] = self.normalize.normalize_actions(embodiment, chunk[:valid_len])
        actions, action_mask = Normalize.pad(actions, self.config.width)
        return RobotExample(
            key=key, component=sample.get(StreamField.COMPONENT.value, ""),
            epoch=int(sample.get(StreamField.EPOCH.value, 0)), embodiment=embodiment,
            instruction=meta.get(MetaField.INSTRUCTION.value, ""), images=images, image_mask=image_mask,
            state=state, state_mask=state_mask, actions=actions, action_mask=action_mask, valid_len=valid_len,
        )

    def _meta(self, sample: Mapping[str, Any], key: str, url: str) -> dict[str, Any]:
        raw = sample.get(SampleKey.META.value)
        try:
            meta = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        except ValueError as error:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"meta.json is not JSON ({error}); rewrite the shard") from None
        if not isinstance(meta, dict) or MetaField.EMBODIMENT.value not in meta:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message="meta.json is missing or has no embodiment; rewrite the shard")
        return meta

    def _images(self, sample: Mapping[str, Any], key: str, url: str) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.config.image_size
        images = np.zeros((len(self._members), height, width, 3), dtype=np.uint8)
        mask = np.zeros(len(self._members), dtype=bool)
        for slot, member in enumerate(self._members):
            data = sample.get(member)
            if data is None:
                continue
            try:
                images[slot] = decode_frame(data, self.config.image_size)
            except ValueError as error:
                raise BadSampleError(url=url, key=key, reason=DropReason.BAD_IMAGE,
                                     message=f"{member} does not decode ({error}); re-ingest its episode") from None
            mask[slot] = True
        if not mask.any():
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"no frame of the configured cameras {self.config.cameras}; "
                                         f"add this embodiment's cameras to RobotSampleTransform.Config.cameras")
        return images, mask

    def _embodiment(self, sample: Mapping[str, Any], meta: Mapping[str, Any], key: str, url: str) -> str:
        component, embodiment = sample.get(StreamField.COMPONENT.value, ""), meta[MetaField.EMBODIMENT.value]
        if embodiment not in self.normalize:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"no normalization statistics for embodiment {embodiment!r} of component "
                                         f"{component!r}; the component's stats.json must cover every embodiment")
        return embodiment

    @staticmethod
    def _array(sample: Mapping[str, Any], member: str, key: str, url: str) -> np.ndarray:
        raw = sample.get(member)
        if raw is None:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"{member} is missing; rewrite the shard")
        if isinstance(raw, np.ndarray):
            return raw.astype(np.float32, copy=False)
        try:
            return load_npy(raw).astype(np.float32, copy=False)
        except ValueError as error:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"{member} is not a plain .npy array ({error}); rewrite the shard") from None

    def _check_shapes(self, state: np.ndarray, chunk: np.ndarray, embodiment: str, key: str, url: str) -> None:
        problems = []
        state_dim, action_dim = self.normalize.state_dim(embodiment), self.normalize.action_dim(embodiment)
        if state.shape != (state_dim,):
            problems.append(f"state.npy has shape {state.shape}, statistics {(state_dim,)}")
        if chunk.ndim != 2 or chunk.shape[1:] != (action_dim,):
            problems.append(f"action.npy has shape {chunk.shape}, statistics (T_max, {action_dim})")
        elif len(chunk) < self.config.chunk_len:
            problems.append(f"action.npy holds {len(chunk)} steps, fewer than chunk_len {self.config.chunk_len}"
                            f" (re-ingest with --chunk-len >= {self.config.chunk_len})")
        if max(state.shape[-1:] + chunk.shape[-1:]) > self.config.width:
            problems.append(f"more than {self.config.width} dims; raise RobotSampleTransform.Config.width")
        if problems:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD, message="; ".join(problems))
