"""workbench.sae loading: format detection, one clear error per malformed input (naming the file and field),
hub ids through huggingface_hub's cache, sparsify hookpoint names, and the shipped demo SAE."""

from __future__ import annotations

import json

import pytest
import torch

from workbench import sae as wsae
from workbench.hub import HubUnavailableError
from workbench.sae.config import sparsify_hook_name


def _saved(tmp_path, **cfg) -> "Path":  # noqa: F821
    settings = {"d_in": 8, "d_sae": 12, "architecture": "standard", "hook_name": "blocks.0.hook_resid_pre", **cfg}
    return wsae.save(wsae.SAE(wsae.SAEConfig(**settings)), tmp_path / "sae")


def _edit_cfg(path, **changes) -> None:
    raw = json.loads((path / "cfg.json").read_text())
    raw.update(changes)
    (path / "cfg.json").write_text(json.dumps(raw))


def test_malformed_cfg_json_names_the_file(tmp_path):
    path = _saved(tmp_path)
    (path / "cfg.json").write_text('{"d_in": 8,')
    with pytest.raises(wsae.SAEConfigError, match=r"cfg\.json: malformed JSON at line 1"):
        wsae.load(path)


@pytest.mark.parametrize("changes,match", [
    ({"architecture": "batchtopk_magic"}, r"cfg\.json: field 'architecture': unknown architecture 'batchtopk_magic'; "
                                          r"allowed: standard, topk, jumprelu, gated"),
    ({"d_in": -3}, r"cfg\.json: field 'd_in': must be a positive integer, got -3"),
    ({"normalize_activations": "whiten"}, r"field 'normalize_activations': got 'whiten'; allowed: none"),
    ({"architecture": "topk", "k": 0}, r"field 'k': a TopK SAE needs an integer k in \[1, d_sae=12\]"),
    ({"dtype": "int8"}, r"field 'dtype': got 'int8'; allowed: float32"),
])
def test_bad_field_is_one_error_naming_file_and_field(tmp_path, changes, match):
    path = _saved(tmp_path)
    _edit_cfg(path, **changes)
    with pytest.raises(wsae.SAEConfigError, match=match):
        wsae.load(path)


def test_single_head_sae_is_refused_by_field(tmp_path):
    path = _saved(tmp_path)
    raw = json.loads((path / "cfg.json").read_text())
    raw["metadata"]["hook_head_index"] = 3
    (path / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(wsae.SAEConfigError, match=r"cfg\.json: field 'hook_head_index' = 3.*allowed: null"):
        wsae.load(path / "cfg.json")  # a file inside the directory names the directory


def test_missing_field_names_it(tmp_path):
    path = _saved(tmp_path)
    raw = json.loads((path / "cfg.json").read_text())
    del raw["d_sae"]
    (path / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(wsae.SAEConfigError, match=r"cfg\.json: field 'd_sae' is missing"):
        wsae.load(path)


def test_weights_that_contradict_d_in_name_the_field(tmp_path):
    path = _saved(tmp_path)
    _edit_cfg(path, d_in=10)
    with pytest.raises(wsae.SAEConfigError, match=r"sae_weights\.safetensors: W_enc has shape \(8, 12\) but "
                                                  r".*cfg\.json says d_in=10, d_sae=12.*field 'd_in' mismatch"):
        wsae.load(path)
    _edit_cfg(path, d_in=8, architecture="jumprelu")
    with pytest.raises(wsae.SAEConfigError, match=r"missing \['threshold'\] for architecture 'jumprelu'"):
        wsae.load(path)


def test_directory_without_an_sae(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected cfg.json with sae_weights.safetensors or sae.safetensors"):
        wsae.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no SAE directory at"):
        wsae.load(str(tmp_path / "absent"))
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="neither sae_weights.safetensors"):
        wsae.load(tmp_path)


def test_old_flat_saelens_cfg_is_read(tmp_path):
    """SAELens < 6 wrote a flat cfg.json with hook_point and activation_fn_str / activation_fn_kwargs."""
    path = _saved(tmp_path, architecture="topk", k=3)
    raw = json.loads((path / "cfg.json").read_text())
    flat = {"d_in": 8, "d_sae": 12, "hook_point": "blocks.0.hook_mlp_out", "activation_fn_str": "topk",
            "activation_fn_kwargs": {"k": 3}, "normalize_activations": False, "dtype": raw["dtype"],
            "model_name": "pythia-70m-deduped"}
    (path / "cfg.json").write_text(json.dumps(flat))
    cfg = wsae.load(path).cfg
    assert (cfg.architecture, cfg.k, cfg.hook_name, cfg.model_name, cfg.normalize_activations) == (
        "topk", 3, "blocks.0.hook_mlp_out", "pythia-70m-deduped", "none")


def test_sparsify_hookpoints_map_to_hook_names():
    assert sparsify_hook_name("layers.6") == "blocks.6.hook_resid_post"
    assert sparsify_hook_name("gpt_neox.layers.6") == "blocks.6.hook_resid_post"
    assert sparsify_hook_name("layers.6.mlp") == "blocks.6.hook_mlp_out"
    assert sparsify_hook_name("layers.2.attention") == "blocks.2.hook_attn_out"
    assert sparsify_hook_name("embed_tokens") == "hook_embed"
    assert sparsify_hook_name("layers.6.mlp.act") is None


def test_hub_id_offline_resolves_from_the_cache_or_fails_clearly(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(HubUnavailableError, match=r"could not fetch the SAE someone/saes/layers\.3 .*local cache"):
        wsae.load("someone/saes", subfolder="layers.3")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: an unreachable hub
    with pytest.raises(HubUnavailableError, match=r"did not answer within .* not in the local cache"):
        wsae.load("someone/saes", subfolder="layers.3")
    # a cached snapshot: the layout huggingface_hub's cache uses (refs/main -> snapshots/<commit>/...)
    repo = tmp_path / "hub" / "models--someone--saes"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit / "blocks.0.hook_resid_pre"
    wsae.save(wsae.SAE(wsae.SAEConfig(d_in=8, d_sae=12, architecture="standard", hook_name="hook_embed")), snapshot)
    assert wsae.load("someone/saes", subfolder="blocks.0.hook_resid_pre").cfg.hook_name == "hook_embed"


def test_demo_sae_loads_offline():
    import workbench

    sae = workbench.sae.load("demo")  # the subpackage is reachable from a plain `import workbench`
    assert sae.cfg.hook_name == "blocks.2.hook_resid_pre" and sae.cfg.d_in == 128
    assert sae.cfg.architecture == "topk" and sae.W_enc.shape == (128, sae.cfg.d_sae)
    assert sae.log_sparsity is not None and sae.log_sparsity.shape == (sae.cfg.d_sae,)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(sae.cfg.d_sae), atol=1e-4, rtol=0)
    assert (wsae.demo_sae_path() / "README.md").is_file()


def test_jumprelu_log_threshold_is_converted(tmp_path):
    """Older SAELens JumpReLU files store log_threshold (SAELens exponentiates it on loading; so do we)."""
    from safetensors.torch import load_file, save_file

    path = _saved(tmp_path, architecture="jumprelu")
    weights = load_file(str(path / "sae_weights.safetensors"))
    threshold = torch.linspace(0.1, 2.0, 12)
    weights.pop("threshold")
    save_file({**weights, "log_threshold": threshold.log()}, str(path / "sae_weights.safetensors"))
    torch.testing.assert_close(wsae.load(path).threshold.detach(), threshold, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("field", ["apply_b_dec_to_input", "rescale_acts_by_decoder_norm"])
def test_a_boolean_field_must_be_a_json_boolean(tmp_path, field):
    path = _saved(tmp_path, architecture="topk", k=3)
    _edit_cfg(path, **{field: "false"})  # bool("false") is True: read as a flag it would flip the SAE
    with pytest.raises(wsae.SAEConfigError, match=rf"cfg\.json: field '{field}' must be true or false .*got 'false'"):
        wsae.load(path)
    _edit_cfg(path, **{field: False})
    assert getattr(wsae.load(path).cfg, field) is False


def test_metadata_that_is_not_an_object_names_the_field(tmp_path):
    path = _saved(tmp_path)
    _edit_cfg(path, metadata=[1])
    with pytest.raises(wsae.SAEConfigError, match=r"cfg\.json: field 'metadata' must be a JSON object.*got \[1\]"):
        wsae.load(path)


def test_a_sparsify_folder_not_named_by_a_hookpoint_says_so(tmp_path):
    sparsify = pytest.importorskip("sparsify", reason="eai-sparsify is a test dependency")
    sparsify.SparseCoder(8, sparsify.SparseCoderConfig(num_latents=16, k=2)).save_to_disk(tmp_path / "weird")
    with pytest.raises(wsae.SAEConfigError, match=r"folder name 'weird' is not a sparsify hookpoint \(allowed: "
                                                  r"layers\.N, layers\.N\.mlp.*pass hook_name="):
        wsae.load(tmp_path / "weird")
    assert wsae.load(tmp_path / "weird", hook_name="blocks.0.hook_resid_post").cfg.hook_name == \
        "blocks.0.hook_resid_post"


def test_saved_and_shipped_weights_are_readable_by_others(tmp_path):
    """save writes the safetensors files with the mode cfg.json gets (umask 022: 0644), not safetensors'
    own 0600; the demo SAE's files are 0644 like the demo model's."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        sae = wsae.SAE(wsae.SAEConfig(d_in=8, d_sae=12, architecture="standard", hook_name="hook_embed"))
        path = wsae.save(sae, tmp_path / "sae", log_sparsity=torch.zeros(12))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes == {"cfg.json": 0o644, "sae_weights.safetensors": 0o644, "sparsity.safetensors": 0o644}
    assert torch.equal(wsae.load(path).log_sparsity, torch.zeros(12))
    for p in wsae.demo_sae_path().iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
