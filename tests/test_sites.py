import pytest

from steerscope.errors import InputError
from steerscope.sites import SITE_KINDS, Site, resolve_sites


@pytest.mark.parametrize("text", ["L9.resid_post", "L3.k_rope.h0", "L0.attn_pattern.h3", "L12.mlp_out"])
def test_string_form_round_trips(text):
    assert str(Site.parse(text)) == text
    assert Site.parse(str(Site.parse(text))) == Site.parse(text)


@pytest.mark.parametrize("text", ["9.resid_post", "L9.resid", "L9.resid_post.h1", "L-1.q", "L3.q.head2", ""])
def test_bad_site_strings_name_the_valid_form(text):
    with pytest.raises(InputError) as error:
        Site.parse(text)
    message = str(error.value)
    assert "L<layer>.<kind>" in message or "valid kinds" in message or "no heads" in message


def test_out_of_range_layer_lists_valid_sites(tiny_llama):
    with pytest.raises(InputError, match=r"layer 4 out of range; this model has layers 0-3"):
        resolve_sites("L4.resid_post", tiny_llama.anatomy)


def test_out_of_range_head_names_head_count(tiny_llama):
    # tiny llama: 4 query heads, 2 KV heads
    resolve_sites(["L0.q.h3", "L0.k.h1"], tiny_llama.anatomy)
    with pytest.raises(InputError, match=r"2 KV heads"):
        resolve_sites("L0.k_rope.h2", tiny_llama.anatomy)
    with pytest.raises(InputError, match=r"4 query heads"):
        resolve_sites("L0.q.h4", tiny_llama.anatomy)


def test_every_kind_is_documented():
    assert set(SITE_KINDS) >= {
        "resid_pre",
        "resid_post",
        "attn_out",
        "mlp_out",
        "q",
        "k",
        "v",
        "q_rope",
        "k_rope",
        "attn_pattern",
    }


def test_every_site_kind_is_hooked_on_a_module_the_model_has(tiny):
    from steerscope.intervene import module_at
    from steerscope.sites import all_sites, module_path

    paths = {str(site): module_path(site, tiny.anatomy) for site in all_sites(tiny.anatomy)}
    for path in paths.values():
        module_at(tiny.hf, path)
    assert paths["L1.resid_pre"] == paths["L1.resid_post"] == tiny.anatomy.layer_path(1)
    assert paths["L1.q"] == paths["L1.q_rope"] != paths["L1.k"]


def test_the_table_says_which_kinds_have_heads_and_which_are_read_only():
    from steerscope.sites import HEADED_KINDS, KV_KINDS

    assert HEADED_KINDS == {"q", "k", "v", "q_rope", "k_rope", "attn_pattern"}
    assert KV_KINDS == {"k", "v", "k_rope"}
    assert [name for name, kind in SITE_KINDS.items() if not kind.editable] == ["attn_pattern"]
    assert SITE_KINDS["attn_pattern"].query_axis(headed=True) == 1
    assert SITE_KINDS["attn_pattern"].query_axis(headed=False) == 2
    assert SITE_KINDS["q_rope"].query_axis(headed=True) == 1
