import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from steerscope.anatomy import anatomy_of
from steerscope.architectures import known_families
from steerscope.errors import InputError


def test_tiny_anatomy_matches_config(tiny):
    a = tiny.anatomy
    config = tiny.hf.config
    assert (a.n_layers, a.d_model, a.n_heads, a.n_kv_heads, a.head_dim) == (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
    )
    assert len(a.rope_bases) == a.n_layers
    for (layer, kind), name in a.linear_weights().items():
        assert name in dict(tiny.hf.named_parameters()), (layer, kind, name)
    assert len(a.linear_weights()) == 7 * a.n_layers


def test_gemma3_tiny_has_local_and_global_bases(tiny_gemma):
    assert tiny_gemma.anatomy.rope_bases == (10_000.0, 10_000.0, 10_000.0, 1_000_000.0)


def test_unknown_architecture_names_known_families():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(InputError) as error:
        anatomy_of(gpt2)
    for family in known_families():
        assert family in str(error.value)
    assert "gpt2" in str(error.value)


def test_embedded_gemma_anatomy(gemma):
    a = gemma.anatomy
    assert (a.family.name, a.n_layers, a.d_model, a.n_heads, a.n_kv_heads, a.head_dim) == (
        "gemma3",
        18,
        640,
        4,
        1,
        256,
    )
    global_layers = [i for i, base in enumerate(a.rope_bases) if base == 1_000_000.0]
    assert global_layers == [5, 11, 17]
    assert {base for base in a.rope_bases} == {10_000.0, 1_000_000.0}
    text = str(a)
    assert "18" in text and "640" in text and "1e+06 at layers 5,11,17" in text
