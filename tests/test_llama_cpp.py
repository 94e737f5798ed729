"""llama.cpp itself runs an exported control vector as steerscope steers the dequantised model.

llama-cpp-python (the `interop` extra; `make` builds it from source once and pip's wheel cache
keeps it) runs the embedded Q4_K_M GGUF as shipped. The figures on the full prompt set are in
docs/results.md (benchmarks/llama_cpp_agreement.py); here a smaller set, the same measures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerscope.steering import Fingerprint, SteeringVector, diff_of_means
from steerscope.steering.control_vector import mean_residual_norms
from steerscope.steering.llama_cpp_engine import (
    PROMPTS,
    LlamaCppEngine,
    compare_with_llama_cpp,
    embedded_gguf,
)

SITE = "L6.resid_post"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> LlamaCppEngine:
    return LlamaCppEngine(embedded_gguf(tmp_path_factory.mktemp("gguf")))


def test_llama_cpp_steers_as_steerscope_does_and_an_off_by_one_file_does_not(gemma, engine, tmp_path):
    import steerscope as ss

    pairs, _ = ss.suite_for(gemma).pairs.pairs(16, 0, 0)
    vector = diff_of_means(gemma, [p.positive for p in pairs], [p.negative for p in pairs], SITE)
    prompts = PROMPTS[:4]
    norms = mean_residual_norms(gemma, prompts, [SITE])
    path = vector.save_gguf(tmp_path / "sentiment.gguf", 0.2, "relative", norms)
    exported = SteeringVector.load_gguf(path, gemma)
    shifted = SteeringVector({"L7.resid_post": exported.directions[SITE]}, exported.fingerprint)
    off_by_one = shifted.save_gguf(tmp_path / "shifted.gguf")  # direction.7: an off-by-one writer

    figures = compare_with_llama_cpp(gemma, engine, exported, path, prompts)
    wrong = compare_with_llama_cpp(gemma, engine, exported, off_by_one, prompts)
    assert figures["top1_changed_by_steering"] > 0.1  # the vector matters
    assert figures["delta_correlation"] > 0.97, figures
    assert wrong["delta_correlation"] < figures["delta_correlation"] - 0.1, wrong
    # steering adds no disagreement beyond the engines' own (one position of slack)
    assert figures["top1_agreement_steered"] >= figures["top1_agreement_unsteered"] - 1 / figures["positions"]


def test_the_control_vector_is_removed_after_the_block(gemma, engine, tmp_path):
    ids = gemma.tokenizer("The weather today is")["input_ids"]
    plain = engine.logits(ids)
    vector = SteeringVector({SITE: torch.full((640,), 50.0)}, Fingerprint.of(gemma))
    with engine.control_vector(vector.save_gguf(tmp_path / "v.gguf")):
        assert not np.allclose(engine.logits(ids), plain, atol=1e-2)
    assert np.array_equal(engine.logits(ids), plain)
