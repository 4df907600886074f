"""SAE training: kill-and-resume equality, seeding, the decoder-norm constraint, AuxK against sparsify's,
metrics on SAEs of known quality, and the `workbench train-sae` command."""

from __future__ import annotations

import json

import pytest
import torch

import workbench
from workbench import sae as wsae
from workbench.sae.training import _losses

SITE = "blocks.1.hook_resid_post"
# small enough for seconds: 2 steps per block of 16 rows x 32 tokens
SMALL = dict(d_sae=64, k=4, batch_size=256, context=32, rows_per_block=16, dead_tokens=256, warmup_steps=2,
             log_every=1, progress=False)


@pytest.fixture(scope="module")
def model():
    return workbench.load("demo")


@pytest.fixture(scope="module")
def stream():
    return torch.randint(2, 4096, (40 * 32,), generator=torch.Generator().manual_seed(0))  # [tokens]


class Killed(Exception):
    pass


def _kill_at(step_to_die: int):
    def callback(step, row):
        if step == step_to_die:
            raise Killed
    return callback


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_weights(model, stream, tmp_path):
    full = wsae.train(model, SITE, stream, steps=8, run_dir=tmp_path / "full", checkpoint_every=3, **SMALL)
    with pytest.raises(Killed):  # dies at step 5; the last checkpoint is step 3
        wsae.train(model, SITE, stream, steps=8, run_dir=tmp_path / "killed", checkpoint_every=3,
                   callback=_kill_at(5), **SMALL)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = wsae.train(model, SITE, stream, steps=8, run_dir=tmp_path / "killed", checkpoint_every=3, **SMALL)
    assert resumed.step == full.step == 8
    for name, value in full.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], value), name
    strip = lambda log: [{k: v for k, v in row.items() if k != "elapsed_s"} for row in log]  # noqa: E731
    assert strip(resumed.log) == strip(full.log)
    assert any(row["dead_fraction"] > 0 for row in full.log)  # AuxK was in play
    assert torch.equal(wsae.load(tmp_path / "killed" / "sae").W_dec, full.sae.W_dec)


_KILLED_RUN = """
import os, signal, sys, torch, workbench
from workbench import sae as wsae
torch.set_num_threads(1)
stream = torch.randint(2, 4096, (40 * 32,), generator=torch.Generator().manual_seed(0))
def die(step, row):
    if step == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # no exception, no cleanup: the process just ends
wsae.train(workbench.load("demo"), sys.argv[1], stream, steps=8, run_dir=sys.argv[2], checkpoint_every=3,
           callback=die, **{SMALL!r})
"""


@pytest.mark.slow
def test_sigkilled_process_resumes_to_the_uninterrupted_weights(model, stream, tmp_path):
    import signal
    import subprocess
    import sys

    script = _KILLED_RUN.replace("{SMALL!r}", repr(SMALL))
    proc = subprocess.run([sys.executable, "-c", script, SITE, str(tmp_path / "killed")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (tmp_path / "killed" / "sae").exists()
    resumed = wsae.train(model, SITE, stream, steps=8, run_dir=tmp_path / "killed", checkpoint_every=3, **SMALL)
    full = wsae.train(model, SITE, stream, steps=8, **SMALL)
    for name, value in full.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], value), name


def test_seeded_and_constrained(model, stream):
    a = wsae.train(model, SITE, stream, steps=3, seed=1, **SMALL).sae
    b = wsae.train(model, SITE, stream, steps=3, seed=1, **SMALL).sae
    c = wsae.train(model, SITE, stream, steps=3, seed=2, **SMALL).sae
    assert torch.equal(a.W_enc, b.W_enc) and not torch.equal(a.W_enc, c.W_enc)
    torch.testing.assert_close(a.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5, rtol=0)
    assert a.cfg.hook_name == SITE and a.cfg.architecture == "topk" and a.cfg.k == 4


def test_standard_sae_training_trades_l0_for_the_l1_coefficient(model, stream):
    settings = {**SMALL, "architecture": "standard", "lr": 3e-3}
    weak = wsae.train(model, SITE, stream, steps=12, l1_coefficient=0.01, **settings)
    strong = wsae.train(model, SITE, stream, steps=12, l1_coefficient=3.0, **settings)
    assert weak.sae.cfg.architecture == strong.sae.cfg.architecture == "standard"
    assert strong.log[-1]["l0"] < weak.log[-1]["l0"] and strong.log[-1]["l1_loss"] > 0
    assert strong.log[-1]["auxk_loss"] == 0
    with pytest.raises(ValueError, match="architecture must be one of topk, standard"):
        wsae.train(model, SITE, stream, steps=1, **{**SMALL, "architecture": "gated"})


def test_resume_with_other_settings_names_the_field(model, stream, tmp_path):
    wsae.train(model, SITE, stream, steps=2, run_dir=tmp_path / "run", **SMALL)
    with pytest.raises(ValueError, match=r"checkpoint\.pt was made with k=4, not 8"):
        wsae.train(model, SITE, stream, steps=2, run_dir=tmp_path / "run", **{**SMALL, "k": 8})
    with pytest.raises(KeyError, match="closest"):
        wsae.train(model, "blocks.1.hook_resid_pots", stream, steps=1, **SMALL)


@pytest.mark.slow
def test_fvu_and_auxk_are_sparsifys(tmp_path):
    """The training losses equal sparsify's SparseCoder.forward (fvu, auxk_loss) on the same weights."""
    sparsify = pytest.importorskip("sparsify", reason="eai-sparsify is a test dependency")
    coder = sparsify.SparseCoder(32, sparsify.SparseCoderConfig(num_latents=96, k=6))
    with torch.no_grad():
        coder.b_dec.normal_(generator=torch.Generator().manual_seed(1))
        coder.encoder.bias.normal_(generator=torch.Generator().manual_seed(2))
    coder.save_to_disk(tmp_path / "layers.0")
    sae = wsae.load(tmp_path / "layers.0")
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(3))
    dead = torch.zeros(96, dtype=torch.bool)
    dead[::3] = True
    with torch.no_grad():
        expected = coder(x, dead_mask=dead)
        fvu, auxk, acts = _losses(sae, x, dead)
    assert float(expected.auxk_loss) > 0
    torch.testing.assert_close(fvu, expected.fvu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(auxk, expected.auxk_loss, atol=1e-5, rtol=1e-5)


def _identity_sae(d: int) -> wsae.SAE:
    """relu(x) - relu(-x) = x: a standard SAE that reconstructs exactly."""
    sae = wsae.SAE(wsae.SAEConfig(d_in=d, d_sae=2 * d, architecture="standard", hook_name=SITE,
                                  apply_b_dec_to_input=False))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def test_metrics_of_a_perfect_and_of_a_zero_sae(model, stream):
    rows = stream[:8 * 32].reshape(8, 32)
    perfect = wsae.sae_metrics(model, _identity_sae(128), rows, batch_rows=4)
    assert perfect["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert perfect["ce_loss_spliced"] == pytest.approx(perfect["ce_loss_clean"], abs=1e-3)
    assert perfect["dead_fraction"] == 0 and perfect["n_tokens"] == 256
    zero = wsae.sae_metrics(model, wsae.SAE(wsae.SAEConfig(d_in=128, d_sae=16, architecture="standard",
                                                           hook_name=SITE)), rows, batch_rows=4)
    assert zero["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)  # decoding zeros = zero ablation
    assert zero["l0"] == 0 and zero["dead_fraction"] == 1.0
    manual = perfect["ce_loss_clean"]
    with torch.no_grad():
        logits = model(rows).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), rows[:, 1:].flatten())
    assert manual == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.slow
def test_train_sae_command_trains_resumes_and_exports(tmp_path):
    from workbench.cli import main
    from workbench.data import load_kjv

    data = tmp_path / "text"
    data.mkdir()
    for i, doc in enumerate(load_kjv()[:20]):  # 20 chapters: one is held out (split_documents)
        (data / f"{i:02d}.txt").write_text(doc.text)
    args = ["train-sae", "--hook", SITE, "--data", str(data), "--out", str(tmp_path / "run"), "--d-sae", "64",
            "--k", "4", "--steps", "4", "--batch-size", "512", "--context", "32", "--no-progress", "--threads", "1",
            "--export", str(tmp_path / "export")]
    assert main(args) == 0
    exported = wsae.load(tmp_path / "export")
    assert exported.cfg.hook_name == SITE and exported.log_sparsity.shape == (64,)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "CE loss recovered" in card and "workbench train-sae" in card
    assert (tmp_path / "export" / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 < metrics["n_tokens"] and set(metrics) >= {"explained_variance", "ce_loss_recovered", "dead_fraction"}
    assert main(args[:args.index("--steps") + 1] + ["6"] + args[args.index("--steps") + 2:]) == 0  # extends
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 6
    assert main([*args[:2], "blocks.1.hook_nope", *args[3:]]) == 2


def test_an_sae_trained_on_hook_z_flattens_heads_and_splices(model, stream):
    """Training flattens [.., head, d_head] to head * d_head, so the SAE says reshape_activations="hook_z"
    (SAELens's meaning) and splices back into the site it was trained on."""
    sae = wsae.train(model, "blocks.1.attn.hook_z", stream, steps=2, **SMALL).sae
    assert sae.cfg.reshape_activations == "hook_z" and sae.cfg.d_in == model.config.hidden_size
    ids = stream[:64].reshape(2, 32)
    with torch.no_grad():
        assert torch.equal(model.run_with_saes(ids, saes=[sae], use_error_term=True).logits, model(ids).logits)
    z = model.run_with_cache(ids, names_filter="blocks.1.attn.hook_z")[1]["blocks.1.attn.hook_z"]
    _, cache = model.run_with_cache_with_saes(ids, saes=[sae],
                                              names_filter=lambda n: n.startswith("blocks.1.attn.hook_z"))
    assert torch.equal(cache["blocks.1.attn.hook_z.hook_sae_input"], z.flatten(-2))  # [batch, pos, head * d_head]
    assert cache["blocks.1.attn.hook_z"].shape == z.shape  # the reconstruction, reshaped back
    assert 0 <= wsae.sae_metrics(model, sae, ids)["l0"] <= 4


@pytest.mark.parametrize("site", ["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores"])
def test_training_refuses_sites_without_a_feature_dimension(model, stream, site):
    with pytest.raises(ValueError, match=rf"{site} has shape \[batch, head, query_pos, key_pos\]: no trailing "
                                         "feature dimension"):
        wsae.train(model, site, stream, steps=1, **SMALL)


def test_resume_on_another_model_or_other_data_is_refused(model, stream, tmp_path):
    run = tmp_path / "run"
    wsae.train(model, SITE, stream, steps=2, run_dir=run, **SMALL)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["data"]["n_tokens"] == stream.numel()
    with pytest.raises(ValueError, match=r"checkpoint\.pt was made on another model \(fingerprint"):
        wsae.train(workbench.load("demo", revision="step0"), SITE, stream, steps=3, run_dir=run, **SMALL)
    other = torch.randint(2, 4096, (40 * 32,), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"checkpoint\.pt was made on other data \(1,280 tokens, sha256"):
        wsae.train(model, SITE, other, steps=3, run_dir=run, **SMALL)
    with pytest.raises(ValueError, match="other data"):
        wsae.train(model, SITE, stream[:-32], steps=3, run_dir=run, **SMALL)
    # the same model under another name (its directory) and the same data resume
    same = workbench.load(workbench.demo_path())
    assert wsae.train(same, SITE, stream.clone(), steps=3, run_dir=run, **SMALL).step == 3


def test_a_damaged_checkpoint_is_a_clear_error(model, stream, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_text("garbage\n")
    with pytest.raises(ValueError, match=rf"{run / 'checkpoint.pt'} is not a readable SAE training checkpoint"):
        wsae.train(model, SITE, stream, steps=2, run_dir=run, **SMALL)
    torch.save({"step": 3}, run / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint\.pt is not an SAE training checkpoint: it lacks \['config'"):
        wsae.train(model, SITE, stream, steps=2, run_dir=run, **SMALL)


def test_train_sae_command_reports_a_damaged_checkpoint_in_one_line(tmp_path, capsys):
    from workbench.cli import main

    data = tmp_path / "text.txt"
    data.write_text("And God said, Let there be light: and there was light.\n" * 2000)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_text("garbage\n")
    args = ["train-sae", "--hook", SITE, "--data", str(data), "--out", str(tmp_path / "run"), "--d-sae", "64",
            "--k", "4", "--steps", "1", "--batch-size", "512", "--context", "32", "--no-progress", "--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("workbench: error: ") and "checkpoint.pt is not a readable SAE training checkpoint" in err
