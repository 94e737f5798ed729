"""Interventions while a reasoning model thinks: steering that stops at `</think>`, steering at
thought delimiters only, and a hard thinking-token budget.

The steering edits need to know, per row, whether `</think>` has been generated yet and which
token each position holds, which `TokenInfo` does not say; a pre-hook on the decoder follows each
row's token ids across forward calls (with the KV cache, where a call brings only the new token,
and without it, where a call repeats the sequence), so the selection is the same either way and
for left-padded batches.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor

from steerscope.capture import capture
from steerscope.errors import InputError
from steerscope.intervene import Edit, intervene, module_at
from steerscope.model import ModelLike, as_model
from steerscope.sites import Site, resolve_sites
from steerscope.steering.apply import SCALES, steering_edit
from steerscope.steering.vector import SteeringVector
from steerscope.tokens import TokenInfo, past_length

THINK_CLOSE = "</think>"
ThinkingPositions = Literal["thinking", "delimiters"]
THINKING_POSITIONS = ("thinking", "delimiters")


def think_close_id(tokenizer: Any) -> int | None:
    """The id of `</think>` if the tokenizer has it as one token (a reasoning model), else None.

    Looked up as one token and read back (a missing token maps to the unknown token's id), not in
    `get_vocab()`, which builds the whole vocabulary (half a second for Gemma's 262k tokens) and is
    asked once per solution read."""
    found = tokenizer.convert_tokens_to_ids(THINK_CLOSE)
    return found if found is not None and tokenizer.convert_ids_to_tokens(found) == THINK_CLOSE else None


def require_think_close(tokenizer: Any) -> int:
    """The id of `</think>`, or a clear error for a tokenizer without it as one token."""
    close = think_close_id(tokenizer)
    if close is None:
        raise InputError(
            f"this tokenizer has no single {THINK_CLOSE} token: thinking-time steering and budgets "
            "need a reasoning model (e.g. organism:reasoning)"
        )
    return close


def delimiter_ids(tokenizer: Any, delimiter: str) -> list[int]:
    """Ids of every token whose text ends with `delimiter` (e.g. "\\n\\n" and ".\\n\\n")."""
    if not delimiter:
        raise InputError("the thought delimiter must be a non-empty string such as '\\n\\n'")
    return [i for i in range(len(tokenizer)) if tokenizer.decode([i]).endswith(delimiter)]


@dataclass
class TraceDelimiters:
    """The thought delimiters in the thinking part of one trace: the activation at each, per site
    ([n_delimiters, d]), and the text of the thought after each (empty before `</think>`)."""

    activations: dict[str, Tensor]
    thoughts: list[str]


def delimiter_activations(
    model: ModelLike,
    traces: Sequence[tuple[str, str]],
    sites: str | Site | Sequence[str | Site],
    delimiter: str = "\n\n",
    batch_size: int = 16,
) -> list[TraceDelimiters]:
    """Activations at the generated thought delimiters of each (prompt, completion) trace, up to
    its `</think>`, with the thought that follows each: where a reasoning model decides what to
    think next (read by SEAL-style calibration and by `efficiency.thinking_directions`)."""
    loaded = as_model(model)
    tokenizer = loaded.tokenizer
    close = require_think_close(tokenizer)
    marks = torch.tensor(delimiter_ids(tokenizer, delimiter))
    if not len(marks):
        raise InputError(f"no token of this tokenizer ends with the delimiter {delimiter!r}")
    names = [str(site) for site in resolve_sites(sites, loaded.anatomy)]
    found = capture(loaded, [p + c for p, c in traces], names, batch_size=batch_size, progress=False)
    out = []
    for row, (prompt, _) in enumerate(traces):
        real = found.mask[row]
        ids = found.token_ids[row][real]
        start = len(tokenizer(prompt).input_ids)
        ends = (ids[start:] == close).nonzero()
        stop = start + int(ends[0]) if len(ends) else len(ids)
        cuts = [start + int(i) for i in torch.isin(ids[start:stop], marks).nonzero().flatten()]
        thoughts = [
            tokenizer.decode(ids[here + 1 : after].tolist())
            for here, after in zip(cuts, [*cuts[1:], stop], strict=True)
        ]
        acts = {name: found.activations[name][row][real][cuts] for name in names}
        out.append(TraceDelimiters(acts, thoughts))
    return out


@dataclass(frozen=True)
class ThinkingSteer:
    """Steering while thinking: `vector` at `strength` (relative to ||h|| or absolute, see
    `steering.apply`) at every generated token before `</think>` ("thinking": efficiency
    steering) or only at generated thought delimiters before it ("delimiters": SEAL)."""

    vector: SteeringVector
    strength: float
    at: ThinkingPositions = "thinking"
    delimiter: str = "\n\n"
    scale: str = "relative"

    def __post_init__(self) -> None:
        if self.at not in THINKING_POSITIONS:
            raise InputError(f"at: unknown {self.at!r}; valid: {', '.join(THINKING_POSITIONS)}")
        if self.scale not in SCALES:
            raise InputError(f"scale: unknown {self.scale!r}; valid: {', '.join(SCALES)}")


class ThinkingTracker:
    """Each row's token ids so far, followed through a decoder pre-hook, and the positions of the
    current call that are generated and before `</think>` (optionally: and a marked token)."""

    def __init__(self, close_id: int, marked: Collection[int] | None = None) -> None:
        self.close_id = close_id
        self.marked = None if marked is None else torch.tensor(sorted(marked), dtype=torch.long)
        self.ids: Tensor | None = None
        self.mask: Tensor | None = None

    def observe(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise InputError("steering while thinking needs input_ids (not inputs_embeds) to see </think>")
        mask = kwargs.get("attention_mask")
        past = int(past_length(mask, ids.shape[1], kwargs.get("past_key_values")))
        if past == 0:
            self.ids = ids
        elif self.ids is None or self.ids.shape[1] != past or self.ids.shape[0] != ids.shape[0]:
            raise RuntimeError(
                "steering while thinking must see the whole sequence: start generate() inside the block"
            )
        else:
            self.ids = torch.cat([self.ids, ids.to(self.ids.device)], dim=1)
        full = self.ids.shape[1]
        self.mask = mask.bool() if mask is not None and mask.dim() == 2 else torch.ones_like(self.ids).bool()
        if self.mask.shape[1] != full:
            raise RuntimeError(f"attention mask covers {self.mask.shape[1]} tokens, the sequence {full}")

    def selected(self, tokens: TokenInfo) -> Tensor:
        """[batch, new tokens] bool: generated, before any generated `</think>` of the row (the
        `</think>` itself excluded), and a marked token if marks were given."""
        if self.ids is None or self.mask is None:
            raise RuntimeError("the thinking tracker saw no decoder call before a layer ran")
        device = tokens.positions.device
        ids, mask = self.ids.to(device), self.mask.to(device)
        counts = mask.long().cumsum(-1) - 1
        generated = mask & (counts >= tokens.prompt_lengths.to(device)[:, None])
        closed = ((ids == self.close_id) & generated).long().cumsum(-1) > 0
        chosen = generated & ~closed
        if self.marked is not None:
            chosen &= torch.isin(ids, self.marked.to(device))
        return chosen[:, -tokens.positions.shape[1] :]


def _restricted(edit: Edit, tracker: ThinkingTracker) -> Edit:
    def restricted(act: Tensor, tokens: TokenInfo) -> Tensor | None:
        chosen = tracker.selected(tokens)
        if not chosen.any():
            return None
        return torch.where(chosen.unsqueeze(-1), edit(act, tokens), act)

    return restricted


@contextmanager
def steer_thinking(model: ModelLike, steers: ThinkingSteer | Sequence[ThinkingSteer]) -> Iterator[None]:
    """Apply thinking-time steering (one or more `ThinkingSteer`) for the block: inside any
    `generate()` call started in it, only generated tokens before `</think>` are steered."""
    loaded = as_model(model)
    steer_list = [steers] if isinstance(steers, ThinkingSteer) else list(steers)
    close = require_think_close(loaded.tokenizer)
    edits: dict[str, list[Edit]] = {}
    trackers = []
    for steer in steer_list:
        steer.vector.check(loaded)
        if steer.strength == 0.0:
            continue
        marked = None
        if steer.at == "delimiters":
            marked = delimiter_ids(loaded.tokenizer, steer.delimiter)
            if not marked:
                raise InputError(f"no token of this tokenizer ends with the delimiter {steer.delimiter!r}")
        tracker = ThinkingTracker(close, marked)
        trackers.append(tracker)
        for site, direction in steer.vector.directions.items():
            base = steering_edit(direction, steer.strength, "all", steer.scale)
            edits.setdefault(site, []).append(_restricted(base, tracker))
    decoder = module_at(loaded.hf, loaded.anatomy.family.decoder)
    handles = [decoder.register_forward_pre_hook(t.observe, with_kwargs=True) for t in trackers]
    try:
        with intervene(loaded, edits):
            yield
    finally:
        for handle in handles:
            handle.remove()


class ThinkingBudget(LogitsProcessor):
    """A hard thinking budget: a row that has generated `budget - 1` tokens without `</think>`
    gets `</think>` forced as its next token, so it thinks at most `budget` tokens (counting
    `</think>`, as `steering.generation.count_tokens` does) and then answers."""

    def __init__(self, budget: int, close_id: int, prompt_width: int) -> None:
        if budget < 1:
            raise InputError(f"the thinking budget must be at least 1 token, got {budget}")
        self.budget = budget
        self.close_id = close_id
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width :]
        if generated.shape[1] < self.budget - 1:
            return scores
        force = ~(generated == self.close_id).any(dim=-1)
        if not force.any():
            return scores
        forced = torch.full_like(scores[0], float("-inf"))
        forced[self.close_id] = 0.0
        return torch.where(force[:, None], forced, scores)
