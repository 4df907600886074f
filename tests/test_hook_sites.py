"""The one table of hook sites (workbench.hook_points.SITES) drives names, order, shorthand keys and docs."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import REPO, random_tokens, tiny_model
from workbench.activation_cache import act_name
from workbench.hook_points import SITES, HookPoint, iter_sites, name_hook_points, position_dim, sites_markdown


@pytest.mark.parametrize("parallel", [True, False])
def test_model_hook_points_are_exactly_the_table_in_firing_order(parallel):
    model = tiny_model(parallel=parallel)
    n = model.config.num_hidden_layers
    expected = [name for name, site, _ in iter_sites(n) if not (parallel and site.attr == "hook_resid_mid")]
    assert model.hook_names() == expected
    for name, site, layer in iter_sites(n):
        if name in model.hook_dict:  # the module path in the table is where the point really lives
            assert model.get_submodule(site.module_path(layer)) is model.hook_dict[name]
    fired = []
    with model.hooks(fwd_hooks=[(lambda _: True, lambda x, hook: fired.append(hook.name))]):
        model(random_tokens())
    assert fired == expected  # every site fires, in the table's order (sequential models run it in this order)


def test_shorthand_keys_and_position_dims_come_from_the_table():
    for site in SITES:
        short = site.attr.removeprefix("hook_")
        if site.per_layer and site.component in ("attn", "mlp", "block"):
            assert act_name(short, 2) == site.name(2)
    assert position_dim("blocks.1.attn.hook_pattern") == 2 and position_dim("blocks.1.hook_resid_pre") == 1
    model = tiny_model()
    _, cache = model.run_with_cache(random_tokens(pos=7), pos_slice=-1)
    assert cache["pattern", 0].shape == (2, 4, 7) and cache["resid_pre", 0].shape == (2, 64)


def test_an_undeclared_hook_point_is_refused():
    model = tiny_model()
    model.gpt_neox.layers[0].attention.hook_extra = HookPoint()
    with pytest.raises(ValueError, match="not declared in workbench.hook_points.SITES"):
        name_hook_points(model, model.config.num_hidden_layers)


def test_docs_hooks_md_is_the_generated_table():
    assert (REPO / "docs" / "HOOKS.md").read_text() == sites_markdown(), (
        "docs/HOOKS.md is stale: python -c 'from workbench.hook_points import sites_markdown; "
        "open(\"docs/HOOKS.md\", \"w\").write(sites_markdown())'")
