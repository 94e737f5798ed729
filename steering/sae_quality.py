"""How good an SAE is: reconstruction of held-out activations, and the language-model loss with
its reconstruction spliced into the forward pass.

- fvu = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (0 perfect, 1 no better than the mean);
- l0 = mean number of nonzero codes (`sae.encode`) per token;
- dead_fraction = share of features that never fire on the held-out tokens;
- CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean): mean next-token cross-entropy
  with the site's activation replaced by the SAE's reconstruction, against the clean model and
  against zero-ablating the site (1: the SAE loses nothing the model uses; 0: as bad as removing
  the site). Replacement spares each sequence's first token (BOS), which the SAE never saw in
  training; the three losses count the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from steerscope.capture import tokenize
from steerscope.intervene import Edit, intervene
from steerscope.model import ModelLike, as_model
from steerscope.tokens import TokenInfo


@torch.no_grad()
def sae_quality(sae: Any, activations: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """fvu, l0 and dead_fraction of `sae` on activations [n, d_model] (module docstring)."""
    x = activations.reshape(-1, activations.shape[-1])
    error, active = 0.0, 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    mean = x.float().mean(0)
    variance = 0.0
    for chunk in x.split(batch_size):
        chunk = chunk.float()
        codes = sae.encode(chunk)
        error += (sae.decode(codes) - chunk).pow(2).sum().item()
        nonzero = codes != 0
        active += nonzero.sum().item()
        fired |= nonzero.any(0).cpu()
        variance += (chunk - mean).pow(2).sum().item()
    return {
        "fvu": error / variance if variance > 0 else float("nan"),
        "l0": active / x.shape[0],
        "dead_fraction": 1.0 - fired.float().mean().item(),
    }


def _after_first_token(replace: Any) -> Edit:
    """An edit putting `replace(act)` in place of every real token but each row's first."""

    def edit(act: Tensor, tokens: TokenInfo) -> Tensor:
        chosen = (tokens.is_real & (tokens.positions > 0))[..., None]
        return torch.where(chosen, replace(act.float()).to(act.dtype), act)

    return edit


@torch.no_grad()
def lm_loss(
    model: ModelLike, texts: Sequence[str], edits: dict[str, Edit] | None = None, batch_size: int = 4
) -> float:
    """Mean next-token cross-entropy over every real token after the first of `texts`, with
    `edits` installed (left-padded batches, the tokenizer's special tokens added)."""
    loaded = as_model(model)
    device = next(loaded.hf.parameters()).device
    total, count = 0.0, 0
    with intervene(loaded, edits or {}):
        for start in range(0, len(texts), batch_size):
            batch = {
                k: v.to(device) for k, v in tokenize(loaded, list(texts[start : start + batch_size])).items()
            }
            logits = loaded.hf(**batch).logits[:, :-1].float()
            mask = batch["attention_mask"]
            counted = (mask[:, 1:] & mask[:, :-1]).bool()
            losses = F.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
            total += losses[counted].sum().item()
            count += int(counted.sum())
    return total / count


def ce_loss_recovered(
    model: ModelLike,
    sae: Any,
    site: str,
    texts: Sequence[str],
    clean: float | None = None,
    batch_size: int = 4,
) -> dict[str, float]:
    """ce_clean, ce_sae, ce_zero and ce_loss_recovered (module docstring) on `texts`; pass
    `clean` when the clean loss of the same texts is known (it does not depend on the SAE)."""
    ce_clean = lm_loss(model, texts, batch_size=batch_size) if clean is None else clean
    spliced = _after_first_token(lambda act: sae.decode(sae.encode(act)))
    ce_sae = lm_loss(model, texts, {site: spliced}, batch_size)
    ce_zero = lm_loss(model, texts, {site: _after_first_token(torch.zeros_like)}, batch_size)
    return {
        "ce_clean": ce_clean,
        "ce_sae": ce_sae,
        "ce_zero": ce_zero,
        "ce_loss_recovered": (ce_zero - ce_sae) / (ce_zero - ce_clean),
    }
