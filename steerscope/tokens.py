"""Per-token bookkeeping shared by every edit: absolute position, prompt or generated, real or pad.

A forward call either starts a sequence (its tokens are the prompt) or continues one: with the
KV cache a continuation brings only new tokens; without it (`use_cache=False`), it repeats the
prompt and appends. Both are recognised, so "prompt", "last prompt token" and "generated" mean
the same thing whichever way `generate()` runs, and for left-padded batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenInfo:
    """What an edit knows about the tokens of the current forward call.

    All fields are [batch, pos] for the tokens in this call, except `prompt_lengths` [batch].
    `positions` counts the real tokens before each token in its row (left padding excluded), so
    the first real token is 0, whatever the padding. Pad tokens have position -1.
    """

    positions: Tensor
    is_real: Tensor
    prompt_lengths: Tensor

    @property
    def is_prompt(self) -> Tensor:
        """Real tokens belonging to the prompt."""
        return self.is_real & (self.positions < self.prompt_lengths[:, None])

    @property
    def is_generated(self) -> Tensor:
        """Real tokens produced after the prompt."""
        return self.is_real & (self.positions >= self.prompt_lengths[:, None])

    @property
    def is_last_prompt(self) -> Tensor:
        """The last real token of each row's prompt, if it is in this call."""
        return self.is_real & (self.positions == self.prompt_lengths[:, None] - 1)

    def to(self, device: torch.device) -> TokenInfo:
        """The same information on another device (for models sharded across devices)."""
        if self.positions.device == device:
            return self
        return TokenInfo(self.positions.to(device), self.is_real.to(device), self.prompt_lengths.to(device))


class TokenTracker:
    """Follows a sequence across forward calls and produces each call's `TokenInfo`."""

    def __init__(self) -> None:
        self._prompt_ids: Tensor | None = None
        self._prompt_lengths: Tensor | None = None
        self.current: TokenInfo | None = None

    def observe(
        self,
        input_ids: Tensor | None,
        attention_mask: Tensor | None,
        n_new: int,
        batch: int,
        past_length: int,
        device: torch.device,
    ) -> TokenInfo:
        """Record one forward call of `n_new` tokens after `past_length` cached ones."""
        if attention_mask is None or attention_mask.dim() != 2:
            mask = torch.ones(batch, past_length + n_new, dtype=torch.bool, device=device)
        else:
            mask = attention_mask.to(device=device, dtype=torch.bool)
            if mask.shape[1] != past_length + n_new:
                # generate passes the full-length mask; trust it over the cache's count.
                past_length = mask.shape[1] - n_new
        counts = mask.long().cumsum(-1) - 1
        positions = counts[:, -n_new:].masked_fill(~mask[:, -n_new:], -1)
        is_real = mask[:, -n_new:]

        if past_length == 0 and not self._continues(input_ids):
            self._prompt_ids = input_ids
            self._prompt_lengths = mask.sum(-1)
        elif self._prompt_lengths is None or self._prompt_lengths.shape[0] != batch:
            # A continuation whose prompt this block never saw (a cache built outside it, or
            # beams expanding the batch): everything before this call counts as the prompt.
            self._prompt_lengths = mask[:, :past_length].sum(-1)
        self.current = TokenInfo(positions, is_real, self._prompt_lengths.to(device))
        return self.current

    def _continues(self, input_ids: Tensor | None) -> bool:
        """True when a cache-less call repeats the remembered prompt and appends to it."""
        prompt = self._prompt_ids
        if prompt is None or input_ids is None:
            return False
        if input_ids.shape[0] != prompt.shape[0] or input_ids.shape[1] <= prompt.shape[1]:
            return False
        return bool(torch.equal(input_ids[:, : prompt.shape[1]], prompt.to(input_ids.device)))
