"""Weights in transparent huge pages (`workbench.huge_pages`) and the loader's `mmap=` choice."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path

import pytest
import torch

import workbench
from workbench import huge_pages

needs_thp = pytest.mark.skipif(not huge_pages.available(),
                               reason="needs Linux with transparent huge pages in 'always' or 'madvise' mode")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random GPT-NeoX saved by transformers whose embeddings (5,000 x 128 fp32, 2.6 MB) exceed a huge page."""
    import transformers

    directory = tmp_path_factory.mktemp("thp")
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(vocab_size=5000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=256)
    transformers.GPTNeoXForCausalLM(config).eval().save_pretrained(directory)
    return directory


def _mapping_path(tensor: torch.Tensor) -> str:
    """The file behind the mapping that holds `tensor` ('' or '[heap]' for anonymous memory), from /proc/self/smaps."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return fields[5] if len(fields) > 5 else ""
    raise AssertionError("no mapping holds the tensor")


@needs_thp
def test_large_tensors_get_huge_pages_small_ones_ordinary_memory():
    big = huge_pages.empty((3, 2**20), torch.float32)  # 12 MB
    assert big.shape == (3, 2**20) and big.dtype == torch.float32 and big.is_contiguous()
    assert big.data_ptr() % huge_pages.HUGE_PAGE == 0
    big.fill_(1.5)
    assert huge_pages.huge_page_bytes(big) >= 2 * huge_pages.HUGE_PAGE  # the kernel gave 2 MB pages
    assert big.untyped_storage().nbytes() == 12 * 2**20  # no alignment slack to save or pickle
    small = huge_pages.empty((10, 7), torch.bfloat16)
    assert small.shape == (10, 7) and small.dtype == torch.bfloat16


@needs_thp
def test_a_view_keeps_the_mapping_alive():
    big = huge_pages.empty((2**20,), torch.float32)
    big.copy_(torch.arange(2**20, dtype=torch.float32))
    tail = big[-4:]
    del big
    gc.collect()
    assert tail.tolist() == [2**20 - 4, 2**20 - 3, 2**20 - 2, 2**20 - 1]
    assert torch.equal(pickle.loads(pickle.dumps(tail)), tail)


@pytest.mark.parametrize("thp", [False, True], ids=["no_thp", "small_tensor"])
def test_torch_memory_without_huge_pages_or_below_one(monkeypatch, thp):
    monkeypatch.setattr(huge_pages, "available", lambda: thp)
    monkeypatch.setattr(huge_pages.mmap, "mmap", lambda *a, **k: pytest.fail("mapped memory of its own"))
    shape = (1000, 2) if thp else (2**20, 2)
    t = huge_pages.empty(shape, torch.float32)
    assert t.shape == shape and t.dtype == torch.float32


@needs_thp
@pytest.mark.parametrize("dtype", [None, "bfloat16"], ids=["file_dtype", "converting"])
def test_loaded_weights_sit_in_huge_pages_unless_mmap(checkpoint, dtype):
    """The default reads CPU weights into huge pages; `mmap=True` keeps the file's memory map; the logits agree
    bit for bit."""
    read = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    mapped = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, dtype=dtype, mmap=True)
    ids = torch.randint(0, read.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(read(ids).logits, mapped(ids).logits)
    for name, p in read.named_parameters():
        assert not _mapping_path(p).startswith("/"), f"{name} is memory-mapped from a file"
        if p.numel() * p.element_size() >= huge_pages.HUGE_PAGE:
            assert p.data_ptr() % huge_pages.HUGE_PAGE == 0, name
    if dtype is None:  # a conversion has to make new tensors: only the file dtype can stay mapped
        weight = mapped.gpt_neox.embed_in.weight
        assert _mapping_path(weight).endswith("model.safetensors")


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="needs Linux's /proc/self/smaps to see mappings")
def test_mmap_false_reads_into_memory_even_without_huge_pages(checkpoint, monkeypatch):
    monkeypatch.setattr(huge_pages, "available", lambda: False)
    default = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)  # no huge pages: memory-mapped
    assert _mapping_path(default.gpt_neox.embed_in.weight).endswith("model.safetensors")
    read = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, mmap=False)
    assert not _mapping_path(read.gpt_neox.embed_in.weight).startswith("/")
    assert torch.equal(read.gpt_neox.embed_in.weight, default.gpt_neox.embed_in.weight)


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_bad_mmap_is_refused(checkpoint, bad):
    with pytest.raises(ValueError, match=r"mmap must be True, False or None .*got " + repr(bad).replace(".", r"\.")):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, mmap=bad)


def test_mmap_with_device_map_is_refused(checkpoint):
    with pytest.raises(ValueError, match="mmap= applies to loading without device_map"):
        workbench.load(checkpoint, device_map="cpu", mmap=True)


def test_a_loaded_model_saves_and_reloads(checkpoint, tmp_path):
    """Weights in huge-page memory behave as any tensor: saved, reloaded, equal."""
    model = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)
    model.save_pretrained(tmp_path / "again")
    again = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path / "again")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="needs Linux's /proc/self/smaps to see mappings")
def test_processes_of_one_machine_share_the_mapped_file(checkpoint, monkeypatch):
    """The evals' loader under torchrun with several local processes memory-maps (one page-cache copy for all)."""
    from workbench.evals.runner import load_model

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    shared = load_model(checkpoint, device="cpu")
    assert _mapping_path(shared.gpt_neox.embed_in.weight).endswith("model.safetensors")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = load_model(checkpoint, device="cpu")
    assert not _mapping_path(alone.gpt_neox.embed_in.weight).startswith("/") or not huge_pages.available()
