"""workbench.sae against the reference packages: SAEs written by `sae-lens` and `eai-sparsify` load and encode
as those packages encode them (<= 1e-5), and a workbench-saved SAE loads in sae-lens.

sae-lens 6.54 pins transformer-lens < 4 but uses from it only `HookedRootModule`, `HookPoint` and a few
utilities for its SAE classes; `_sae_lens()` maps the three module paths TransformerLens 4 moved
(`transformer_lens.HookedTransformer`, `.utils`, `.components`) before importing it. The classes tested here
(SAE save / load / encode / decode) run entirely on those.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from workbench import sae as wsae

D_IN, D_SAE = 16, 48


def _sae_lens():
    """Import sae_lens under TransformerLens 4 (see the module docstring); skip where it is not installed."""
    if importlib.util.find_spec("sae_lens") is None or importlib.util.find_spec("transformer_lens") is None:
        pytest.skip("sae-lens (pip install --no-deps sae-lens) and transformer-lens are test dependencies")
    import transformer_lens

    if "transformer_lens.HookedTransformer" not in sys.modules:
        import transformer_lens.utilities as utilities
        from transformer_lens.HookedRootModule import HookedRootModule

        class _Removed:  # HookedTransformer (the class) is gone in TransformerLens 4; nothing here uses it
            def __init__(self, *args, **kwargs):
                raise RuntimeError("HookedTransformer is not part of TransformerLens 4")

        def stub(name: str, **attrs) -> None:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module

        stub("transformer_lens.HookedTransformer", HookedRootModule=HookedRootModule, HookedTransformer=_Removed,
             Loss=object, Output=object)
        transformer_lens.HookedTransformer = _Removed
        stub("transformer_lens.components")
        stub("transformer_lens.components.mlps")
        stub("transformer_lens.components.mlps.can_be_used_as_mlp", CanBeUsedAsMLP=_Removed)
        sys.modules.setdefault("transformer_lens.utils", utilities)
    import sae_lens

    return sae_lens


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial parameters (biases and thresholds included), so every term of encode matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.3 if "threshold" in name else 0.5
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
            if "threshold" in name:
                p.abs_()


def _inputs(seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 7, D_IN, generator=torch.Generator().manual_seed(seed)) * 2  # [batch, pos, d_in]


# (architecture, extra config) of every SAELens inference architecture workbench.sae supports
SAELENS_CASES = [
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": False}),
    ("standard", {"normalize_activations": "layer_norm"}),
    ("standard", {"normalize_activations": "constant_norm_rescale"}),
    ("topk", {"k": 5}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    ("jumprelu", {}),
    ("gated", {}),
]


def _saelens_sae(sae_lens, architecture: str, extra: dict, seed: int = 0):
    from sae_lens.registry import get_sae_class

    sae_class, cfg_class = get_sae_class(architecture)
    cfg = cfg_class(d_in=D_IN, d_sae=D_SAE, **extra)
    cfg.metadata.hook_name = "blocks.1.hook_resid_pre"
    sae = sae_class(cfg)
    _randomise(sae, seed)
    return sae


@pytest.mark.parametrize("architecture,extra", SAELENS_CASES, ids=lambda v: str(v))
def test_saelens_written_sae_encodes_like_saelens(tmp_path, architecture, extra):
    reference = _saelens_sae(_sae_lens(), architecture, extra)
    reference.save_model(tmp_path / "sae")
    ours = wsae.load(tmp_path / "sae")
    assert ours.cfg.architecture == architecture and ours.cfg.hook_name == "blocks.1.hook_resid_pre"
    x = _inputs()
    with torch.no_grad():
        expected_acts = reference.encode(x)
        expected_out = reference(x)
    acts = ours.encode(x)
    assert (expected_acts != 0).any() and (expected_acts == 0).any()  # a real mix of active and inactive
    torch.testing.assert_close(acts, expected_acts, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x), expected_out, atol=1e-5, rtol=0)
    if "normalize_activations" not in extra:  # decode alone has no input normalisation to undo
        torch.testing.assert_close(ours.decode(expected_acts), expected_out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture,extra", SAELENS_CASES, ids=lambda v: str(v))
def test_workbench_saved_sae_loads_in_saelens(tmp_path, architecture, extra):
    sae_lens = _sae_lens()
    cfg = wsae.SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=architecture, hook_name="blocks.2.hook_resid_post",
                         model_name="demo", **extra)
    ours = wsae.SAE(cfg)
    _randomise(ours, seed=5)
    wsae.save(ours, tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    assert theirs.cfg.architecture() == architecture
    assert theirs.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    x = _inputs(4)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


def test_saelens_sparsity_file_is_read_and_written(tmp_path):
    _sae_lens()
    from safetensors.torch import save_file

    ours = wsae.SAE(wsae.SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="standard", hook_name="hook_embed"))
    wsae.save(ours, tmp_path / "a")
    log_sparsity = torch.linspace(-6, 0, D_SAE)
    save_file({"sparsity": log_sparsity}, str(tmp_path / "a" / "sparsity.safetensors"))
    loaded = wsae.load(tmp_path / "a")
    assert torch.equal(loaded.log_sparsity, log_sparsity)
    wsae.save(loaded, tmp_path / "b")
    assert torch.equal(wsae.load(tmp_path / "b").log_sparsity, log_sparsity)


def _sparsify_coder(d_in: int = D_IN, num_latents: int = D_SAE, k: int = 6, seed: int = 0):
    sparsify = pytest.importorskip("sparsify", reason="eai-sparsify is a test dependency")
    coder = sparsify.SparseCoder(d_in, sparsify.SparseCoderConfig(num_latents=num_latents, k=k))
    _randomise(coder, seed)
    return coder


def _sparsify_dense(coder, x: torch.Tensor) -> torch.Tensor:
    """sparsify's own encode (top_acts, top_indices) scattered into dense activations  # [..., d_sae]"""
    with torch.no_grad():
        out = coder.encode(x)
    return torch.zeros(*x.shape[:-1], coder.num_latents).scatter(-1, out.top_indices, out.top_acts)


def test_sparsify_written_sae_encodes_like_sparsify(tmp_path):
    coder = _sparsify_coder()
    coder.save_to_disk(tmp_path / "layers.2")
    ours = wsae.load(tmp_path / "layers.2")
    assert ours.cfg.architecture == "topk" and ours.cfg.k == 6
    assert ours.cfg.hook_name == "blocks.2.hook_resid_post"  # sparsify's layer output = our resid_post
    x = _inputs().reshape(-1, D_IN)  # sparsify encodes [tokens, d_in]
    expected = _sparsify_dense(coder, x)
    assert (expected != 0).sum(-1).max() == 6
    torch.testing.assert_close(ours.encode(x), expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        recons = coder.decode(*coder.encode(x)[:2])
    torch.testing.assert_close(ours(x), recons, atol=1e-5, rtol=0)


def test_sparsify_multi_hook_directory_and_subfolders(tmp_path):
    for i, name in enumerate(("layers.1", "layers.3.mlp")):
        _sparsify_coder(seed=i).save_to_disk(tmp_path / "run" / name)
    with pytest.raises(FileNotFoundError, match=r"subfolder=.*layers\.1.*layers\.3\.mlp"):
        wsae.load(tmp_path / "run")
    assert wsae.load(tmp_path / "run", subfolder="layers.3.mlp").cfg.hook_name == "blocks.3.hook_mlp_out"
    assert wsae.load(tmp_path / "run", "layers.1").cfg.hook_name == "blocks.1.hook_resid_post"


def test_sparsify_sae_on_the_demo_model_matches_on_real_activations(tmp_path):
    import workbench

    model = workbench.load("demo")
    coder = _sparsify_coder(d_in=model.config.hidden_size, num_latents=256, k=8)
    coder.save_to_disk(tmp_path / "layers.1")
    sae = wsae.load(tmp_path / "layers.1")
    _, cache = model.run_with_cache_with_saes("In the beginning God created the heaven", saes=[sae],
                                              names_filter="blocks.1.hook_resid_post.hook_sae_acts_post")
    resid = model.run_with_cache("In the beginning God created the heaven",
                                 names_filter="blocks.1.hook_resid_post")[1]["blocks.1.hook_resid_post"]
    expected = _sparsify_dense(coder, resid[0])
    torch.testing.assert_close(cache["blocks.1.hook_resid_post.hook_sae_acts_post"][0], expected, atol=1e-5,
                               rtol=0)


def test_explained_variance_is_saelens_definition():
    """sae_metrics' explained variance is SAELens's ExplainedVarianceCalculator on the same activations."""
    _sae_lens()
    from sae_lens.evals import ExplainedVarianceCalculator

    import workbench

    model = workbench.load("demo")
    sae = wsae.SAE(wsae.SAEConfig(d_in=128, d_sae=256, architecture="topk", k=8, hook_name="blocks.1.hook_resid_pre"),
                   init="kaiming", generator=torch.Generator().manual_seed(0))
    ids = torch.randint(2, 4096, (3, 32), generator=torch.Generator().manual_seed(1))
    metrics = wsae.sae_metrics(model, sae, ids, batch_rows=2)
    _, cache = model.run_with_cache_with_saes(ids, saes=[sae], names_filter=lambda n: n.endswith(
        ("hook_sae_input", "hook_sae_output")))
    calc = ExplainedVarianceCalculator()
    for rows in range(0, 3, 2):  # the same two batches
        calc.add_batch(sae_output=cache["blocks.1.hook_resid_pre.hook_sae_output"][rows:rows + 2].flatten(0, 1),
                       hidden_acts=cache["blocks.1.hook_resid_pre.hook_sae_input"][rows:rows + 2].flatten(0, 1))
    assert metrics["explained_variance"] == pytest.approx(calc.compute(), abs=1e-5)


def test_the_demo_sae_loads_in_saelens_and_encodes_alike():
    sae_lens = _sae_lens()
    import workbench

    model, ours = workbench.load("demo"), wsae.load("demo")
    theirs = sae_lens.SAE.load_from_disk(wsae.demo_sae_path())
    resid = model.run_with_cache("And God said, Let there be light", names_filter=ours.cfg.hook_name)[1][
        ours.cfg.hook_name]
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(resid), theirs.encode(resid), atol=1e-5, rtol=0)


def test_the_cards_claim_about_sae_lens_holds():
    """The demo card (and every card `export_card` writes) says sae-lens reads the files only where it imports,
    i.e. with transformer-lens < 4, as sae-lens's own requirement says; with this venv's transformer-lens 4 a
    plain `import sae_lens` fails, which is why this file maps the moved modules first."""
    import subprocess
    from importlib.metadata import requires, version

    from workbench.sae.card import card_text

    if importlib.util.find_spec("sae_lens") is None:
        pytest.skip("sae-lens is a test dependency")
    from packaging.requirements import Requirement

    pins = [Requirement(r) for r in requires("sae-lens") if r.startswith("transformer-lens")]
    assert pins and not pins[0].specifier.contains("4.0.0") and pins[0].specifier.contains("3.9.0")  # < 4
    claim = "where sae-lens can be imported, i.e. with transformer-lens < 4"
    readme = " ".join((wsae.demo_sae_path() / "README.md").read_text().split())
    assert claim in readme and "tests/test_sae_packages.py" in readme
    config = {"hook_name": "blocks.2.hook_resid_pre", "d_sae": 64, "k": 4, "auxk_alpha": 1 / 32, "dead_tokens": 9,
              "context": 32, "rows_per_block": 16, "lr": None, "warmup_steps": 2, "decay_fraction": 0.2,
              "batch_size": 256, "seed": 0}
    metrics = {"explained_variance": 0.9, "ce_loss_recovered": 0.9, "dead_fraction": 0.0, "dense_fraction": 0.0,
               "l0": 4.0, "ce_loss_clean": 1.0, "ce_loss_spliced": 1.1, "ce_loss_zero_ablated": 5.0, "n_tokens": 64,
               "d_in": 128}
    assert claim in " ".join(card_text(config, metrics, None, [{"step": 1, "tokens": 256, "elapsed_s": 1.0}]).split())
    if int(version("transformer-lens").split(".")[0]) >= 4:
        proc = subprocess.run([sys.executable, "-c", "import sae_lens"], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "transformer_lens" in proc.stderr
