"""SpARE's clamp-and-shortfall SAE edit (Zhao et al. 2025, arXiv 2410.15999), reference and fused.

For one edited residual vector h [d_model], with feature codes z = act(W_enc^T (h - b_in) + b_enc):

    z_minus = min(target_remove, z[S_remove])          (what the removed features hold, capped)
    z_plus  = max(target_add - z[S_add], 0)            (the shortfall of the added features)
    h'      = h - W_dec[S_remove]^T z_minus + W_dec[S_add]^T z_plus

The decoder bias cancels because only differences of reconstructions are added. `act` is local
to each feature (ReLU, or JumpReLU's threshold), so z is never negative: a feature at zero has
nothing to remove and its whole target to add. TopK's competition between features is not local
and is deliberately left out (see `steerscope.steering.sae.encode_pre`).

`reference_edit` encodes all d_sae features and decodes a scattered d_sae vector:
O(d_sae * d_model) per token. `fused_edit` gathers the k = |S_remove| + |S_add| encoder columns,
biases and decoder rows once, then costs O(k * d_model) per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steerscope.errors import InputError


@dataclass(frozen=True)
class SAEParts:
    """An SAE as plain tensors, with any decoder-norm rescaling folded in.

    W_enc [d_model, d_sae], b_enc [d_sae], b_in [d_model] (subtracted before encoding; zeros when
    the SAE does not apply b_dec to its input), W_dec [d_sae, d_model], threshold [d_sae] or None
    (JumpReLU). Codes: z = act((x - b_in) @ W_enc + b_enc); reconstruction z @ W_dec + b_dec.
    """

    W_enc: Tensor  # noqa: N815 (the field names of sae-lens)
    b_enc: Tensor
    b_in: Tensor
    W_dec: Tensor  # noqa: N815
    threshold: Tensor | None = None


def activate(pre: Tensor, threshold: Tensor | None) -> Tensor:
    """ReLU, or JumpReLU (pre kept where pre > threshold) when the SAE has thresholds."""
    if threshold is None:
        return pre.relu()
    return pre * (pre > threshold).to(pre.dtype)


_LOCAL_ARCHITECTURES = ("standard", "topk", "jumprelu")


@torch.no_grad()
def sae_parts(sae: Any) -> SAEParts:
    """Read a sae-lens SAE (standard, topk or jumprelu) into `SAEParts`.

    A TopK SAE with `rescale_acts_by_decoder_norm` multiplies pre-activations by the decoder row
    norms and divides the codes by them before decoding; folding that into W_enc, b_enc and
    W_dec gives the same reconstructions with unit-free codes.
    """
    architecture = sae.cfg.architecture()
    if architecture not in _LOCAL_ARCHITECTURES:
        raise InputError(
            f"SAE architecture {architecture!r} is not supported; valid: {', '.join(_LOCAL_ARCHITECTURES)}"
        )
    if sae.cfg.normalize_activations != "none":
        raise InputError(
            f"SAE normalize_activations={sae.cfg.normalize_activations!r} is applied at run time; "
            "fold it into the weights first (sae-lens folds 'expected_average_only_in' after training)"
        )
    if getattr(sae.cfg, "reshape_activations", "none") != "none":
        raise InputError("SAEs on reshaped (hook_z) activations are not supported: edit resid sites")
    w_enc, b_enc, w_dec = sae.W_enc.detach(), sae.b_enc.detach(), sae.W_dec.detach()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        norms = w_dec.norm(dim=-1)
        w_enc, b_enc, w_dec = w_enc * norms, b_enc * norms, w_dec / norms[:, None]
    b_in = sae.b_dec.detach() if sae.cfg.apply_b_dec_to_input else torch.zeros_like(sae.b_dec)
    threshold = sae.threshold.detach() if architecture == "jumprelu" else None
    return SAEParts(W_enc=w_enc, b_enc=b_enc, b_in=b_in, W_dec=w_dec, threshold=threshold)


def encode_local(parts: SAEParts, h: Tensor) -> Tensor:
    """Feature codes z [..., d_sae] of residual vectors h [..., d_model] (all features)."""
    pre = (h.to(parts.W_enc.dtype) - parts.b_in) @ parts.W_enc + parts.b_enc
    return activate(pre, parts.threshold)


def _rule(
    z_remove: Tensor, z_add: Tensor, target_remove: Tensor, target_add: Tensor
) -> tuple[Tensor, Tensor]:
    """(z_minus, z_plus): the capped removal and the clipped shortfall, both >= 0."""
    z_minus = torch.minimum(target_remove, z_remove).clamp(min=0)
    z_plus = (target_add - z_add).clamp(min=0)
    return z_minus, z_plus


@torch.no_grad()
def reference_edit(
    parts: SAEParts,
    h: Tensor,
    remove: Tensor,
    add: Tensor,
    target_remove: Tensor,
    target_add: Tensor,
) -> Tensor:
    """The edited h' [n, d_model] of h [n, d_model]: full encode, select, full decode.

    remove [k_r], add [k_a]: feature indices; target_remove [k_r], target_add [k_a]: alpha * means.
    """
    z = encode_local(parts, h)
    z_minus, z_plus = _rule(z[:, remove], z[:, add], target_remove, target_add)
    codes = torch.zeros_like(z)
    codes[:, remove] -= z_minus
    codes[:, add] += z_plus
    return h + (codes @ parts.W_dec).to(h.dtype)


@dataclass(frozen=True)
class SubsetEdit:
    """The gathered weights of one SpARE edit: [d_model, k] encoder columns, [k] biases,
    thresholds and targets, [k, d_model] decoder rows; the first `n_remove` are removed, the rest added.
    """

    W_enc: Tensor  # noqa: N815
    b_enc: Tensor
    b_in: Tensor
    W_dec: Tensor  # noqa: N815
    target: Tensor
    threshold: Tensor | None
    n_remove: int

    @classmethod
    def gather(
        cls, parts: SAEParts, remove: Tensor, add: Tensor, target_remove: Tensor, target_add: Tensor
    ) -> SubsetEdit:
        index = torch.cat([remove, add]).to(parts.W_enc.device)
        return cls(
            W_enc=parts.W_enc[:, index].contiguous(),
            b_enc=parts.b_enc[index],
            b_in=parts.b_in,
            W_dec=parts.W_dec[index].contiguous(),
            target=torch.cat([target_remove, target_add]).to(parts.W_enc),
            threshold=None if parts.threshold is None else parts.threshold[index],
            n_remove=len(remove),
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> SubsetEdit:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return SubsetEdit(
            W_enc=move(self.W_enc),
            b_enc=move(self.b_enc),
            b_in=move(self.b_in),
            W_dec=move(self.W_dec),
            target=move(self.target),
            threshold=move(self.threshold),
            n_remove=self.n_remove,
        )


@torch.no_grad()
def fused_edit(subset: SubsetEdit, h: Tensor) -> Tensor:
    """The edited h' [n, d_model] of h [n, d_model], touching only the k gathered features."""
    pre = (h - subset.b_in) @ subset.W_enc + subset.b_enc
    z = activate(pre, subset.threshold)
    r = subset.n_remove
    z_minus, z_plus = _rule(z[:, :r], z[:, r:], subset.target[:r], subset.target[r:])
    return h + torch.cat([-z_minus, z_plus], dim=1) @ subset.W_dec
