"""capture, intervene, steer, perturb and the Fisher pass on a model dispatched by accelerate.

A tiny Llama is saved and loaded back with a `device_map` that offloads the embedding and layer 1
to "disk" (read from the checkpoint's safetensors) and keeps the rest on the CPU; then layer 2 is
offloaded to CPU RAM with `accelerate.cpu_offload` (on a CPU-only machine a `device_map` entry
"cpu" never offloads: it does so only when the model runs on a GPU) and layer 0 to numpy memmaps
with `accelerate.disk_offload`. Layer 3 stays in memory. Every result is compared with the same
weights loaded plainly.
"""

import hashlib

import pytest
import torch
from accelerate import cpu_offload, disk_offload
from transformers import AutoModelForCausalLM

import steerscope as ss
from steerscope.anatomy import anatomy_of
from steerscope.capture import tokenize, tokenize_for_generate
from steerscope.errors import InputError
from steerscope.kernels.per_sample_grads import batched_fisher_scores
from steerscope.offload import offload_hook, stored_value
from steerscope.probes.fisher import LossSample, cached_fisher_scores, fisher_scores, model_fingerprint
from steerscope.probes.masks import mean_replacement
from steerscope.steering import Fingerprint, SteeringVector, steer
from steerscope.tiny import char_tokenizer, tiny_config, tiny_model

PROMPTS = ["hello there, friend", "hi", "a b c d e"]
DEVICE_MAP = {
    "model.embed_tokens": "disk",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "cpu",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}
#: One weight in memory and one in each place accelerate offloads to.
WEIGHTS = {
    "resident": "model.layers.3.mlp.up_proj.weight",
    "ram": "model.layers.2.mlp.down_proj.weight",
    "disk": "model.layers.1.self_attn.q_proj.weight",
    "memmap": "model.layers.0.self_attn.o_proj.weight",
}


def _sha256(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(plain, dispatched, checkpoint folder): the same tiny Llama weights loaded both ways."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    plain = tiny_model("llama")
    plain.hf.save_pretrained(folder)
    plain.tokenizer.save_pretrained(folder)
    dispatched = ss.load(folder, device_map=DEVICE_MAP, offload_folder=folder / "offload")
    cpu_offload(dispatched.hf.model.layers[2], execution_device=torch.device("cpu"))
    disk_offload(dispatched.hf.model.layers[0], folder / "memmaps", execution_device=torch.device("cpu"))
    return plain, dispatched, folder


def test_the_device_map_really_offloads(models):
    _, dispatched, _ = models
    hf = dispatched.hf
    assert stored_value(hf, WEIGHTS["resident"]).device.type == "cpu"
    assert offload_hook(hf, WEIGHTS["resident"]) is None
    for kind in ("ram", "disk", "memmap"):
        assert hf.get_parameter(WEIGHTS[kind]).device.type == "meta"
    stores = {
        kind: offload_hook(hf, WEIGHTS[kind])[0].weights_map.dataset for kind in ("ram", "disk", "memmap")
    }
    assert isinstance(stores["ram"], dict)  # the tensors themselves, in RAM
    assert stores["disk"].index[WEIGHTS["disk"]]["safetensors_file"].endswith("model.safetensors")
    assert (stores["memmap"].save_folder / "self_attn.o_proj.weight.dat").is_file()
    assert hf.get_input_embeddings().weight.device.type == "meta"


def test_capture_equals_the_plain_model(models):
    plain, dispatched, _ = models
    sites = ["L0.resid_post", "L1.q_rope.h2", "L2.mlp_out", "L3.resid_post"]
    a = ss.capture(plain, PROMPTS, sites, progress=False)
    b = ss.capture(dispatched, PROMPTS, sites, progress=False)
    for site in sites:
        torch.testing.assert_close(b[site], a[site], rtol=0, atol=1e-5)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.positions, b.positions)


def test_intervene_and_steer_generate_as_on_the_plain_model(models):
    plain, dispatched, _ = models
    g = torch.Generator().manual_seed(0)
    vector = SteeringVector(
        {f"L{i}.resid_post": torch.randn(64, generator=g) for i in range(4)}, Fingerprint.of(plain)
    )
    inputs = tokenize_for_generate(plain, PROMPTS)

    def greedy(model):
        out = model.generate(
            **inputs, max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_logits=True
        )
        return out.sequences, torch.stack(out.logits, 1)

    results = {}
    for name, model in (("plain", plain), ("dispatched", dispatched)):
        with steer(model, vector, strength=0.5, positions="generated"):
            steered = greedy(model)
        with ss.intervene(model, {"L1.q_rope.h0": lambda act, tokens: act * 0.5}):
            edited = greedy(model)
        results[name] = (steered, edited, greedy(model))
    for (ids_a, logits_a), (ids_b, logits_b) in zip(results["plain"], results["dispatched"], strict=True):
        assert torch.equal(ids_a, ids_b)
        torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-5)
    steered_ids, edited_ids, unsteered_ids = (r[0] for r in results["plain"])
    assert not torch.equal(steered_ids, unsteered_ids) and not torch.equal(edited_ids, unsteered_ids)


def test_perturb_edits_offloaded_weights_and_restores_them_bit_exactly(models):
    plain, dispatched, folder = models
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(plain.hf.get_parameter(n).shape, generator=g) < 0.3 for n in WEIGHTS.values()}
    before = {n: stored_value(dispatched.hf, n).clone() for n in WEIGHTS.values()}
    checkpoint = _sha256(folder)
    batch = tokenize(plain, PROMPTS)
    with torch.no_grad():
        unperturbed = plain.hf(**batch).logits
        with mean_replacement(plain, masks):
            expected = plain.hf(**batch).logits
        with mean_replacement(dispatched, masks):
            got = dispatched.hf(**batch).logits
            again = dispatched.hf(**batch).logits  # every forward reloads the offloaded weights
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert torch.equal(got, again)
        assert not torch.allclose(expected, unperturbed, atol=1e-3)
        with pytest.raises(RuntimeError, match="inside the block"):
            with mean_replacement(dispatched, masks):
                raise RuntimeError("inside the block")
        for name in WEIGHTS.values():
            assert torch.equal(stored_value(dispatched.hf, name), before[name]), name
        torch.testing.assert_close(dispatched.hf(**batch).logits, unperturbed, rtol=0, atol=1e-5)
    assert _sha256(folder) == checkpoint  # the checkpoint that disk offload reads is never written


def test_nested_perturbations_of_an_offloaded_weight_compose(models):
    plain, dispatched, _ = models
    name = WEIGHTS["disk"]
    shape = plain.hf.get_parameter(name).shape
    first, second = torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
    first[:8], second[4:12] = True, True
    batch = tokenize(plain, PROMPTS)
    outputs = {}
    with torch.no_grad():
        for label, model in (("plain", plain), ("dispatched", dispatched)):
            with ss.perturb(model, {name: (first, 1.0)}), ss.perturb(model, {name: (second, -1.0)}):
                outputs[label] = model.hf(**batch).logits
    torch.testing.assert_close(outputs["dispatched"], outputs["plain"], rtol=0, atol=1e-5)


def test_perturbing_a_tied_offloaded_weight_edits_every_copy_loaded(tmp_path):
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    config = tiny_config("llama", len(tokenizer), tie_word_embeddings=True)
    hf = AutoModelForCausalLM.from_config(config).eval()
    plain = ss.Model(hf, tokenizer, anatomy_of(hf), "tied tiny llama")
    plain.hf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    device_map = {"model.embed_tokens": "disk", "model.layers": "cpu", "model.norm": "cpu"}
    device_map |= {"model.rotary_emb": "cpu", "lm_head": "disk"}
    dispatched = ss.load(tmp_path, device_map=device_map, offload_folder=tmp_path / "offload")
    assert dispatched.hf.lm_head.weight is dispatched.hf.model.embed_tokens.weight
    name = "model.embed_tokens.weight"
    mask = torch.zeros(plain.hf.get_parameter(name).shape, dtype=torch.bool)
    mask[:, :16] = True
    batch = tokenize(plain, PROMPTS)
    outputs = {}
    with torch.no_grad():
        for label, model in (("plain", plain), ("dispatched", dispatched)):
            with ss.perturb(model, {name: (mask, 0.0)}):
                outputs[label] = model.hf(**batch).logits
    torch.testing.assert_close(outputs["dispatched"], outputs["plain"], rtol=0, atol=1e-5)


def _samples():
    g = torch.Generator().manual_seed(2)
    return [LossSample.all_positions(torch.randint(4, 90, (n,), generator=g)) for n in (5, 9, 7)]


def test_batched_fisher_scores_equal_the_plain_model(models):
    plain, dispatched, _ = models
    expected = batched_fisher_scores(plain, _samples(), progress=False)
    got = batched_fisher_scores(dispatched, _samples(), progress=False)
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-12)
    assert all(bool(expected[n].any()) for n in WEIGHTS.values())


def test_fisher_cache_keys_and_loop_reference_on_a_dispatched_model(models, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    plain, dispatched, _ = models
    assert model_fingerprint(dispatched) == model_fingerprint(plain)
    scores = cached_fisher_scores(dispatched, _samples(), {"test": "dispatch"}, progress=False)
    reread = cached_fisher_scores(dispatched, _samples(), {"test": "dispatch"}, progress=False)
    for name, value in scores.items():
        assert value.device.type == "cpu" and torch.equal(reread[name], value)
    with pytest.raises(InputError, match="accelerate offloads 21 of them.*method='batched'"):
        fisher_scores(dispatched, _samples(), progress=False)
