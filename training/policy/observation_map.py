"""Which keys of a robot client's observation dict hold which camera, the state, the prompt and the action prefix.

Robot clients name things their own way (openpi's LIBERO client sends `observation/image`, its ALOHA client
`images: {cam_high: ...}`): an `ObservationMap` per embodiment says where each input is, so the server reads any of
them unchanged. Keys are paths: a nested dict is read with `/` between levels (`images/cam_high`), and a flat key
that itself contains `/` (`observation/image`) is found as well.

The map lives in the policy directory as `observation_map.json` (or comes from a file given to the server):

    {"embodiment": "bimanual_2x6dof", "cameras": {"images/top": "exterior_1"}, "state": "state",
     "prompt": "prompt", "default_prompt": "transfer the cube", "image_size": [224, 224]}

`parse` turns one observation into the policy's `Observation` (frames resized to the training size, in the
loader's camera-slot order) and the committed action prefix, or raises `ObservationError` naming the key, the
expected shape and what arrived. `describe` is the metadata a client can be written from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from vlaforge.datasets.schema import Camera
from vlaforge.training.policy.policy import Observation

MAP_FILE = "observation_map.json"
CAMERA_SLOTS = tuple(camera.value for camera in Camera)
"""The loader's default camera-slot order (`RobotSampleTransform.Config.cameras`): frames reach the model in it."""


class ObservationError(ValueError):
    """An observation the policy cannot read: names the key, what was expected and what arrived."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObservationMap:
    """Where one embodiment's client puts each input (see the module docstring)."""

    embodiment: str
    """Key of the policy's normalization statistics (the robot type) this client is."""
    cameras: Mapping[str, str]
    """Observation key -> canonical camera name (`datasets/schema.py` `Camera`); every one is required."""
    state: str = "state"
    """Key of the proprioceptive state [D_s] in robot units."""
    prompt: str = "prompt"
    """Key of the language instruction (a string)."""
    default_prompt: str | None = None
    """Instruction used when an observation has no prompt; None makes the prompt required."""
    prefix: str = "action_prefix"
    """Key of the optional committed actions [Δtc, D_a] (asynchronous execution)."""
    image_size: tuple[int, int] = (224, 224)
    """(H, W) the policy was trained on; every frame is resized to it, as the loader did."""
    camera_slots: tuple[str, ...] = CAMERA_SLOTS
    """The model's camera-slot order at training (the loader's `cameras`); frames are passed in this order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", dict(self.cameras))
        object.__setattr__(self, "image_size", tuple(self.image_size))
        object.__setattr__(self, "camera_slots", tuple(self.camera_slots))
        if not self.embodiment:
            raise ValueError("ObservationMap.embodiment must name the robot's normalization statistics, got ''")
        unknown = sorted(set(self.cameras.values()) - set(self.camera_slots))
        if not self.cameras or unknown:
            raise ValueError(f"ObservationMap.cameras must map observation keys to cameras of {list(self.camera_slots)}"
                             f", got {self.cameras}")
        if len(set(self.cameras.values())) != len(self.cameras):
            raise ValueError(f"ObservationMap.cameras maps two keys to one camera: {self.cameras}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"ObservationMap.image_size must be (H, W) > 0, got {self.image_size}")

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> "ObservationMap":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(document) - fields)
        if unknown:
            raise ValueError(f"observation map: unknown field(s) {unknown}; known: {sorted(fields)}")
        return cls(**document)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ObservationMap":
        path = pathlib.Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: {error}") from None

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        path = pathlib.Path(path)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        return path

    def ordered_cameras(self) -> list[tuple[str, str]]:
        """(observation key, camera) in the model's slot order."""
        return sorted(self.cameras.items(), key=lambda item: self.camera_slots.index(item[1]))

    def describe(self, state_dim: int, action_dim: int, chunk_len: int) -> dict[str, Any]:
        """The observation the server expects and the actions it returns, keyed by observation key."""
        observation: dict[str, Any] = {
            key: {"kind": "image", "camera": camera, "dtype": "uint8", "shape": [None, None, 3],
                  "also_accepted": "[3, H, W]", "resized_to": list(self.image_size), "required": True}
            for key, camera in self.ordered_cameras()
        }
        observation[self.state] = {"kind": "state", "dtype": "float32", "shape": [state_dim], "required": True}
        observation[self.prompt] = {"kind": "prompt", "dtype": "str", "shape": [],
                                    "required": self.default_prompt is None, "default": self.default_prompt}
        observation[self.prefix] = {"kind": "action_prefix", "dtype": "float32", "shape": [None, action_dim],
                                    "max_len": chunk_len - 1, "required": False}
        return observation

    def parse(self, observation: Mapping[str, Any], state_dim: int,
              action_dim: int) -> tuple[Observation, np.ndarray | None]:
        """The policy's `Observation` and the action prefix (None without one) of one client observation."""
        if not isinstance(observation, Mapping):
            raise ObservationError(f"an observation must be a map of keys to values, got {type(observation).__name__}")
        flat = _flatten(observation)
        images = [self._image(flat, key) for key, _ in self.ordered_cameras()]
        state = self._array(flat, self.state, (state_dim,))
        prefix = self._array(flat, self.prefix, (None, action_dim)) if flat.get(self.prefix) is not None else None
        return Observation(images=images, instruction=self._prompt(flat), state=state,
                           embodiment=self.embodiment), prefix

    def _image(self, flat: Mapping[str, Any], key: str) -> np.ndarray:
        value = _required(flat, key, "uint8 image [H, W, 3]")
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3 or 3 not in (
                value.shape[0], value.shape[-1]):
            raise ObservationError(f"observation key {key!r}: expected a uint8 image of shape [H, W, 3] (or [3, H, W])"
                                   f", got {_what(value)}")
        if value.shape[-1] != 3:
            value = np.transpose(value, (1, 2, 0))
        return resize_frame(value, self.image_size)

    @staticmethod
    def _array(flat: Mapping[str, Any], key: str, shape: tuple[int | None, ...]) -> np.ndarray:
        value = _required(flat, key, f"float32 array of shape {_shape_text(shape)}")
        array = value if isinstance(value, np.ndarray) else None
        if array is None and isinstance(value, list):
            try:
                array = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError):
                array = None
        fits = array is not None and array.ndim == len(shape) and all(
            n is None or n == m for n, m in zip(shape, array.shape))
        if not fits or array.dtype.kind not in "fiu":
            raise ObservationError(f"observation key {key!r}: expected a float32 array of shape {_shape_text(shape)}"
                                   f", got {_what(value)}")
        return array.astype(np.float32, copy=False)

    def _prompt(self, flat: Mapping[str, Any]) -> str:
        value = flat.get(self.prompt)
        if value is None:
            if self.default_prompt is None:
                raise ObservationError(f"observation key {self.prompt!r} is missing: expected the instruction (a "
                                       "string); this server has no default prompt")
            return self.default_prompt
        if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
            value = str(value.reshape(()))  # openpi's LIBERO client sends the prompt as a NumPy string scalar array
        if not isinstance(value, str):
            raise ObservationError(f"observation key {self.prompt!r}: expected a string, got {_what(value)}")
        return value


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> [height, width, 3] as the training loader sized frames: first shrunk by the largest whole
    factor that keeps both sides at least the target (the loader decodes JPEGs at 1/2, 1/4, 1/8 scale the same way;
    here a box filter), then bilinear. Always a fresh, writable array (arrays off the wire are read-only views)."""
    height, width = size
    if frame.shape[:2] == (height, width):
        return np.array(frame)
    image = Image.fromarray(np.ascontiguousarray(frame))
    factor = min(frame.shape[0] // height, frame.shape[1] // width, 8)
    if factor >= 2:
        image = image.reduce(factor)
    return np.array(image.resize((width, height), Image.BILINEAR))


def _flatten(observation: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf under its `/`-joined path; a nested dict is also kept under its own path."""
    flat: dict[str, Any] = {}
    for key, value in observation.items():
        path = f"{prefix}{key}"
        flat[path] = value
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path + "/"))
    return flat


def _required(flat: Mapping[str, Any], key: str, expected: str) -> Any:
    if key not in flat or flat[key] is None:
        present = sorted(k for k, v in flat.items() if not isinstance(v, Mapping))
        raise ObservationError(f"observation key {key!r} is missing: expected a {expected}; the observation has "
                               f"{present}")
    return flat[key]


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("N" if n is None else str(n) for n in shape) + "]"


def _what(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__
