"""Interpretability analyses over workbench models (head detectors, and more in sibling modules)."""

from .heads import (
    DETECTORS,
    attention_patterns,
    detector_scores,
    duplicate_token_scores,
    head_detector_table,
    induction_scores,
    previous_token_scores,
    repeated_random_tokens,
    repeated_sequence_losses,
    scores_frame,
)

__all__ = [
    "DETECTORS",
    "attention_patterns",
    "detector_scores",
    "duplicate_token_scores",
    "head_detector_table",
    "induction_scores",
    "previous_token_scores",
    "repeated_random_tokens",
    "repeated_sequence_losses",
    "scores_frame",
]

# Logit lens, attribution, patching, ablation, steering, per-token loss (hooks-and-analysis helper).
from .ablation import ablate_heads, mean_ablate_heads, resample_ablate_heads, zero_ablate_heads
from .attribution import direct_logit_attribution
from .logit_lens import logit_lens
from .loss import per_token_loss
from .patching import attribution_patch, logit_diff_metric, patch
from .steering import steer, steering_hook, steering_vector

__all__ += [
    "ablate_heads", "mean_ablate_heads", "resample_ablate_heads", "zero_ablate_heads",
    "direct_logit_attribution", "logit_lens", "per_token_loss",
    "attribution_patch", "logit_diff_metric", "patch",
    "steer", "steering_hook", "steering_vector",
]
