"""`Phase`: the recipe's training phases (RECIPE.md: pre-training steps 1 and 2, post-training), one enum for the
model (`VLAModel.set_phase`: whether the VLM is frozen, which DiT mask, whether clean prefixes are drawn) and the
trainer (`TrainerConfig.phase`; `training/phase_model.py` tabulates what each phase trains, on which losses).
"""

from __future__ import annotations

import enum

from vlaforge.training.model.masks import AttentionKind


class Phase(str, enum.Enum):
    """One phase of the recipe (see the module docstring)."""

    STEP1_CHOICE = "step1_choice"  # the VLM learns actions with Choice Policies, co-trained on VL; DiT unused
    STEP2_DIT = "step2_dit"  # VLM frozen, the DiT learns flow matching from scratch
    POSTTRAIN_SYNC = "posttrain_sync"  # everything trainable, flow matching, causal mask
    POSTTRAIN_ASYNC = "posttrain_async"  # everything trainable, clean action prefix, Λ mask, error-weighted loss

    @property
    def freezes_vlm(self) -> bool:
        """The VLM is a frozen conditioner (step 2)."""
        return self is Phase.STEP2_DIT

    @property
    def attention(self) -> AttentionKind:
        """The DiT-to-DiT mask the phase trains (and its policy samples) with."""
        return AttentionKind.LAMBDA if self is Phase.POSTTRAIN_ASYNC else AttentionKind.CAUSAL

    @property
    def clean_prefixes(self) -> bool:
        """Flow matching draws clean action prefixes and error-weights the loss (asynchronous post-training)."""
        return self is Phase.POSTTRAIN_ASYNC
