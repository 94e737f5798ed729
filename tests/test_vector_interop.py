"""Vectors that travel: llama.cpp control-vector GGUF files, steering-vectors and repeng.

Every library convention is checked by running the real package on the same model: the same
vector applied by it and by `steer(..., scale="absolute", positions="all")` gives identical logits
(tiny models of each family here; the real Gemma 3 270M once). The llama.cpp engine itself is
compared in tests/test_llama_cpp.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from steering_vectors import SteeringVector as LibraryVector

import steerscope as ss
from steerscope.capture import tokenize
from steerscope.cli import main
from steerscope.steering import Fingerprint, SteeringVector, steer
from steerscope.steering.control_vector import mean_residual_norms, sidecar_path
from steerscope.steering.vector_libraries import _repeng
from steerscope.tiny import tiny_model

PROMPTS = ["The cat sat on the mat.", "Hi!"]  # a left-padded batch: pads are compared nowhere


def _vector(model: ss.Model, sites: tuple[str, ...] = ("L1.resid_post", "L3.resid_post"), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    d_model = model.anatomy.d_model
    directions = {site: torch.randn(d_model, generator=generator) for site in sites}
    return SteeringVector(directions, Fingerprint.of(model), {"made_by": "test"})


def _logits(model: ss.Model) -> torch.Tensor:
    """Next-token logits at every real token of PROMPTS (pads dropped)."""
    inputs = tokenize(model, PROMPTS)
    with torch.no_grad():
        logits = model(**inputs).logits
    return logits[inputs["attention_mask"].bool()]


def _steered(model: ss.Model, vector: SteeringVector, strength: float) -> torch.Tensor:
    with steer(model, vector, strength=strength, scale="absolute", positions="all"):
        return _logits(model)


def _same_vector(a: SteeringVector, b: SteeringVector) -> bool:
    return list(a.directions) == list(b.directions) and all(
        torch.equal(a.directions[s], b.directions[s]) for s in a.directions
    )


# ---------------------------------------------------------------- llama.cpp control vectors


def test_gguf_round_trip_is_exact_and_the_strength_is_baked_in(tmp_path, tiny_llama):
    vector = _vector(tiny_llama)
    path = vector.save_gguf(tmp_path / "v.gguf")
    loaded = SteeringVector.load_gguf(path, tiny_llama)
    assert _same_vector(loaded, vector) and loaded.fingerprint == vector.fingerprint
    record = loaded.provenance.pop("control_vector")
    assert loaded.provenance == vector.provenance
    assert record["baked_strength"] == 1.0 and record["positions"] == "all" and record["scale"] == "absolute"

    scaled = SteeringVector.load_gguf(vector.save_gguf(tmp_path / "x2.5.gguf", strength=2.5), tiny_llama)
    assert torch.equal(scaled.directions["L1.resid_post"], 2.5 * vector.directions["L1.resid_post"])
    assert torch.equal(_steered(tiny_llama, scaled, 1.0), _steered(tiny_llama, vector, 2.5))
    assert not torch.equal(_steered(tiny_llama, scaled, 1.0), _logits(tiny_llama))


def test_gguf_holds_what_llama_cpp_reads(tmp_path, tiny_gemma):
    """llama.cpp's loader: architecture controlvector, F32 1-D tensors named direction.N, N >= 1,
    nothing else; repeng's keys beside them."""
    vector = _vector(tiny_gemma, ("L2.resid_post", "L1.resid_post"))
    reader = gguf.GGUFReader(vector.save_gguf(tmp_path / "v.gguf", strength=-3.0))
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "gemma3_text"
    assert reader.get_field("controlvector.layer_count").contents() == 2
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2"]
    for tensor, site in zip(reader.tensors, ("L1.resid_post", "L2.resid_post"), strict=True):
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32 and tensor.n_elements == 64
        assert np.array_equal(tensor.data, (-3.0 * vector.directions[site]).numpy())


def test_repeng_reads_our_gguf_and_we_read_repengs(tmp_path, tiny_llama):
    vector = _vector(tiny_llama)
    from_file = _repeng().ControlVector.import_gguf(str(vector.save_gguf(tmp_path / "ours.gguf")))
    assert _same_vector(SteeringVector.from_repeng(from_file, tiny_llama), vector)
    vector.to_repeng().export_gguf(str(tmp_path / "theirs.gguf"))  # no sidecar
    theirs = SteeringVector.load_gguf(tmp_path / "theirs.gguf", tiny_llama)
    assert _same_vector(theirs, vector) and theirs.fingerprint == Fingerprint.of(tiny_llama)
    assert theirs.provenance["imported_from"] == "llama.cpp control vector"


@pytest.mark.parametrize(
    ("sites", "kwargs", "message"),
    [
        (("L0.resid_post",), {}, r"L0.resid_post: llama.cpp never steers block 0 .* layers 1-3"),
        (("L2.attn_out",), {}, r"L2.attn_out: a llama.cpp control vector only adds to .*resid_post"),
        (("L1.resid_post",), {"scale": "relative"}, "relative strength has no llama.cpp equivalent"),
        (("L1.resid_post",), {"strength": float("nan")}, "strength must be a finite number"),
        (("L1.resid_post",), {"scale": "percent"}, "unknown scale 'percent'"),
    ],
)
def test_export_refuses_what_llama_cpp_cannot_hold_before_writing(
    tmp_path, tiny_llama, sites, kwargs, message
):
    with pytest.raises(ss.InputError, match=message):
        _vector(tiny_llama, sites).save_gguf(tmp_path / "v.gguf", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_relative_strength_is_converted_with_the_stated_mean_residual_norm(tmp_path, tiny_llama):
    vector = _vector(tiny_llama)
    norms = mean_residual_norms(tiny_llama, PROMPTS, vector.directions)
    loaded = SteeringVector.load_gguf(
        vector.save_gguf(tmp_path / "v.gguf", strength=0.1, scale="relative", residual_norms=norms),
        tiny_llama,
    )
    for site, direction in vector.directions.items():
        torch.testing.assert_close(loaded.directions[site].norm(), torch.tensor(0.1 * norms[site]))
        assert torch.cosine_similarity(loaded.directions[site], direction, dim=0) > 0.9999
    conversion = json.loads(sidecar_path(tmp_path / "v.gguf").read_text())["conversion"]
    assert conversion == {"from_scale": "relative", "strength": 0.1, "mean_residual_norms": norms}
    assert loaded.provenance["control_vector"]["conversion"] == conversion


def _write_gguf(path: Path, tensors: dict[str, np.ndarray], architecture: str = "controlvector") -> Path:
    writer = gguf.GGUFWriter(path, architecture)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


_ROW = np.ones(64, dtype=np.float32)


@pytest.mark.parametrize(
    ("tensors", "architecture", "message"),
    [
        ({"direction.1": _ROW}, "llama", r"general.architecture is 'llama', not 'controlvector'"),
        ({"direction.0": _ROW}, "controlvector", r"tensor direction.0: layer 0 cannot be steered"),
        ({"direction.1": _ROW[:32]}, "controlvector", r"tensor direction.1: has 32 entries; .*d_model is 64"),
        ({"direction.2": np.full(64, np.nan, np.float32)}, "controlvector", r"tensor direction.2: has NaN"),
        ({"direction.4": _ROW}, "controlvector", r"tensor direction.4: layer 4 is beyond .* layers 1-3"),
        ({"bias.1": _ROW}, "controlvector", r"tensor bias.1: llama.cpp reads only tensors named direction.N"),
        (
            {"direction.1": _ROW.astype(np.float16)},
            "controlvector",
            r"tensor direction.1: must be 1-D F32, got F16",
        ),
        (
            {"direction.1": np.ones((2, 32), np.float32)},
            "controlvector",
            r"tensor direction.1: must be 1-D F32",
        ),
        ({}, "controlvector", "no direction tensors"),
    ],
)
def test_bad_control_vector_files_are_one_line_naming_file_and_tensor(
    tmp_path, tiny_llama, tensors, architecture, message
):
    path = _write_gguf(tmp_path / "bad.gguf", tensors, architecture)
    with pytest.raises(ss.InputError, match=message) as error:
        SteeringVector.load_gguf(path, tiny_llama)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_a_changed_gguf_or_sidecar_or_another_model_is_refused(tmp_path, tiny_llama, tiny_gemma):
    path = _vector(tiny_llama).save_gguf(tmp_path / "v.gguf")
    with pytest.raises(ss.InputError, match=r"vector made for llama .* this model is gemma3"):
        SteeringVector.load_gguf(path, tiny_gemma)
    sidecar = sidecar_path(path)
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta | {"baked_strength": 9.0}))
    with pytest.raises(ss.InputError, match=r"v.gguf.json was changed after saving"):
        SteeringVector.load_gguf(path, tiny_llama)
    sidecar.write_text(json.dumps(meta))
    _write_gguf(path, {"direction.1": _ROW, "direction.3": _ROW})
    with pytest.raises(ss.InputError, match=r"v.gguf was changed after saving .* remove v.gguf.json"):
        SteeringVector.load_gguf(path, tiny_llama)
    sidecar.unlink()  # the GGUF alone is a plain control vector for the model it is loaded with
    assert SteeringVector.load_gguf(path, tiny_llama).fingerprint == Fingerprint.of(tiny_llama)
    with pytest.raises(ss.InputError, match="must end in .gguf"):
        _vector(tiny_llama).save_gguf(tmp_path / "v.bin")


def test_a_foreign_gguf_for_another_model_type_needs_force(tmp_path, tiny_llama, tiny_gemma):
    _vector(tiny_gemma).to_repeng().export_gguf(str(tmp_path / "gemma.gguf"))
    with pytest.raises(ss.InputError, match=r"made for model type 'gemma3_text'; this model is 'llama'"):
        SteeringVector.load_gguf(tmp_path / "gemma.gguf", tiny_llama)
    with pytest.warns(UserWarning, match="loaded anyway"):
        SteeringVector.load_gguf(tmp_path / "gemma.gguf", tiny_llama, force=True)


# ---------------------------------------------------------------- steering-vectors


@pytest.mark.parametrize(
    ("family", "kind", "layer_type"),
    [
        ("llama", "resid_post", "decoder_block"),
        ("llama", "attn_out", "self_attn"),
        ("llama", "mlp_out", "mlp"),
        ("qwen3", "resid_post", "decoder_block"),
        ("gemma3", "resid_post", "decoder_block"),
        ("gemma3", "attn_out", "post_attention_layernorm"),
    ],
)
def test_steering_vectors_apply_gives_our_logits_and_converts_exactly(family, kind, layer_type):
    model = tiny_model(family)
    vector = _vector(model, (f"L1.{kind}", f"L2.{kind}"))
    theirs = vector.to_steering_vectors()
    assert theirs.layer_type == layer_type and sorted(theirs.layer_activations) == [1, 2]
    with theirs.apply(model.hf, multiplier=1.5):
        library = _logits(model)
    assert torch.equal(library, _steered(model, vector, 1.5))
    back = SteeringVector.from_steering_vectors(theirs, model)
    assert _same_vector(back, vector) and back.fingerprint == vector.fingerprint


def test_steering_vectors_layer_types_without_a_site_are_refused(tiny_gemma, tiny_llama):
    with pytest.raises(ss.InputError, match=r"must all be one of resid_post, attn_out on gemma3"):
        _vector(tiny_gemma, ("L1.mlp_out",)).to_steering_vectors()
    with pytest.raises(ss.InputError, match="has one layer_type"):
        _vector(tiny_llama, ("L1.mlp_out", "L1.resid_post")).to_steering_vectors()
    mlp = LibraryVector({1: torch.ones(64)}, layer_type="mlp")
    with pytest.raises(
        ss.InputError, match=r"layer_type 'mlp' edits no steerscope site on gemma3; valid: decoder_block"
    ):
        SteeringVector.from_steering_vectors(mlp, tiny_gemma)
    negative = SteeringVector.from_steering_vectors(LibraryVector({-1: torch.ones(64)}), tiny_llama)
    assert list(negative.directions) == ["L3.resid_post"]
    with pytest.raises(ss.InputError, match="layer 4 is out of range; this model has layers 0-3"):
        SteeringVector.from_steering_vectors(LibraryVector({4: torch.ones(64)}), tiny_llama)


# ---------------------------------------------------------------- repeng


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_repeng_control_model_gives_our_logits_and_converts_exactly(family):
    model = tiny_model(family)
    vector = _vector(model, ("L0.resid_post", "L2.resid_post"))
    theirs = vector.to_repeng()
    repeng = _repeng()
    control = repeng.ControlModel(model.hf, list(theirs.directions))
    try:
        control.set_control(theirs, coeff=-2.0)
        library = _logits(model)
    finally:
        control.unwrap()
    assert torch.equal(library, _steered(model, vector, -2.0))
    back = SteeringVector.from_repeng(theirs, model)
    assert _same_vector(back, vector) and back.fingerprint == vector.fingerprint
    with pytest.raises(
        ss.InputError, match="repeng steers decoder-block outputs .* L1.attn_out cannot convert"
    ):
        _vector(model, ("L1.attn_out",)).to_repeng()


# ---------------------------------------------------------------- the real Gemma 3 270M


def test_every_route_steers_gemma_identically(tmp_path, gemma):
    """On the real model, at a strength that changes its predictions: steerscope, steering-vectors,
    repeng and the GGUF round trip give the same logits bit for bit."""
    unit = _vector(gemma, ("L6.resid_post",))
    vector = SteeringVector(
        {
            "L6.resid_post": 2000.0
            * unit.directions["L6.resid_post"]
            / unit.directions["L6.resid_post"].norm()
        },
        unit.fingerprint,
    )
    ours = _steered(gemma, vector, 1.0)
    assert (ours.argmax(-1) != _logits(gemma).argmax(-1)).any()
    with vector.to_steering_vectors().apply(gemma.hf):
        assert torch.equal(_logits(gemma), ours)
    control = _repeng().ControlModel(gemma.hf, [6])
    try:
        control.set_control(vector.to_repeng())
        assert torch.equal(_logits(gemma), ours)
    finally:
        control.unwrap()
    loaded = SteeringVector.load_gguf(vector.save_gguf(tmp_path / "v.gguf"), gemma)
    assert torch.equal(_steered(gemma, loaded, 1.0), ours)


# ---------------------------------------------------------------- command line


def test_cli_exports_and_imports_control_vectors(tmp_path, tiny_llama, capsys):
    vector = _vector(tiny_llama)
    vector.save(tmp_path / "sentiment.L1")
    gguf_path = tmp_path / "sentiment.gguf"
    assert main(["vector", "export", str(tmp_path / "sentiment.L1"), str(gguf_path), "--strength", "4"]) == 0
    assert "--control-vector" in capsys.readouterr().out
    assert main(["vector", "import", str(gguf_path), str(tmp_path / "back"), "--model", "tiny:llama"]) == 0
    back = SteeringVector.load(tmp_path / "back", model=tiny_llama)
    assert all(torch.equal(back.directions[s], 4.0 * vector.directions[s]) for s in vector.directions)
    assert back.provenance["control_vector"]["baked_strength"] == 4.0

    (tmp_path / "notes.txt").write_text("A short note about the weather.\n\nAnother one, about trains.")
    relative = ["vector", "export", str(tmp_path / "sentiment.L1"), str(tmp_path / "rel.gguf")]
    assert main([*relative, "--scale", "relative", "--strength", "0.1"]) == 2
    assert "--scale relative needs --texts SOURCE" in capsys.readouterr().err
    texts = ["--texts", str(tmp_path / "notes.txt"), "--model", "tiny:llama"]
    assert main([*relative, "--scale", "relative", "--strength", "0.1", *texts]) == 0
    assert (
        json.loads(sidecar_path(tmp_path / "rel.gguf").read_text())["conversion"]["from_scale"] == "relative"
    )

    _write_gguf(tmp_path / "bad.gguf", {"direction.0": _ROW})
    assert (
        main(["vector", "import", str(tmp_path / "bad.gguf"), str(tmp_path / "x"), "--model", "tiny:llama"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.gguf: tensor direction.0: layer 0 cannot be steered" in err
