"""Per-token bookkeeping shared by every edit: absolute position, prompt or generated, real or pad.

A forward call either starts a sequence (its tokens are the prompt) or continues one: with the
KV cache a continuation brings only new tokens; without it (`use_cache=False`), it repeats the
prompt and appends. Both are recognised, so "prompt", "last prompt token" and "generated" mean
the same thing whichever way `generate()` runs, and for left-padded batches.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
_MISSING = object()


class TokenInfo:
    """What an edit knows about the tokens of the current forward call.

    All fields are [batch, pos] for the tokens in this call, except `prompt_lengths` [batch]; all
    live on `device`. `positions` counts the real tokens before each token in its row (left
    padding excluded), so the first real token is 0, whatever the padding. Pad tokens have
    position -1.

    One `TokenInfo` is made per forward call (per device, for sharded models) and shared by every
    hook of that call, so each field, each mask below and anything an edit derives with `once` is
    computed at most once per call, on first use (steering generated tokens asks, per decode step,
    for `is_generated` alone; steering every token asks for nothing and runs without tracking).
    """

    __slots__ = ("prompt_lengths", "device", "_mask", "_batch", "_n_new", "_past", "_derived")

    def __init__(self, positions: Tensor, is_real: Tensor, prompt_lengths: Tensor) -> None:
        self.prompt_lengths = prompt_lengths
        self.device = prompt_lengths.device
        self._mask: Tensor | None = None
        self._batch, self._n_new = positions.shape
        self._past = 0
        self._derived: dict[Hashable, Any] = {"positions": positions, "is_real": is_real}

    @classmethod
    def of_call(
        cls,
        mask: Tensor | None,
        n_new: int,
        past: int,
        prompt_lengths: Tensor,
        device: torch.device | None = None,
        positions: Tensor | None = None,
    ) -> TokenInfo:
        """The tokens of a call of `n_new` tokens after `past` cached ones, from its attention mask
        [batch, past + n_new] (nonzero: a real token; None: all real; read during the call, so not
        changed in place during it) and each row's prompt length [batch], on one device (`device`,
        when given, is that device: saves asking the tensor once per decode step). `positions`
        [batch, n_new], with no mask: the call's own position ids (see `TokenTracker.observe`)."""
        info = cls.__new__(cls)
        info.prompt_lengths = prompt_lengths
        info.device = prompt_lengths.device if device is None else device
        info._mask = mask
        info._batch = prompt_lengths.shape[0]
        info._n_new = n_new
        info._past = past
        info._derived = {} if positions is None else {"positions": positions}
        return info

    def once(self, key: Hashable, compute: Callable[[TokenInfo], T]) -> T:
        """`compute(self)` the first time `key` is asked for in this call, the same value after.

        For what edits derive from the tokens (a steering mask in the activation's dtype): every
        hook of the call shares it. Keys are shared too, so name them after what they hold."""
        value = self._derived.get(key, _MISSING)
        if value is _MISSING:
            value = self._derived[key] = compute(self)
        return value

    @property
    def positions(self) -> Tensor:
        """Real tokens before each token in its row; -1 at pads."""
        return self.once("positions", _positions)

    @property
    def is_real(self) -> Tensor:
        """Tokens that are not padding."""
        return self.once("is_real", _is_real)

    @property
    def is_prompt(self) -> Tensor:
        """Real tokens belonging to the prompt."""
        return self.once("is_prompt", lambda t: t.is_real & (t.positions < t.prompt_lengths[:, None]))

    @property
    def is_generated(self) -> Tensor:
        """Real tokens produced after the prompt."""
        return self.once("is_generated", lambda t: t.is_real & (t.positions >= t.prompt_lengths[:, None]))

    @property
    def is_last_prompt(self) -> Tensor:
        """The last real token of each row's prompt, if it is in this call."""
        return self.once(
            "is_last_prompt", lambda t: t.is_real & (t.positions == t.prompt_lengths[:, None] - 1)
        )

    def rows(self, index: slice) -> TokenInfo:
        """The same information for the batch rows `index` selects (one group of rows of a batch
        that runs several settings at once, `steerscope.row_groups`)."""
        return TokenInfo(self.positions[index], self.is_real[index], self.prompt_lengths[index])

    def to(self, device: torch.device) -> TokenInfo:
        """The same information on another device (for models sharded across devices), moved
        once per device per call."""
        if self.device == device:
            return self
        return self.once(("TokenInfo.to", device), lambda t: t._moved(device))

    def _moved(self, device: torch.device) -> TokenInfo:
        if "positions" in self._derived:  # fields given (or computed already): move them
            return TokenInfo(
                self.positions.to(device), self.is_real.to(device), self.prompt_lengths.to(device)
            )
        mask = None if self._mask is None else self._mask.to(device)
        return TokenInfo.of_call(mask, self._n_new, self._past, self.prompt_lengths.to(device))

    def __repr__(self) -> str:
        fields = f"positions={self.positions}, is_real={self.is_real}, prompt_lengths={self.prompt_lengths}"
        return f"TokenInfo({fields})"


def _real_mask(mask: Tensor) -> Tensor:
    """An attention mask as bool (HF's are 0/1 integers; no copy when already bool)."""
    return mask if mask.dtype == torch.bool else mask != 0


def _real_count(mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    """Real tokens per row among the first `length` of `mask` [batch] (None: all real)."""
    if mask is None:
        return torch.full((batch,), length, dtype=torch.long, device=device)
    return _real_mask(mask.narrow(1, 0, length)).sum(-1)


def past_length(attention_mask: Tensor | None, n_new: int, cache: Any) -> int | Tensor:
    """How many tokens come before a forward call's `n_new` ones: the width of its 2-D attention mask
    less the call when it has one (`generate`'s covers the cache and the call; trusted over the
    cache, whose count a sliding window or a prefix cache can make differ), else `_cache_length`."""
    if attention_mask is not None and attention_mask.dim() == 2:
        return attention_mask.shape[1] - n_new
    return _cache_length(cache)


def _cache_length(cache: Any) -> int | Tensor:
    """How many tokens a KV cache holds before a call (0 without one). A transformers `Cache`:
    `get_seq_length` of a layer that keeps every token (a static cache's sliding-window layers stop
    counting once full), else a sliding layer's own count, a 0-d tensor for a static cache (so a
    compiled graph reads it without recompiling). A TransformerLens block's cache entry: the length
    of its keys [batch, pos, heads, d_head]."""
    if cache is None:
        return 0
    keys = getattr(cache, "past_keys", None)
    if isinstance(keys, Tensor):
        return keys.shape[1]
    layers = getattr(cache, "layers", None)
    if layers:
        for index, layer in enumerate(layers):
            if not getattr(layer, "is_sliding", False):
                return cache.get_seq_length(index)
        counted = getattr(layers[0], "cumulative_length_int", None)
        if counted is not None:
            return counted
    return cache.get_seq_length()


def position_ids_of(kwargs: dict[str, Any], batch: int, n_new: int) -> Tensor | None:
    """A forward call's `position_ids` as [batch, n_new] (None: not given, or not 2-D).

    `generate` passes them as the real tokens before each token in its row (pads 0): with a
    static cache they are where the padding shows, since the attention mask it passes is 4-D."""
    ids = kwargs.get("position_ids")
    if not isinstance(ids, Tensor) or ids.dim() != 2:
        return None
    return ids.expand(batch, n_new)


def _is_real(tokens: TokenInfo) -> Tensor:
    if tokens._mask is None:
        return torch.ones(tokens._batch, tokens._n_new, dtype=torch.bool, device=tokens.device)
    return _real_mask(tokens._mask.narrow(1, tokens._past, tokens._n_new))


def _positions(tokens: TokenInfo) -> Tensor:
    if tokens._mask is None:
        counts = torch.arange(tokens._past, tokens._past + tokens._n_new, device=tokens.device)
        return counts.expand(tokens._batch, -1)
    counts = _real_mask(tokens._mask).cumsum(-1, dtype=torch.long).narrow(1, tokens._past, tokens._n_new) - 1
    return counts.masked_fill(~tokens.is_real, -1)


def _count(
    mask: Tensor | None, positions: Tensor | None, batch: int, through: int, device: torch.device
) -> Tensor:
    """Real tokens per row up to the end of the call (`through` tokens in all) [batch]: from the
    mask, else from the call's position ids (the last token's position + 1), else `through`."""
    if positions is not None:
        return positions.amax(-1) + 1
    return _real_count(mask, batch, through, device)


def call_mask(attention_mask: Tensor | None, device: torch.device) -> Tensor | None:
    """A forward call's attention mask as `TokenTracker.observe` takes it: the 2-D padding mask on
    `device`, or None for no mask or a ready 4-D one (padding is not read from those)."""
    if attention_mask is None or attention_mask.dim() != 2:
        return None
    return attention_mask if attention_mask.device == device else attention_mask.to(device)


class TokenTracker:
    """Follows a sequence across forward calls and produces each call's `TokenInfo`."""

    def __init__(self) -> None:
        self._prompt_ids: Tensor | None = None
        self._prompt_lengths: Tensor | None = None
        self.current: TokenInfo | None = None

    def observe(
        self,
        input_ids: Tensor | None,
        mask: Tensor | None,
        n_new: int,
        batch: int,
        past_length: int,
        device: torch.device,
        continues_prompt: bool = False,
        positions: Tensor | None = None,
    ) -> TokenInfo:
        """Record one forward call of `n_new` tokens after `past_length` cached ones, on `device`,
        with its 2-D attention mask [batch, past_length + n_new] on `device` (None: all real; see
        `call_mask`); `continues_prompt`: they are the rest of prompts whose shared prefix is cached
        (`steerscope.prefix_cache`), so every real token up to the end of this call is prompt.
        `positions` [batch, n_new] on `device`, read only without a mask: the call's position ids
        (`position_ids_of`), which count real tokens where the mask is not 2-D (a static cache).

        On a decode step this costs no tensor op: the call's `TokenInfo` keeps the attention mask
        itself and computes its fields when an edit first asks for them, during the call."""
        if mask is not None:
            positions = None
        if continues_prompt:
            self._prompt_ids = None
            self._prompt_lengths = _count(mask, positions, batch, past_length + n_new, device)
        elif past_length == 0 and not self._continues(input_ids):
            self._prompt_ids = input_ids
            self._prompt_lengths = _count(mask, positions, batch, n_new, device)
        elif self._prompt_lengths is None or self._prompt_lengths.shape[0] != batch:
            # A continuation whose prompt this block never saw (a cache built outside it, or
            # beams expanding the batch): everything before this call counts as the prompt.
            self._prompt_lengths = (
                _real_count(mask, batch, past_length, device) if positions is None else positions[:, 0]
            )
        elif self._prompt_lengths.device != device:
            self._prompt_lengths = self._prompt_lengths.to(device)
        self.current = TokenInfo.of_call(mask, n_new, past_length, self._prompt_lengths, device, positions)
        return self.current

    def _continues(self, input_ids: Tensor | None) -> bool:
        return repeats_and_extends(self._prompt_ids, input_ids)


def repeats_and_extends(prompt: Tensor | None, input_ids: Tensor | None) -> bool:
    """True when a cache-less call's `input_ids` repeat the remembered `prompt` and append to it."""
    if prompt is None or input_ids is None:
        return False
    if input_ids.shape[0] != prompt.shape[0] or input_ids.shape[1] <= prompt.shape[1]:
        return False
    return bool(torch.equal(input_ids[:, : prompt.shape[1]], prompt.to(input_ids.device)))
