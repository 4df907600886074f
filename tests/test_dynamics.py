"""Training dynamics: revisions of a training run (and of the demo), sweeps over them, and their plots."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from IPython.core.formatters import DisplayFormatter

import workbench
from workbench.analysis.heads import induction_scores
from workbench.dynamics import IdenticalRevisionsWarning, plot_head_scores, plot_metric_vs_step, plot_vs_pythia, sweep
from workbench.hub import list_revisions
from workbench.training import loop, recipes
from workbench.training.checkpointing import numerics_provenance

from .test_hub import add_snapshot

TINY_REVISIONS = (0, 4, 12)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 20-step tiny training run with snapshots at steps 0, 4 and 12 (and refs step20 -> main)."""
    rec = recipes.recipe("tiny")
    rec["train"].revision_steps = TINY_REVISIONS
    out = tmp_path_factory.mktemp("tiny_run")
    loop.train(out, rec["model"], rec["train"], rec["data"], progress=False)
    return out


def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model(torch.arange(2, 30)[None]).logits


def test_run_revisions_are_listed_in_training_order(tiny_run):
    assert list_revisions(tiny_run) == ["step0", "step4", "step12", "step20", "main"]
    assert workbench.revisions(tiny_run) == list_revisions(tiny_run)


def test_each_revision_equals_the_recipe_remade_to_that_step(tiny_run, tmp_path):
    """A snapshot is the weights of the same recipe stopped at that step, rounded once to bf16."""
    rec = recipes.recipe("tiny")
    rec["train"].checkpoint_every, rec["train"].revision_steps = 1, ()  # neither changes the weights
    for step in TINY_REVISIONS:
        reference = loop.build_model(rec["model"], rec["train"].seed)
        if step:
            loop.train(tmp_path / f"s{step}", rec["model"], rec["train"], rec["data"], stop_after=step, progress=False)
            reference.load_state_dict(torch.load(tmp_path / f"s{step}" / "checkpoint.pt", weights_only=True)["model"])
        reference = reference.to(torch.bfloat16).float().eval()
        loaded = workbench.load(tiny_run, revision=f"step{step}")
        assert loaded.dtype == torch.float32 and loaded.tokenizer is not None
        assert torch.equal(_logits(loaded), _logits(reference)), f"step{step}"


def test_final_step_name_is_main(tiny_run):
    a, b = workbench.load(tiny_run, revision="step20"), workbench.load(tiny_run)
    assert torch.equal(_logits(a), _logits(b))


def test_unknown_revision_lists_the_valid_ones(tiny_run):
    with pytest.raises(ValueError, match=r"no revision 'nope'; valid revisions: step0, step4, step12, step20, main"):
        workbench.load(tiny_run, revision="nope")
    with pytest.raises(ValueError, match="valid revisions: .*main"):
        workbench.load("demo", revision="nope")
    with pytest.raises(ValueError, match="valid revisions"):
        sweep(tiny_run, ["step4", "step99"], analysis="icl", cache_dir="")


def test_hub_revisions_are_listed_from_the_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    src = tmp_path / "files"
    src.mkdir()
    (src / "config.json").write_text("{}")
    for ref in ("main", "step1000", "step3", "step143000"):
        add_snapshot(cache, "org/pythia-mini", ref, src)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert list_revisions("org/pythia-mini") == ["step3", "step1000", "step143000", "main"]
    with pytest.raises(workbench.hub.HubUnavailableError, match="no revision of it"):
        list_revisions("org/absent")


def test_sweep_frame_and_step_tokens(tiny_run):
    df = sweep(tiny_run, analysis="icl", cache_dir="", progress=False)
    assert list(df["revision"]) == ["step0", "step4", "step12", "step20"]  # main is step20: listed once
    assert list(df["step"]) == [0, 4, 12, 20]
    rec = recipes.recipe("tiny")["train"]
    assert list(df["tokens"]) == [s * rec.batch_size * rec.seq_len for s in (0, 4, 12, 20)]
    assert (df["icl_score"] == df["second_copy_loss"] - df["first_copy_loss"]).all()


def test_sweep_heads_at_the_final_revision_equal_the_analysis(tiny_run):
    df = sweep(tiny_run, analysis="heads", cache_dir="", progress=False)
    final = df[(df["revision"] == "step20") & (df["detector"] == "induction")].sort_values(["layer", "head"])
    expected = induction_scores(workbench.load(tiny_run), batch=8, seq_len=50, seed=0)  # [layer, head]
    assert torch.equal(torch.tensor(final["score"].to_numpy(), dtype=expected.dtype), expected.flatten())


def test_interrupted_sweep_resumes_with_nothing_recomputed(tiny_run, tmp_path):
    state = {"calls": 0, "kill_at": 3}

    def norm(model):
        state["calls"] += 1
        if state["calls"] == state["kill_at"]:
            raise KeyboardInterrupt  # killed while working on the third revision
        return {"norm": float(model.gpt_neox.embed_in.weight.norm())}

    with pytest.raises(KeyboardInterrupt):
        sweep(tiny_run, fn=norm, cache_dir=tmp_path, progress=False)
    state.update(calls=0, kill_at=None)
    df = sweep(tiny_run, fn=norm, cache_dir=tmp_path, progress=False)
    assert state["calls"] == 2  # only the third and fourth revisions were computed
    state["calls"] = 0
    again = sweep(tiny_run, fn=norm, cache_dir=tmp_path, progress=False)
    assert state["calls"] == 0 and again.equals(df)
    assert sweep(tiny_run, fn=norm, cache_dir="", progress=False).equals(df)


def test_damaged_cache_record_is_recomputed(tiny_run, tmp_path):
    sweep(tiny_run, ["step0"], analysis="icl", cache_dir=tmp_path, progress=False)
    (record,) = tmp_path.rglob("step0.json")
    record.write_text(record.read_text().replace("icl_score", "icl_scorf"))
    with pytest.warns(UserWarning, match="damaged"):
        df = sweep(tiny_run, ["step0"], analysis="icl", cache_dir=tmp_path, progress=False)
    assert "icl_score" in df


def test_identical_revisions_warn(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(run / "revisions" / "step4", run / "revisions" / "step8")
    with pytest.warns(IdenticalRevisionsWarning, match="step4, step8 have identical weights"):
        sweep(run, analysis="icl", cache_dir="", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IdenticalRevisionsWarning)
        sweep(tiny_run, analysis="icl", cache_dir="", progress=False)


def test_bad_sweep_arguments_are_refused(tiny_run):
    with pytest.raises(ValueError, match="exactly one of fn="):
        sweep(tiny_run, cache_dir="")
    with pytest.raises(ValueError, match="unknown analysis 'nope'; choose from heads, icl"):
        sweep(tiny_run, analysis="nope", cache_dir="")
    with pytest.raises(TypeError, match="must return a dict"):
        sweep(tiny_run, ["step0"], fn=lambda m: 3.0, name="bad", cache_dir="", progress=False)


def _displayed_png(fig) -> bytes:
    data, _ = DisplayFormatter().format(fig)
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    return data["image/png"]


def test_plots_display_as_png(tiny_run):
    heads = sweep(tiny_run, analysis="heads", cache_dir="", progress=False)
    _displayed_png(plot_head_scores(heads, "induction", phases=[10]))
    _displayed_png(plot_metric_vs_step(heads[heads["detector"] == "induction"], "score", by=["layer", "head"],
                                       log_x=True, phases=[10]))  # fmt: skip
    fig = plot_vs_pythia(heads.assign(acc=0.3), "acc", "piqa", models=["pythia-70m", "pythia-160m"])
    _displayed_png(fig)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["pythia-70m", "pythia-160m", "this model"]
    with pytest.raises(ValueError, match="no column"):
        plot_metric_vs_step(heads, "nope")


def test_demo_revisions_are_shipped():
    names = workbench.revisions("demo")
    assert names[0] == "step0" and names[-1] == "main" and len(names) >= 9
    assert names[-2] == f"step{recipes.recipe('demo')['train'].steps}"  # the final step is main
    for name in names[:-2]:  # snapshots are bf16 on disk (half the size), float32 once loaded
        model = workbench.load("demo", revision=name)
        assert model.dtype == torch.float32 and model.tokenizer is not None


@pytest.mark.slow
def test_demo_revisions_equal_the_recipe_remade(tmp_path):
    """The shipped snapshots are bit-identical to re-running `workbench train --recipe demo` at one thread.

    CI re-makes the snapshots up to step 128 (about a minute); `WORKBENCH_DEMO_REMAKE_STEPS=5000` checks them all
    (the whole 5,000-step run, 20-40 minutes)."""
    horizon = int(os.environ.get("WORKBENCH_DEMO_REMAKE_STEPS", "128"))
    rec = recipes.recipe("demo")
    rec["train"].eval_every = 10**9  # evaluation never changes the weights: skip it to save time
    early = [s for s in rec["train"].revision_steps if s <= horizon]
    loop.train(tmp_path, rec["model"], rec["train"], rec["data"], stop_after=max(early), progress=False, threads=1)
    made_on = json.loads((workbench.demo_path() / "revisions" / "provenance.json").read_text())
    here = numerics_provenance()
    same_machine = all(here[k] == made_on[k] for k in ("torch", "cpu", "cpu_capability"))
    for step in early:
        remade = workbench.load(tmp_path, revision=f"step{step}")
        shipped = workbench.load("demo", revision=f"step{step}")
        if same_machine or step == 0:  # the initialisation is a seeded draw: the same anywhere
            for (name, a), (_, b) in zip(remade.state_dict().items(), shipped.state_dict().items()):
                assert torch.equal(a, b), f"step{step} {name}"
            assert torch.equal(_logits(remade), _logits(shipped))
        else:  # another CPU type rounds differently from the first steps on: close, not equal
            diff = (_logits(remade) - _logits(shipped)).abs().max().item()
            print(f"step{step}: made on {made_on['cpu']} ({made_on['cpu_capability']}), re-made on {here['cpu']} "
                  f"({here['cpu_capability']}): logits differ by {diff:.2e}")
            assert diff < 0.05, f"step{step}: {diff}"


def _sweep_worker(rank: int, world: int, port: int, run: str, out: str) -> None:
    import json
    import os

    from workbench.evals import distributed as D

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    assert D.init_from_env(device="cpu")
    try:
        computed: list[str] = []

        def probe(model):
            computed.append(str(model.gpt_neox.embed_in.weight.sum().item()))
            return {"norm": float(model.gpt_neox.embed_in.weight.norm())}

        df = sweep(run, fn=probe, name="probe", cache_dir=Path(out) / "cache", progress=False)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"frame": df.to_json(), "computed": len(computed)}))
    finally:
        D.cleanup()


def test_sweep_under_torchrun_shards_revisions(tiny_run, tmp_path):
    import json

    import torch.multiprocessing as mp

    from .test_distributed import _free_port

    mp.spawn(_sweep_worker, args=(2, _free_port(), str(tiny_run), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = sweep(tiny_run, fn=lambda m: {"norm": float(m.gpt_neox.embed_in.weight.norm())}, name="probe",
                   cache_dir="", progress=False)  # fmt: skip
    assert [r["computed"] for r in ranks] == [2, 2]  # four revisions, two each
    for r in ranks:
        assert r["frame"] == single.to_json()


def test_cache_keys_follow_the_code_the_weights_and_the_dtype(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    first = sweep(run, ["step4"], fn=lambda m: {"a": 1.0}, cache_dir=tmp_path / "c", progress=False)
    other = sweep(run, ["step4"], fn=lambda m: {"b": 2.0}, cache_dir=tmp_path / "c", progress=False)
    assert "a" in first and "b" in other and "a" not in other  # two lambdas never share results

    def total(model):
        return {"w": float(model.embed_out.weight.sum())}

    before = sweep(run, ["step4"], fn=total, cache_dir=tmp_path / "c", progress=False)["w"][0]
    shutil.copy(run / "revisions" / "step0" / "model.safetensors", run / "revisions" / "step4" / "model.safetensors")
    after = sweep(run, ["step4"], fn=total, cache_dir=tmp_path / "c", progress=False)["w"][0]
    assert after != before and after == float(workbench.load(run, revision="step0").embed_out.weight.detach().sum())
    with pytest.warns(IdenticalRevisionsWarning, match="step0, step4"):  # now byte-identical
        sweep(run, ["step0", "step4"], fn=total, cache_dir=tmp_path / "c", progress=False)
    bf16 = sweep(run, ["step4"], fn=lambda m: {"dtype": str(m.dtype)}, cache_dir=tmp_path / "c", progress=False,
                 dtype=torch.bfloat16)  # fmt: skip
    fp32 = sweep(run, ["step4"], fn=lambda m: {"dtype": str(m.dtype)}, cache_dir=tmp_path / "c", progress=False)
    assert list(bf16["dtype"]) == ["torch.bfloat16"] and list(fp32["dtype"]) == ["torch.float32"]


def test_sweep_edge_cases(tiny_run, tmp_path):
    empty = sweep(tiny_run, ["step0", "step4"], fn=lambda m: [], cache_dir="", progress=False)
    assert empty.empty and list(empty.columns) == ["revision", "step", "tokens"]
    with pytest.raises(TypeError, match="with 2 elements"):
        sweep(tiny_run, ["step0"], fn=lambda m: {"v": torch.ones(2)}, cache_dir="", progress=False)
    lens = sweep(tiny_run, ["step20"], analysis="logit_lens", text="In the beginning God created", cache_dir="",
                 progress=False)  # fmt: skip
    assert lens["target_prob"].notna().all() and len(lens) == 3  # embed + 2 layers (tiny model)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        workbench.revisions(tmp_path)


def test_demo_sweep_induction_at_the_final_revision_equals_the_analysis():
    df = sweep("demo", ["step5000"], analysis="heads", cache_dir="", progress=False)
    final = df[df["detector"] == "induction"].sort_values(["layer", "head"])
    expected = induction_scores(workbench.load("demo"), batch=8, seq_len=50, seed=0)  # [layer, head]
    assert torch.equal(torch.tensor(final["score"].to_numpy(), dtype=expected.dtype), expected.flatten())
    assert float(expected.max()) >= 0.5  # the phase change happened by the final revision


def test_cache_keys_of_partials_and_callable_objects():
    import functools

    from workbench.dynamics.sweep import code_digest

    def scaled(model, k):
        return {"k": k}

    class Probe:
        def __init__(self, k):
            self.k = k

        def __call__(self, model):
            return {"k": self.k}

    assert code_digest(functools.partial(scaled, k=2)) != code_digest(functools.partial(scaled, k=3))
    assert code_digest(functools.partial(scaled, k=2)) == code_digest(functools.partial(scaled, k=2))
    assert code_digest(Probe(2)) != code_digest(Probe(3)) and code_digest(Probe(2)) == code_digest(Probe(2))
    a, b = torch.zeros(2), torch.ones(2)
    assert code_digest(lambda m: {"v": float(a.sum())}) != code_digest(lambda m: {"v": float(b.sum())})
    # tuples element by element (tensors inside them by their bytes), modules by their weights
    ta, tb = (a, 1), (b, 1)
    assert code_digest(lambda m: {"v": len(ta)}) != code_digest(lambda m: {"v": len(tb)})
    torch.manual_seed(0)
    ref_a, ref_b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert code_digest(lambda m: {"v": ref_a.weight.sum()}) != code_digest(lambda m: {"v": ref_b.weight.sum()})
    ref = ref_a
    assert code_digest(lambda m: {"v": ref.weight.sum()}) == code_digest(lambda m: {"v": ref.weight.sum()})
