"""Hub ids resolve through huggingface_hub's cache (offline here), revisions included; uncached ids fail clearly."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch

import workbench
import workbench.hub
from workbench.hub import HubUnavailableError, resolve_model_dir

TINY = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def add_snapshot(cache: Path, repo_id: str, ref: str, source: Path) -> Path:
    """Lay out `source`'s files as huggingface_hub does: blobs by hash, a snapshot of links, refs/<ref>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()  # 40 hex digits
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in source.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline huggingface_hub cache holding org/tiny at refs main and step3000 (different weights)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    snapshots = {}
    for seed, ref in ((0, "main"), (1, "step3000")):
        torch.manual_seed(seed)
        model = workbench.GPTNeoXForCausalLM(workbench.GPTNeoXConfig(**TINY))
        model.save_pretrained(tmp_path / ref)
        snapshots[ref] = (add_snapshot(cache, "org/tiny", ref, tmp_path / ref), model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return snapshots


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_hub_id_resolves_to_main_snapshot(hub_cache):
    snapshot, original = hub_cache["main"]
    assert resolve_model_dir("org/tiny").resolve() == snapshot.resolve()
    model = workbench.load("org/tiny")
    assert isinstance(model, workbench.GPTNeoXForCausalLM)
    assert same_weights(model, original)


def test_revision_resolves_to_its_snapshot(hub_cache):
    snapshot, original = hub_cache["step3000"]
    assert resolve_model_dir("org/tiny", revision="step3000").resolve() == snapshot.resolve()
    model = workbench.load("org/tiny", revision="step3000")
    assert same_weights(model, original)
    assert not same_weights(model, hub_cache["main"][1])


def test_uncached_id_raises_hub_unavailable(hub_cache):
    with pytest.raises(HubUnavailableError) as info:
        workbench.load("org/not-cached")
    message = str(info.value)
    assert "org/not-cached" in message and "local" in message and "/path/to/not-cached" in message


def test_uncached_revision_raises_hub_unavailable(hub_cache):
    with pytest.raises(HubUnavailableError, match=r"org/tiny at revision 'step9'.*local directory"):
        workbench.load("org/tiny", revision="step9")


def test_local_directory_wins_over_hub(tmp_path):
    torch.manual_seed(0)
    model = workbench.GPTNeoXForCausalLM(workbench.GPTNeoXConfig(**TINY))
    model.save_pretrained(tmp_path / "org" / "tiny")
    assert resolve_model_dir(tmp_path / "org" / "tiny") == tmp_path / "org" / "tiny"


def test_missing_local_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        workbench.load(str(tmp_path / "nowhere"))


@pytest.fixture
def silent_hub(hub_cache, monkeypatch):
    """Online mode against a hub endpoint that accepts connections and never answers (a hung proxy or server)."""
    import socket
    import threading

    import huggingface_hub.constants as constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept_and_ignore() -> None:
        try:
            while True:
                held.append(server.accept()[0])
        except OSError:  # the server socket was closed at teardown
            pass

    threading.Thread(target=accept_and_ignore, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(workbench.hub, "HUB_PROBE_TIMEOUT_S", 1.0)
    yield hub_cache
    server.close()


def test_silent_hub_is_detected(silent_hub):
    assert not workbench.hub.hub_reachable()


def test_silent_hub_resolves_from_cache(silent_hub):
    snapshot, _ = silent_hub["main"]
    assert resolve_model_dir("org/tiny").resolve() == snapshot.resolve()


def test_silent_hub_fails_fast_when_uncached(silent_hub):
    # without the probe huggingface_hub waits on the silent server for minutes; this bound only catches a hang
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match=r"did not answer within 1 s.*not in the local cache"):
        workbench.load("org/not-cached")
    assert time.monotonic() - start < 60
