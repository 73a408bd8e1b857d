"""Deterministic, episode-level train/validation split."""

from __future__ import annotations

import enum
import hashlib


class Split(str, enum.Enum):
    TRAIN = "train"
    VALIDATION = "validation"


def split_of(episode_id: str, validation_fraction: float) -> Split:
    """The split of an episode: a hash of its id, so every step of an episode lands in the same split, on any
    machine, in any run, whatever else is in the dataset."""
    digest = hashlib.sha256(episode_id.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return Split.VALIDATION if position < validation_fraction else Split.TRAIN
