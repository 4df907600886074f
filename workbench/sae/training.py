"""Train an SAE on a model's activations. TopK (the default) follows OpenAI's "Scaling and evaluating sparse
autoencoders" and EleutherAI's sparsify: FVU loss, AuxK revival of dead latents, unit-norm decoder rows.
"standard" (ReLU) adds an L1 penalty on the activations weighted by the decoder row norms, as SAELens's
standard training does, made scale-free: l1_coefficient * E[sum_i a_i ||W_dec_i||] / sqrt(E||x - mean||^2).

    sae = workbench.sae.train(model, "blocks.2.hook_resid_pre", texts, d_sae=1024, k=16, steps=2000,
                              run_dir="runs/sae")

The run directory makes it resumable: `checkpoint.pt` (written atomically every `checkpoint_every` steps)
holds the SAE, the optimizer, the dead-latent counters, the log, the model's fingerprint and the data's length
and SHA-256; calling `train` again with the same arguments, model and data continues from it (other settings,
another model or other data are refused, naming what differs), and gives exactly the weights an uninterrupted
run has at the same step
(the batches are a function of the step: `workbench.sae.activations.ActivationBlocks`). At the end the SAE is
saved in SAELens's format to `run_dir/sae/` and the log to `run_dir/log.csv`. Per-head sites
(`attn.hook_z` ...) are trained on the heads flattened, so the SAE says `reshape_activations="hook_z"`; sites
without a trailing feature dimension (`hook_pattern`, `hook_attn_scores`) are refused (`workbench.sae.sites`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes
from ..fingerprint import model_fingerprint
from .activations import ActivationBlocks, token_stream
from .config import SAEConfig
from .io import save
from .sae import SAE
from .sites import site_layout
from ..threads import set_threads

CHECKPOINT, LOG, SAE_DIR = "checkpoint.pt", "log.csv", "sae"
LOG_COLUMNS = ("step", "tokens", "lr", "fvu", "auxk_loss", "l0", "dead_fraction", "elapsed_s", "l1_loss")
TRAIN_ARCHITECTURES = ("topk", "standard")


@dataclass
class SAETrainConfig:
    """Settings of one SAE training run (all but `steps` are fixed at the first start).

    Attributes:
        hook_name: the site.
        architecture: "topk" (default) or "standard" (ReLU + L1).
        d_sae: latents. k: active latents per token (TopK).
        steps: optimizer steps. batch_size: tokens per step.
        context: tokens per row fed to the model. rows_per_block: rows harvested at once (shuffle window).
        lr: Adam learning rate (None: sparsify's rule 2e-4 / sqrt(d_sae / 16384)).
        warmup_steps: linear warm-up. decay_fraction: final fraction of the steps with linear decay to 0.
        auxk_alpha: weight of the AuxK loss (TopK). l1_coefficient: weight of the L1 penalty (standard).
        dead_tokens: a latent not fired for this many tokens is dead.
        seed: seeds the initialisation and the data order.
        checkpoint_every, log_every: in steps.
    """

    hook_name: str
    architecture: str = "topk"
    d_sae: int = 1024
    k: int = 16
    steps: int = 2000
    batch_size: int = 2048
    context: int = 128
    rows_per_block: int = 256
    lr: float | None = None
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    auxk_alpha: float = 1 / 32
    l1_coefficient: float = 1.0
    dead_tokens: int = 200_000
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("d_sae", "k", "steps", "batch_size", "context", "rows_per_block", "checkpoint_every",
                     "log_every", "dead_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SAE training: {name} must be a positive integer, got {value!r}")
        if self.architecture not in TRAIN_ARCHITECTURES:
            raise ValueError(f"SAE training: architecture must be one of {', '.join(TRAIN_ARCHITECTURES)}, got "
                             f"{self.architecture!r}")
        if self.k > self.d_sae:
            raise ValueError(f"SAE training: k={self.k} must be <= d_sae={self.d_sae}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"SAE training: decay_fraction must be in [0, 1], got {self.decay_fraction}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.d_sae / 2**14)

    def lr_at(self, step: int) -> float:
        """Learning rate of step `step` (0-based): warm-up, constant, then linear decay to 0."""
        scale = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        decay_start = self.steps * (1 - self.decay_fraction)
        if step >= decay_start and self.decay_fraction > 0:
            scale = min(scale, (self.steps - step) / (self.steps - decay_start))
        return self.learning_rate * scale


@dataclass
class SAETrainResult:
    """What `train` returns: the SAE, the step reached, the log rows and where it was saved."""

    sae: SAE
    step: int
    log: list[dict[str, float]]
    sae_dir: Path | None


def _fixed_fields(cfg: SAETrainConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("steps", "checkpoint_every", "log_every")}


def _initial_sae(cfg: SAETrainConfig, d_in: int, model_name: str | None, b_dec: torch.Tensor, reshape: str
                 ) -> SAE:
    """An SAE with unit-norm kaiming decoder rows, W_enc = W_dec.T and b_dec the data mean (seeded).
    `reshape` is SAELens's reshape_activations ("hook_z": the harvest flattened the heads)."""
    k = cfg.k if cfg.architecture == "topk" else None
    sae = SAE(SAEConfig(d_in=d_in, d_sae=cfg.d_sae, architecture=cfg.architecture, k=k, hook_name=cfg.hook_name,
                        model_name=model_name, reshape_activations=reshape),
              init="kaiming", generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        sae.set_decoder_norm_to_unit_norm()
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_(b_dec)
    return sae


def _losses(sae: SAE, x: torch.Tensor, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(FVU, second loss, acts) of a batch `x` `[n, d_in]`. The second loss is, for TopK, AuxK as in sparsify
    (the top-k_aux dead latents predict the residual, scaled down when few latents are dead); for a standard
    SAE, the scale-free L1 penalty of the module docstring (without its coefficient)."""
    sae_in = x - sae.b_dec
    pre = sae_in @ sae.W_enc + sae.b_enc
    if sae.cfg.architecture == "topk":
        values, indices = pre.topk(sae.cfg.k, dim=-1, sorted=False)
        acts = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    else:
        acts = pre.relu()
    recons = acts @ sae.W_dec + sae.b_dec
    error = x - recons
    total_variance = (x - x.mean(0)).pow(2).sum()
    fvu = error.pow(2).sum() / total_variance
    if sae.cfg.architecture != "topk":
        l1 = (acts * sae.W_dec.norm(dim=-1)).sum(-1).mean() / (total_variance / x.shape[0]).sqrt()
        return fvu, l1, acts
    n_dead = int(dead.sum())
    if n_dead == 0:
        return fvu, fvu.new_zeros(()), acts
    k_aux = min(x.shape[-1] // 2, n_dead)
    scale = min(n_dead / (x.shape[-1] // 2), 1.0)
    aux_pre = torch.where(dead[None], pre, torch.full_like(pre, -torch.inf))
    aux_values, aux_indices = aux_pre.topk(k_aux, dim=-1, sorted=False)
    aux_acts = torch.zeros_like(pre).scatter(-1, aux_indices, aux_values.relu())
    auxk = scale * (aux_acts @ sae.W_dec - error.detach()).pow(2).sum() / total_variance
    return fvu, auxk, acts


@torch.no_grad()
def _constrain_grad(sae: SAE) -> None:
    """Remove the part of W_dec's gradient along its (unit) rows, so the step does not change their norm."""
    if sae.W_dec.grad is not None:
        parallel = (sae.W_dec.grad * sae.W_dec).sum(-1, keepdim=True)
        sae.W_dec.grad -= parallel * sae.W_dec


def train(model: Any, hook_name: str, texts: str | Sequence[str] | torch.Tensor, *, d_sae: int = 1024, k: int = 16,
          steps: int = 2000, run_dir: str | Path | None = None, progress: bool = True, threads: int | None = None,
          callback: Callable[[int, dict[str, float]], None] | None = None, model_name: str | None = None,
          **settings: Any) -> SAETrainResult:
    """Train (or resume) an SAE (TopK unless `architecture="standard"`) on `hook_name` activations of `model`.

    Args:
        model: a workbench model (eval mode; its parameters are not trained).
        hook_name: the site, e.g. `blocks.2.hook_resid_pre`.
        texts: a string, a list of strings (each ends with the eos token), or a token stream `[n_tokens]`.
        d_sae, k, steps: latents, active latents per token (TopK), optimizer steps.
        run_dir: checkpoint / log / final SAE directory; None trains in memory (not resumable).
        progress: show a tqdm bar. threads: torch threads (default: torch's choice).
        callback: called as `callback(step, log_row)` after every step (step = steps done).
        model_name: recorded in the SAE's config (SAELens's `metadata.model_name`).
        **settings: other `SAETrainConfig` fields (architecture, batch_size, context, lr, auxk_alpha,
            l1_coefficient, seed ...).

    Returns:
        `SAETrainResult` (the SAE, the steps done, the log, `run_dir/sae` when finished with a run_dir).

    Raises:
        KeyError: a hook name the model lacks. ValueError: bad settings, a site without a trailing feature
        dimension (attention patterns), a damaged checkpoint.pt, or a run_dir whose checkpoint was made with
        other settings, another model or other data (naming the field).
    """
    cfg = SAETrainConfig(hook_name=hook_name, d_sae=d_sae, k=k, steps=steps, **settings)
    model.resolve_hook_points(hook_name)  # KeyError with the closest names
    layout = site_layout(model, hook_name)  # ValueError for hook_pattern / hook_attn_scores
    if threads is not None:
        set_threads(threads)
    model.eval()
    run = Path(run_dir) if run_dir is not None else None
    state = read_checkpoint(run / CHECKPOINT) if run and (run / CHECKPOINT).is_file() else None
    stream = token_stream(model, texts)
    blocks = ActivationBlocks(model, hook_name, stream, cfg.context, cfg.batch_size, cfg.rows_per_block, cfg.seed)
    identity = {"model_fingerprint": model_fingerprint(model), "data": data_identity(stream)}
    if state is not None:
        _check_resume(run / CHECKPOINT, state, cfg, identity)
        sae = SAE(SAEConfig.from_saelens_dict(state["sae_cfg"]))
        sae.load_state_dict(state["sae"])
    else:
        first = blocks.block(0)
        sae = _initial_sae(cfg, first.shape[-1], model_name, first.mean(0),
                           layout.reshape if layout is not None else "none")
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.learning_rate, eps=1e-8)
    step, log, elapsed = 0, [], 0.0
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, log, elapsed, since_fired = state["step"], state["log"], state["elapsed_s"], state["since_fired"]

    def checkpoint() -> None:
        if run is None:
            return
        run.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"config": dataclasses.asdict(cfg), **identity, "sae_cfg": sae.cfg.to_saelens_dict(),
                    "sae": sae.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "log": log,
                    "elapsed_s": elapsed, "since_fired": since_fired}, buffer)
        atomic_write_bytes(run / CHECKPOINT, buffer.getvalue())
        _write_log(run / LOG, log)

    bar = tqdm(total=cfg.steps, initial=step, desc=f"SAE {hook_name}", disable=not progress, unit="step")
    while step < cfg.steps:
        start = time.perf_counter()
        x = blocks.batch(step)
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        dead = since_fired >= cfg.dead_tokens
        fvu, second, acts = _losses(sae, x, dead)
        topk = cfg.architecture == "topk"
        optimizer.zero_grad(set_to_none=True)
        (fvu + (cfg.auxk_alpha if topk else cfg.l1_coefficient) * second).backward()
        if topk:  # the decoder-norm constraint; a standard SAE's L1 penalty is weighted by the norms instead
            _constrain_grad(sae)
        optimizer.step()
        if topk:
            sae.set_decoder_norm_to_unit_norm()
        fired = (acts > 0).any(0)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + x.shape[0])
        step += 1
        elapsed += time.perf_counter() - start
        row = {"step": step, "tokens": step * cfg.batch_size, "lr": lr, "fvu": fvu.item(),
               "auxk_loss": second.item() if topk else 0.0, "l1_loss": 0.0 if topk else second.item(),
               "l0": float((acts > 0).sum(-1).float().mean()), "dead_fraction": float(dead.float().mean()),
               "elapsed_s": round(elapsed, 3)}
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.append(row)
            bar.set_postfix(fvu=f"{row['fvu']:.3f}", dead=f"{row['dead_fraction']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        bar.update(1)
        if callback is not None:
            callback(step, row)
    bar.close()
    sae_dir = save(sae, run / SAE_DIR) if run is not None else None
    return SAETrainResult(sae, step, log, sae_dir)


def data_identity(stream: torch.Tensor) -> dict[str, Any]:
    """What the training data is: its length and a SHA-256 of the token ids (`stream` `[n_tokens]`)."""
    ids = stream.to(torch.int64).contiguous().numpy()
    return {"n_tokens": int(ids.size), "sha256": hashlib.sha256(ids.tobytes()).hexdigest()}


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (`torch.load(weights_only=True)`).

    Raises:
        ValueError: a file that is not a readable checkpoint, or lacks its entries (naming the file).
    """
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises pickle / zip / runtime errors of many types for a damaged file
        raise ValueError(f"{path} is not a readable SAE training checkpoint ({type(err).__name__}: {err}); "
                         "delete it to start over, or pass another run directory") from err
    missing = [key for key in _CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path} is not an SAE training checkpoint: it lacks {missing}; delete it to start over, "
                         "or pass another run directory")
    return state


_CHECKPOINT_KEYS = ("config", "sae_cfg", "sae", "optimizer", "step", "log", "elapsed_s", "since_fired")


def _check_resume(path: Path, state: dict[str, Any], cfg: SAETrainConfig, identity: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint made with other settings, another model or other data (ValueError)."""
    # a field missing from an older checkpoint's config had its default then
    defaults = {f.name: f.default for f in dataclasses.fields(SAETrainConfig)}
    for name, value in _fixed_fields(cfg).items():
        made_with = state["config"].get(name, defaults.get(name))
        if made_with != value:
            raise ValueError(f"{path} was made with {name}={made_with!r}, not {value!r}; use another run_dir or "
                             "the same settings to resume")
    # checkpoints written before these were recorded cannot be checked
    made_on = state.get("model_fingerprint")
    if made_on is not None and made_on != identity["model_fingerprint"]:
        raise ValueError(f"{path} was made on another model (fingerprint {made_on}, this model's is "
                         f"{identity['model_fingerprint']}: other weights, revision, dtype or config); resume "
                         "with the same model or use another run_dir")
    data = state.get("data")
    if data is not None and data != identity["data"]:
        raise ValueError(f"{path} was made on other data ({data['n_tokens']:,} tokens, sha256 "
                         f"{data['sha256'][:12]}...; these are {identity['data']['n_tokens']:,} tokens, sha256 "
                         f"{identity['data']['sha256'][:12]}...); resume with the same texts or use another run_dir")


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())
