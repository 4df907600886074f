"""Interpretability analyses over workbench models, all computed through the hook system (`run_with_cache`),
so they see the model under whatever `model.hooks(...)` is active: head detectors, logit lens, direct logit
attribution, patching, ablation, steering, per-token loss, residual-stream and neuron readouts."""

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

from .ablation import ablate_heads, mean_ablate_heads, resample_ablate_heads, zero_ablate_heads
from .attribution import component_logit_attribution, direct_logit_attribution, logit_diff_by_layer
from .logit_lens import logit_lens
from .loss import per_token_loss
from .neurons import mlp_activations
from .residual import lens_log_probs, residual_norms, residual_stack
from .patching import attribution_patch, logit_diff_metric, patch, patch_block_every, patch_heads_every
from .path_patching import direct_path_patch, path_patch, path_patch_receivers, path_patch_senders
from .steering import steer, steering_hook, steering_vector
from .weights import process_weights

__all__ += [
    "ablate_heads", "mean_ablate_heads", "resample_ablate_heads", "zero_ablate_heads",
    "component_logit_attribution", "direct_logit_attribution", "logit_diff_by_layer", "logit_lens",
    "per_token_loss", "mlp_activations", "lens_log_probs", "residual_norms", "residual_stack",
    "attribution_patch", "logit_diff_metric", "patch", "patch_block_every", "patch_heads_every",
    "direct_path_patch", "path_patch", "path_patch_receivers", "path_patch_senders",
    "steer", "steering_hook", "steering_vector", "process_weights",
]
