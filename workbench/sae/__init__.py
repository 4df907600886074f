"""Sparse autoencoders: load (SAELens / sparsify formats), save, splice into a model, train, measure.

    import workbench
    from workbench import sae as wsae
    model, sae = workbench.load("demo"), wsae.load("demo")   # the SAE shipped for the demo model
    logits, cache = model.run_with_cache_with_saes("And God said", saes=[sae])
    cache["blocks.2.hook_resid_pre.hook_sae_acts_post"]       # [batch, pos, d_sae]
    wsae.sae_metrics(model, sae, texts)                       # explained variance, L0, CE loss recovered ...

Modules: `config` (SAEConfig, cfg.json), `sae` (the SAE module), `io` (load / save, format detection),
`splice` (model.saes / run_with_saes / run_with_cache_with_saes), `sites` (which sites an SAE reads, and
how), `interventions` (ablate / clamp / scale
a feature), `activations` (streamed harvesting),
`training` (train), `metrics` (sae_metrics), `card`, `cli` (`workbench train-sae`).
"""

from .config import ARCHITECTURES, SAEConfig, SAEConfigError
from .interventions import ablate_features, clamp_feature, scale_feature
from .io import demo_sae_path, load, save
from .metrics import sae_metrics
from .sae import SAE
from .splice import run_with_cache_with_saes, run_with_saes, saes
from .training import SAETrainConfig, SAETrainResult, train

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "SAEConfigError", "SAETrainConfig", "SAETrainResult",
           "ablate_features", "clamp_feature", "demo_sae_path", "load", "run_with_cache_with_saes", "run_with_saes",
           "sae_metrics", "save", "saes", "scale_feature", "train"]
