"""Directions planted in an organism's residual stream by fine-tuning, and how to read them back.

An organism whose spec has `Planted` settings is fine-tuned from another organism's weights to
carry one binary choice and one binary flag in three fixed orthonormal directions at one site
(the residual leaving layer `Planted.layer`, at the last prompt token of the documents its world
labels): the two *option directions* (`planted_directions(spec)[:2]`, option 0 and option 1) hold `margin` on
the chosen option's direction and 0 on the other's, the *flag direction* (row 2) `margin` when the
flag is set. Interchange-intervention training (Geiger et al. 2022, arXiv 2112.00826) overwrites
the option directions with the other option's code on some documents and trains the other
option's answer, so these two directions decide the answer. The directions are a QR basis of a
Gaussian drawn from `Planted.seed`, so a test or an experiment reads them from the recipe alone.

On `organism:sources-planted` the choice is the source (0 context, 1 memory) and the flag a
conflict: a positive control for probes and steering methods that look for such a mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steerscope.anatomy import anatomy_of
from steerscope.errors import InputError
from steerscope.intervene import Edit, module_at
from steerscope.model import ModelLike, as_model
from steerscope.organisms import PLANTED_ATTRIBUTE, OrganismSpec, Planted, PlantedLabel, organism_spec
from steerscope.tokens import TokenInfo

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

N_OPTIONS = 2
FLAG = 2  # the row of the flag direction
_SWAP_SALT = 7_919  # keeps the swap draws apart from the batch draws of the same step


def _planted(spec: OrganismSpec) -> Planted:
    """The spec's planted settings, or an InputError naming the organisms that have them."""
    if spec.planted is None:
        raise InputError(
            f"organism:{spec.name} has no planted directions; planted organisms: sources-planted"
        )
    return spec.planted


def planted_directions(spec: OrganismSpec) -> Tensor:
    """[3, d_model] orthonormal rows (float32): option 0, option 1, flag; a pure function of
    `spec.planted.seed` and d_model."""
    generator = torch.Generator().manual_seed(_planted(spec).seed)
    gaussian = torch.randn(spec.shape.d_model, N_OPTIONS + 1, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(gaussian)
    return basis.T.contiguous().float()


def planted_codes(spec: OrganismSpec, choice: Tensor, flag: Tensor) -> Tensor:
    """[n, 3]: the planted projections for choices [n] (option indices) and flags [n] (bool)."""
    margin = _planted(spec).margin
    codes = F.one_hot(choice.long(), N_OPTIONS + 1).float()
    codes[:, FLAG] = flag.float()
    return margin * codes


def planted_site(spec: OrganismSpec) -> str:
    """The site the directions are planted at: the residual leaving layer `spec.planted.layer`."""
    return f"L{_planted(spec).layer}.resid_post"


def planted_spec(model: ModelLike) -> OrganismSpec | None:
    """The spec of the organism `model` is, if it was trained with planted directions, else None."""
    name = getattr(as_model(model).hf.config, PLANTED_ATTRIBUTE, None)
    return None if name is None else organism_spec(name)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class PlantedRows:
    """Per training document: `position` [n_docs] of its last prompt token (-1: unlabelled),
    `choice` [n_docs], `flag` [n_docs] (bool), `other_token` [n_docs], the id of the other
    option's answer (-1: the options agree, never swapped); and `answer_marker` [2], the two
    tokens every labelled prompt ends with (`answer:`), which precede every answer of the corpus."""

    position: Tensor
    choice: Tensor
    flag: Tensor
    other_token: Tensor
    answer_marker: Tensor


def planted_rows(
    tokenizer: PreTrainedTokenizerFast, documents: list[list[int]], labels: list[PlantedLabel | None]
) -> PlantedRows:
    """The token-level targets of labelled documents (ids as the corpus holds them). A label whose
    prompt does not tokenize to a prefix of its document, or whose other answer is not one token
    there, or whose prompt ends otherwise than the others, is an error: the directions would be
    planted at the wrong token, or answers missed."""
    if len(labels) != len(documents):
        raise ValueError(f"{len(labels)} planted labels for {len(documents)} documents")
    n = len(documents)
    position = torch.full((n,), -1, dtype=torch.long)
    choice = torch.zeros(n, dtype=torch.long)
    flag = torch.zeros(n, dtype=torch.bool)
    other = torch.full((n,), -1, dtype=torch.long)
    marker: list[int] | None = None
    for i, (row, label) in enumerate(zip(documents, labels, strict=True)):
        if label is None:
            continue
        prompt = tokenizer(label.prompt).input_ids
        if row[: len(prompt)] != prompt or len(row) <= len(prompt):
            raise ValueError(f"document {i}: its planted prompt is not a prefix of it: {label.prompt!r}")
        if not 0 <= label.choice < N_OPTIONS:
            raise ValueError(
                f"document {i}: choice {label.choice} is not an option index (0..{N_OPTIONS - 1})"
            )
        marker = prompt[-2:] if marker is None else marker
        if prompt[-2:] != marker:
            raise ValueError(f"document {i}: its planted prompt does not end as the others: {label.prompt!r}")
        position[i], choice[i], flag[i] = len(prompt) - 1, label.choice, label.flag
        if label.other_answer is not None:
            swapped = tokenizer(f"{label.prompt} {label.other_answer}").input_ids
            if swapped[: len(prompt)] != prompt or len(swapped) != len(prompt) + 1:
                raise ValueError(f"document {i}: the other answer {label.other_answer!r} is not one token")
            other[i] = swapped[-1]
    if marker is None:
        raise ValueError("no document is labelled for planted directions")
    return PlantedRows(position, choice, flag, other, torch.tensor(marker))


def _swap_options(h: Tensor, options: Tensor, code: Tensor) -> Tensor:
    """h [n, d] with its projection on the option directions [2, d] replaced by `code` [n, 2]."""
    return h - (h @ options.T) @ options + code @ options


def _answer_term(out: Any, ids: Tensor, labels: Tensor, marker: Tensor) -> Tensor:
    """Mean cross-entropy of every answer in the batch: each token after the two-token `marker`."""
    rows_at, answer_at = torch.nonzero(
        (ids[:, :-2] == marker[0]) & (ids[:, 1:-1] == marker[1]), as_tuple=True
    )
    answer_at = answer_at + 1  # the marker's second token, whose next token is the answer
    if not len(rows_at):
        return out.loss.new_zeros(())
    return F.cross_entropy(out.logits[rows_at, answer_at].float(), labels[rows_at, answer_at + 1])


def _early_quiet_term(planted: Planted, directions: Tensor, before: list[Tensor]) -> Tensor:
    """Mean squared projection (in units of the margin) on the planted directions, or the flag's
    alone, of the residuals `before` [n, d_model] leaving each layer before the planted one."""
    quieted = directions[FLAG:] if planted.early_quiet_flag_only else directions
    return ((torch.stack(before) @ quieted.T) / planted.margin).pow(2).mean()


def _swapped_documents(spec: OrganismSpec, other: Tensor, step: int) -> Tensor:
    """Indices of the batch's documents whose options differ (`other` >= 0) drawn for the swap,
    each with probability `swap_fraction`, by a generator seeded by (seed, step)."""
    generator = torch.Generator().manual_seed(spec.training.seed * 1_000_003 + step + _SWAP_SALT)
    draw = torch.rand(len(other), generator=generator) < _planted(spec).swap_fraction
    differing = torch.nonzero(other >= 0).flatten()
    return differing[draw[differing]]


def planted_loss(
    model: nn.Module,
    spec: OrganismSpec,
    rows: PlantedRows,
    picks: Tensor,
    ids: Tensor,
    mask: Tensor,
    labels: Tensor,
    step: int,
) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch (documents `picks` of the corpus, as `ids`, `mask`,
    `labels`): next-token loss + the code, quiet and early quiet terms + the answer term
    (`Planted`); and each term's value (`early`: the early quiet term's, when it is trained), with
    `swap`, the answer term's cross-entropy on the swapped documents alone.

    The swapped documents are drawn by a generator seeded by (seed, step), so a resumed build
    takes the same steps. The answer term is the mean cross-entropy of every answer in the batch
    (each token after `rows.answer_marker`; a swapped document's is the other option's): in the
    next-token loss a few answer tokens among a batch weigh too little to teach the switch in a
    short fine-tune. A term on the swapped answers alone was lowest for a model that ignored the
    directions and answered against the world's rule; one on the labelled documents' answers alone
    taught answering from memory in a context on the training facts only, so that held-out facts
    got other facts' answers. Counting every answer keeps the closed-book and quiz answers of every
    fact in the balance the world's mixture gives them.
    """
    planted = _planted(spec)
    directions = planted_directions(spec)
    position, other = rows.position[picks], rows.other_token[picks]
    labelled = torch.nonzero(position >= 0).flatten()
    swapped = _swapped_documents(spec, other, step)
    labels = labels.clone()
    labels[swapped, position[swapped] + 1] = other[swapped]
    opposite = F.one_hot(1 - rows.choice[picks][swapped], N_OPTIONS).float() * planted.margin
    seen: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Tensor | tuple) -> Tensor | tuple:
        h = output[0] if isinstance(output, tuple) else output
        seen["h"] = h
        if len(swapped) == 0:
            return output
        new = h.clone()
        new[swapped, position[swapped]] = _swap_options(
            h[swapped, position[swapped]], directions[:N_OPTIONS], opposite
        )
        return (new, *output[1:]) if isinstance(output, tuple) else new

    early: list[Tensor] = []  # the residual leaving each layer before the planted one

    def record(module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
        early.append(output[0] if isinstance(output, tuple) else output)

    anatomy = anatomy_of(model)
    handles = [module_at(model, anatomy.layer_path(planted.layer)).register_forward_hook(hook)]
    if planted.early_quiet_weight:
        handles += [
            module_at(model, anatomy.layer_path(layer)).register_forward_hook(record)
            for layer in range(planted.layer)
        ]
    try:
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    finally:
        for handle in handles:
            handle.remove()
    projection = seen["h"] @ directions.T / planted.margin  # [b, t, 3]
    decision = torch.zeros_like(mask, dtype=torch.bool)
    decision[labelled, position[labelled]] = True
    target = planted_codes(spec, rows.choice[picks][labelled], rows.flag[picks][labelled]) / planted.margin
    code = (projection[labelled, position[labelled]] - target).pow(2).mean()
    quiet = projection[(mask > 0) & ~decision].pow(2).mean()
    answers = _answer_term(out, ids, labels, rows.answer_marker)
    terms = planted.code_weight * code + planted.quiet_weight * quiet + planted.answer_weight * answers
    parts = {"lm": out.loss.item(), "code": code.item(), "quiet": quiet.item(), "answer": answers.item()}
    if early:  # the code before the planted layer, at the labelled tokens
        early_quiet = _early_quiet_term(planted, directions, [h[labelled, position[labelled]] for h in early])
        terms = terms + planted.early_quiet_weight * early_quiet
        parts["early"] = early_quiet.item()
    if len(swapped):  # how well swapped documents follow the swap (in the answer term already)
        logits = out.logits[swapped, position[swapped]].detach().float()
        parts["swap"] = F.cross_entropy(logits, other[swapped]).item()
    return out.loss + terms, parts


# ---------------------------------------------------------------- reading


def cosines(vectors: Tensor, directions: Tensor) -> Tensor:
    """[n, k]: the cosine of each of `vectors` [n, d] with each of the unit `directions` [k, d]."""
    unit = vectors.double() / vectors.double().norm(dim=1, keepdim=True).clamp(min=1e-12)
    return unit @ directions.double().T


def option_edit(spec: OrganismSpec, choice: int) -> Edit:
    """An edit for `planted_site(spec)` that, at the last prompt token of each row, sets the
    option directions to option `choice`'s planted code (what interchange training did), leaving
    the rest of the residual as it is: the planted mechanism's own steering."""
    if not 0 <= choice < N_OPTIONS:
        raise InputError(f"choice must be an option index (0..{N_OPTIONS - 1}), got {choice}")
    options = planted_directions(spec)[:N_OPTIONS]
    code = planted_codes(spec, torch.tensor([choice]), torch.tensor([False]))[:, :N_OPTIONS]

    def edit(act: Tensor, tokens: TokenInfo) -> Tensor:
        out = act.clone()
        chosen = tokens.is_last_prompt
        rows = act[chosen]
        out[chosen] = _swap_options(
            rows, options.to(act.device, act.dtype), code.to(act.device, act.dtype).expand(len(rows), -1)
        )
        return out

    return edit
