"""Sum of squared per-sample gradients of linear weights from one batched forward and backward.

For a linear map y = W x (W: [d_out, d_in]) applied at every token, sample b's gradient is
G_b = sum_t delta_{b,t} x_{b,t}^T, delta the gradient of sample b's own loss with respect to y at
token t. The diagonal empirical Fisher needs sum_b G_b * G_b (elementwise), not the square of
the batch gradient sum_b G_b, which would add cross terms between samples. So the inputs x are
kept by forward hooks, the output gradients delta are caught by tensor hooks, and G_b is formed
per sample, `chunk` samples at a time (never [batch, d_out, d_in] at once), squared and summed.
The batch loss is the sum of every sample's own mean loss, so each delta is exactly that of a
batch-size-1 pass (the "Goodfellow trick", Goodfellow 2015, arXiv 1510.01799; Opacus and
BackPACK compute per-sample gradients the same way).

No weight gradient is ever formed: every parameter is frozen and the gradient is driven through
the input embeddings instead, so the per-sample products replace the usual weight-gradient
matmul rather than adding to it. `probes.fisher.fisher_scores` (batch size 1) is the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from steerscope.errors import InputError
from steerscope.intervene import module_at
from steerscope.model import ModelLike, as_model
from steerscope.offload import execution_device, input_device

PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class LossSample:
    """One sequence and which of its tokens count in the loss.

    `input_ids`: [seq] token ids. `loss_mask`: [seq] bool; `loss_mask[t]` marks that predicting
    token t from position t-1 is in the loss, so `loss_mask[0]` must be False. A ToM sample counts
    only its answer token(s); a generic text window counts every position from 1 on.
    """

    input_ids: Tensor
    loss_mask: Tensor

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 1 or self.input_ids.dtype not in (torch.int32, torch.int64):
            raise InputError(
                f"input_ids must be a 1-D integer tensor [seq], got {self.input_ids.dtype} "
                f"{tuple(self.input_ids.shape)}"
            )
        if self.loss_mask.dtype != torch.bool or self.loss_mask.shape != self.input_ids.shape:
            raise InputError(
                f"loss_mask must be a bool tensor of shape {tuple(self.input_ids.shape)}, "
                f"got {self.loss_mask.dtype} {tuple(self.loss_mask.shape)}"
            )
        if bool(self.loss_mask[0]):
            raise InputError("loss_mask[0] must be False: nothing predicts the first token")
        if not bool(self.loss_mask.any()):
            raise InputError("loss_mask selects no token; a sample must count at least one prediction")

    @classmethod
    def all_positions(cls, input_ids: Tensor) -> LossSample:
        """A generic window: every prediction (tokens 1..seq-1) counts. `input_ids`: [seq]."""
        mask = torch.ones_like(input_ids, dtype=torch.bool)
        mask[0] = False
        return cls(input_ids, mask)


def squared_grad_sum(delta: Tensor, x: Tensor, chunk: int, out: Tensor) -> Tensor:
    """out += sum_b (delta_b^T x_b)^2 elementwise, `chunk` samples' gradients at a time; returns `out`.

    `delta`: [batch, seq, d_out] output gradients; `x`: [batch, seq, d_in] inputs (zero wherever
    a token must not count); `out`: [d_out, d_in] fp32 accumulator. Peak extra memory is one
    [chunk, d_out, d_in] fp32 block. On a CPU chunk=1 is fastest (measured 2x faster than 8 on
    Gemma 3's MLP shapes: the [d_out, d_in] gradient is squared while it is still in cache).
    """
    if chunk < 1:
        raise InputError(f"chunk must be at least 1, got {chunk}")
    for start in range(0, delta.shape[0], chunk):
        d = delta[start : start + chunk].float()
        a = x[start : start + chunk].float()
        for grad in torch.bmm(d.transpose(1, 2), a):  # [d_out, d_in]: one sample's gradient
            out.addcmul_(grad, grad)
    return out


def pad_batch(samples: Sequence[LossSample], padding_side: str = "right") -> dict[str, Tensor]:
    """Stack samples into one padded batch.

    Returns `input_ids` [batch, seq] (pads are token 0; they are masked everywhere),
    `attention_mask` [batch, seq] bool, `position_ids` [batch, seq] (0..len-1 on real tokens, as
    each sample alone would get) and `loss_mask` [batch, seq] bool (False on pads).
    """
    if padding_side not in PADDING_SIDES:
        raise InputError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if not samples:
        raise InputError("pad_batch needs at least one sample")
    seq = max(len(s.input_ids) for s in samples)
    ids = torch.zeros(len(samples), seq, dtype=torch.long)
    loss_mask = torch.zeros(len(samples), seq, dtype=torch.bool)
    attention = torch.zeros(len(samples), seq, dtype=torch.bool)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        span = slice(0, n) if padding_side == "right" else slice(seq - n, seq)
        ids[row, span] = sample.input_ids.to(torch.long)
        loss_mask[row, span] = sample.loss_mask.cpu()
        attention[row, span] = True
    positions = (attention.long().cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": attention, "position_ids": positions, "loss_mask": loss_mask}


@contextmanager
def _logits_only_at(hf: nn.Module, rows: Tensor, cols: Tensor) -> Iterator[None]:
    """Inside: the model's head sees only the final hidden states at (rows, cols), as [1, n, d].

    The decoder's `last_hidden_state` [batch, seq, d] is replaced by its gathered rows, so the
    model's own head (lm_head, any logit soft-capping) projects n positions, not batch x seq:
    with Gemma 3's 262k vocabulary full logits would cost gigabytes. Exact: the head acts row by row.
    """
    decoder = hf.base_model
    if decoder is hf:
        raise InputError(f"{type(hf).__name__} has no separate decoder under its language-model head")

    def gather(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden = output.last_hidden_state  # on the last layer's device when sharded
        output.last_hidden_state = hidden[rows.to(hidden.device), cols.to(hidden.device)][None]
        return output

    handle = decoder.register_forward_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def batch_loss(hf: nn.Module, batch: dict[str, Tensor], inputs_embeds: Tensor) -> Tensor:
    """Sum over samples of each sample's mean cross-entropy over its counted tokens (a scalar, fp32).

    `batch` as from `pad_batch` (on the model's device); `inputs_embeds`: [batch, seq, d_model].
    Sample b's term equals `probes.fisher.sample_loss` of that sample alone, so the gradient of
    the sum with respect to anything sample b alone touches is its batch-size-1 gradient.
    """
    loss_mask = batch["loss_mask"]
    rows, targets_at = loss_mask[:, 1:].nonzero(as_tuple=True)  # position t-1 predicts token t
    targets = batch["input_ids"][rows, targets_at + 1]
    with _logits_only_at(hf, rows, targets_at):
        out = hf(
            inputs_embeds=inputs_embeds,
            attention_mask=batch["attention_mask"].long(),
            position_ids=batch["position_ids"],
            use_cache=False,
        )
    logits = out.logits[0].float()  # [n_counted, vocab]
    per_token = F.cross_entropy(logits, targets, reduction="none")
    counts = loss_mask[:, 1:].sum(1).to(per_token.dtype)  # [batch]
    return (per_token / counts[rows]).sum()


def linear_modules(model: ModelLike) -> dict[str, nn.Linear]:
    """{weight parameter name: its nn.Linear} for the seven linear maps of every layer."""
    loaded = as_model(model)
    modules = {}
    for name in loaded.anatomy.linear_weights().values():
        module = module_at(loaded.hf, name.removesuffix(".weight"))
        if not isinstance(module, nn.Linear):
            raise InputError(f"{name} belongs to a {type(module).__name__}, not an nn.Linear")
        modules[name] = module
    return modules


@contextmanager
def _capture_squared_grads(
    modules: dict[str, nn.Linear], scores: dict[str, Tensor], token_mask: Tensor, chunk: int
) -> Iterator[None]:
    """Inside: every backward adds sum_b G_b^2 of each module's weight into `scores[name]`.

    `token_mask`: [batch, seq] bool, True on real tokens; inputs and output gradients at pads are
    zeroed so nothing there (not even a NaN from a fully masked attention row) leaks into a
    gradient. Each input is held only until its output gradient arrives.
    """
    handles = []

    def on_forward(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            if not output.requires_grad:
                return
            keep = token_mask[..., None].to(output.device)  # sharded: the input may come from another device
            # [batch, seq, d_in]; `where`, not a product, so a NaN at a pad cannot survive.
            held = [torch.where(keep, args[0].detach().to(output.device), 0.0)]

            def on_grad(delta: Tensor) -> None:  # delta: [batch, seq, d_out]
                squared_grad_sum(torch.where(keep, delta, 0.0), held.pop(), chunk, scores[name])

            output.register_hook(on_grad)

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(on_forward(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def batched_fisher_scores(
    model: ModelLike,
    samples: Sequence[LossSample],
    batch_size: int = 8,
    chunk: int = 1,
    progress: bool = True,
    padding_side: str = "right",
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher sum_x (d loss(x)/d W)^2, `batch_size` samples per pass.

    Same result and format as `probes.fisher.fisher_scores` ({parameter name: fp32 tensor shaped
    like the weight}, in `linear_weights()` order), up to float rounding. Samples are grouped by
    length to keep padding small (the sum does not depend on order). `chunk` samples' gradients
    [chunk, d_out, d_in] are formed at a time (see `squared_grad_sum`). Eval mode; no `.grad` is
    written; `requires_grad` flags and train/eval mode are restored on exit, exceptions included.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    loaded = as_model(model)
    hf = loaded.hf
    modules = linear_modules(loaded)
    if chunk < 1:
        raise InputError(f"chunk must be at least 1, got {chunk}")
    # On each weight's execution device: an offloaded weight is a `meta` placeholder.
    scores = {
        n: torch.zeros(m.weight.shape, dtype=torch.float32, device=execution_device(hf, n))
        for n, m in modules.items()
    }
    device = input_device(hf)
    embed = hf.get_input_embeddings()
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    params = dict(hf.named_parameters())
    flags = {name: p.requires_grad for name, p in params.items()}
    was_training = hf.training
    try:
        for p in params.values():
            p.requires_grad_(False)  # the hooks form the weight gradients; autograd need not
        hf.eval()
        with torch.enable_grad():
            for indices in tqdm(batches, desc="fisher (batched)", unit="batch", disable=not progress):
                batch = {
                    k: v.to(device) for k, v in pad_batch([samples[i] for i in indices], padding_side).items()
                }
                inputs_embeds = embed(batch["input_ids"]).detach().requires_grad_(True)
                with _capture_squared_grads(modules, scores, batch["attention_mask"], chunk):
                    loss = batch_loss(hf, batch, inputs_embeds)
                    torch.autograd.grad(loss, inputs_embeds)
    finally:
        for name, p in params.items():
            p.requires_grad_(flags[name])
        hf.train(was_training)
    return scores
