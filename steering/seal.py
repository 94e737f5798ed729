"""SEAL-style calibration (arXiv 2504.07986): a steering vector from step thoughts minus check and
detour thoughts, added at thought delimiters while the model thinks.

SEAL splits a reasoning trace into thoughts at its delimiter ("\\n\\n" in DeepSeek-R1 traces, a
newline in `organism:reasoning`), sorts them by keywords into execution, reflection and
transition thoughts (here: step, check, detour), represents each thought by the residual at a
delimiter token, and takes mean(execution) - mean(reflection and transition) at one middle layer.
While decoding, the vector is added at every generated delimiter token (SEAL adds it with
strength 1 in absolute units, to the delimiter tokens only).

Which delimiter represents a thought: the one just before it, where the model has written the
previous thought and decides what comes next, so each delimiter is labelled by the kind of the
thought that follows it (as the keyword classification of the EasySteer replication of SEAL
does). The delimiter before `</think>` is labelled "step": what follows is no reflection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.sites import Site
from steerscope.steering.thinking import THINK_CLOSE, delimiter_activations
from steerscope.steering.vector import Fingerprint, SteeringVector

ThoughtKind = Literal["step", "check", "detour"]
THOUGHT_KINDS = ("step", "check", "detour")
#: Keywords of reflection (checks) and of transition (detours), matched lower-cased; a thought
#: with a detour keyword is a detour even if it also has a check keyword ("wait, another way").
CHECK_WORDS = ("wait", "check", "verify", "make sure", "is wrong", "hold on")
DETOUR_WORDS = ("another way", "alternatively", "another approach", "think differently")


def classify_thought(text: str) -> ThoughtKind:
    """The kind of a thought by keywords, as SEAL sorts them: "detour", "check" or "step"."""
    lower = text.lower()
    if any(word in lower for word in DETOUR_WORDS):
        return "detour"
    if any(word in lower for word in CHECK_WORDS):
        return "check"
    return "step"


def thought_counts(thinking: str, delimiter: str = "\n\n") -> dict[ThoughtKind, int]:
    """How many thoughts of each kind a thinking text has (split at `delimiter`, blanks skipped,
    nothing from `</think>` on)."""
    kinds = [classify_thought(t) for t in thinking.split(THINK_CLOSE)[0].split(delimiter) if t.strip()]
    return {kind: kinds.count(kind) for kind in THOUGHT_KINDS}


def thought_representations(
    model: ModelLike,
    traces: Sequence[tuple[str, str]],
    layer: int,
    delimiter: str = "\n\n",
    kind: str = "resid_post",
    batch_size: int = 16,
) -> dict[ThoughtKind, Tensor]:
    """The residual at `layer` at every thought delimiter in the thinking part of each
    (prompt, completion) trace, grouped by the kind of the thought that follows it ([n, d] each)."""
    site = str(Site(layer, kind))
    grouped: dict[ThoughtKind, list[Tensor]] = {k: [] for k in THOUGHT_KINDS}
    for trace in delimiter_activations(model, traces, site, delimiter, batch_size):
        for thought, act in zip(trace.thoughts, trace.activations[site], strict=True):
            grouped[classify_thought(thought)].append(act)
    width = as_model(model).anatomy.d_model
    return {k: torch.stack(v) if v else torch.zeros(0, width) for k, v in grouped.items()}


def seal_vector(
    model: ModelLike,
    traces: Sequence[tuple[str, str]],
    layer: int,
    delimiter: str = "\n\n",
    kind: str = "resid_post",
    batch_size: int = 16,
) -> SteeringVector:
    """mean(step delimiters) - mean(check and detour delimiters) at `layer` over `traces`
    ((prompt, completion) pairs of the model's own reasoning)."""
    reps = thought_representations(model, traces, layer, delimiter, kind, batch_size)
    counts = {k: len(v) for k, v in reps.items()}
    reflective = torch.cat([reps["check"], reps["detour"]])
    if not counts["step"] or not len(reflective):
        raise InputError(f"SEAL needs step thoughts and check/detour thoughts; found {counts}")
    direction = reps["step"].mean(0) - reflective.mean(0)
    return SteeringVector(
        {str(Site(layer, kind)): direction},
        Fingerprint.of(model),
        {
            "method": "seal",
            "direction": "mean(step thoughts) - mean(check + detour thoughts), residual at the "
            "delimiter before each thought (arXiv 2504.07986)",
            "delimiter": delimiter,
            "layer": layer,
            "n_thoughts": counts,
            "n_traces": len(traces),
        },
    )
