"""SpARE as its authors' public code computes it: select SAE features by mutual information with
context-vs-memory behaviour, then edit them at the last prompt token.

Zhao et al. 2025, "Steering Knowledge Selection Behaviours in LLMs via SAE-Based Representation
Engineering" (arXiv 2410.15999), reference code github.com/yuzhaouoe/SAE-based-representation-engineering
(`spare/mutual_information_and_expectation.py`, `spare/spare_for_generation.py`,
`spare/function_extraction_modellings/function_extractor.py`, `spare/group_prompts.py`).

Codes z. Every step uses one quantity, the authors' `sae.pre_acts(h)` of the residual h leaving
layer l (`L{l}.resid_post`) at the last prompt token: for their TopK SAEs ReLU(W_enc (h - b_dec) +
b_enc) *before* the top-k, for their JumpReLU SAEs the JumpReLU activations `sae.encode(h)`. Both
are per feature and never negative; `steerscope.steering.sae.encode_pre` computes exactly that.
C prompts are those the model answered from the context, M those it answered from memory.

1. `mutual_information`: scikit-learn's `mutual_info_classif` (the k-nearest-neighbour estimator
   of Kraskov et al. / Ross, 3 neighbours, fixed `random_state` for its tie-breaking noise) of
   each feature with the label (C = 1, M = 0) over the codes of the C prompts then the M prompts,
   after `MinMaxScaler` (the authors' `--minmax_normalisation`, used in all their scripts).
   With `balance`, the larger group is first cut to the smaller's size as their
   `equal_label_examples` does (`balance_groups`).
2. expectation = mean of z over C - mean over M, plain means over the same (balanced) groups.
3. `count_by_cumulative_mi` and `split_by_expectation`: walk the features by decreasing MI and
   count them, the counted feature included, until the running MI sum exceeds p x the total MI
   (all features if it never does). Then walk the same order again, appending a feature to S_C
   if its expectation is > 0, to S_M if < 0, skipping it if 0, and stop as soon as
   |S_C| + |S_M| equals the count: skipped features push the walk deeper, they do not use up
   the count.
4. Targets (`confidence_weights`, `answer_losses`): with L_ctx and L_mem the language-model loss
   (mean next-token cross-entropy over the whole sequence, prompt included, as HF's
   `labels=input_ids`) of the prompt followed by the context's answer and by the memory answer,
   a C prompt weighs L_mem / (L_ctx + L_mem) and an M prompt L_ctx / (L_ctx + L_mem), normalised to
   sum 1 within each group; target_C = sum_i w_i z_i over *all* C prompts (no balancing), target_M
   likewise. The edit scales them by alpha (the authors' `edit_degree`).
5. `spare_edit`: at the last prompt token of each edited layer, with z the codes of the current
   h (after any edit at an earlier layer), towards memory
       h' = h - W_dec[S_C]^T min(alpha target_C, z) + W_dec[S_M]^T max(alpha target_M - z, 0)
   and towards context the roles swap. The decoder bias cancels (the authors decode both terms
   with it, once subtracted and once added). `steerscope.kernels.sae_edit` holds this rule.

Not reproduced: the authors' option to subsample examples before MI
(`mutual_information_num_train_examples`), and the spreading of `mutual_info_classif` over 1000
column blocks on a process pool (a speed device; with their unset `random_state` the noise it
adds is not reproducible anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from steerscope.errors import InputError
from steerscope.intervene import Edit
from steerscope.kernels.sae_edit import SubsetEdit, fused_edit, reference_edit, sae_parts
from steerscope.model import ModelLike
from steerscope.text_losses import paired_text_losses
from steerscope.tokens import TokenInfo

Direction = Literal["memory", "context"]
DIRECTIONS = ("memory", "context")
ESTIMATORS = ("mutual_info_classif", "binned")
BALANCE_SEED = 666  # the authors' fixed seed for `equal_label_examples`
ANSWER_TEMPLATE = "{prompt} {answer}\n\n"  # a demonstration's ending in the authors' prompt format
PARALLEL_MI_FEATURES = 1024  # from this many features, MI runs on as many processes as torch's threads


@dataclass(frozen=True)
class Selection:
    """Features chosen at one site and their targets.

    S_C, S_M [k_c], [k_m]: feature indices in the order they were taken (decreasing MI);
    target_C, target_M [d_sae]: confidence-weighted mean codes over the C and M prompts (alpha
    not applied); mi [d_sae] in nats; expectation [d_sae] = mean_C z - mean_M z; `n_counted`:
    how many features the cumulative-MI walk counted; `estimator`: how mi was estimated
    ("random" for `random_selection`).
    """

    S_C: Tensor  # noqa: N815 (the paper's names)
    S_M: Tensor  # noqa: N815
    target_C: Tensor  # noqa: N815
    target_M: Tensor  # noqa: N815
    mi: Tensor
    expectation: Tensor
    n_counted: int
    estimator: str
    p: float

    def summary(self) -> dict[str, Any]:
        """What results.json records about a selection: its sizes and its features, in order."""
        return {
            "estimator": self.estimator,
            "p": self.p,
            "n_counted": self.n_counted,
            "S_C": len(self.S_C),
            "S_M": len(self.S_M),
            **{f"{name}_features": ids for name, ids in self.features().items()},
        }

    def features(self) -> dict[str, list[int]]:
        """{"S_C": [...], "S_M": [...]}: the selected feature indices, in the order taken."""
        return {"S_C": self.S_C.tolist(), "S_M": self.S_M.tolist()}

    def top_mi(self, n: int = 10) -> list[list[float]]:
        """[[feature, mi], ...] of the `n` features of highest MI (the order the walk takes)."""
        return [[int(f), float(self.mi[f])] for f in decreasing_mi(self.mi)[:n]]


# ---------------------------------------------------------------- mutual information


def _check_codes(z: Tensor, labels: Tensor) -> None:
    if z.dim() != 2 or labels.shape != (z.shape[0],):
        raise InputError(
            f"z must be [n, d_sae] and labels [n]; got {tuple(z.shape)} and {tuple(labels.shape)}"
        )


def mutual_information(
    z: Tensor,
    labels: Tensor,
    estimator: str = "mutual_info_classif",
    random_state: int = 0,
    minmax: bool = True,
    bins: int = 10,
) -> Tensor:
    """MI [d_sae] (float64, nats) between each feature of z [n, d_sae] and binary labels [n].

    "mutual_info_classif" (the authors'): scikit-learn's k-NN estimator on float32 codes scaled
    to [0, 1] per feature by `MinMaxScaler` when `minmax`. "binned": a plug-in estimate over
    `bins` equal-width bins of the min-max scaled feature; biased upwards by about
    (bins - 1) / (2n) nats per feature, which spreads the top-p mass over noise features. Only
    for comparison.
    """
    _check_codes(z, labels)
    if estimator == "mutual_info_classif":
        from sklearn.feature_selection import mutual_info_classif
        from sklearn.preprocessing import MinMaxScaler

        x = z.detach().float().cpu().numpy()
        if minmax:
            x = MinMaxScaler().fit_transform(x)
        y = labels.detach().long().cpu().numpy()
        # one k-NN estimate per feature, spread over processes (the noise is drawn before, so the
        # values are the same); a few features are not worth starting them
        jobs = torch.get_num_threads() if x.shape[1] >= PARALLEL_MI_FEATURES else None
        return torch.from_numpy(mutual_info_classif(x, y, random_state=random_state, n_jobs=jobs))
    if estimator == "binned":
        return _binned_mutual_information(z, labels, bins)
    raise InputError(f"unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")


def _binned_mutual_information(z: Tensor, labels: Tensor, bins: int) -> Tensor:
    """Plug-in MI over a [d_sae, bins, 2] count table; a constant feature has MI 0."""
    z = z.double()
    low, high = z.min(0).values, z.max(0).values
    scaled = (z - low) / (high - low).clamp(min=torch.finfo(z.dtype).tiny)
    binned = (scaled * bins).long().clamp(max=bins - 1)  # [n, d_sae]
    y = labels.long().to(z.device)
    cell = binned * 2 + y[:, None]  # joint cell per sample and feature
    counts = torch.zeros(z.shape[1], bins * 2, dtype=torch.float64, device=z.device)
    counts.scatter_add_(1, cell.T, torch.ones_like(cell.T, dtype=torch.float64))
    joint = (counts / z.shape[0]).view(-1, bins, 2)
    p_bin = joint.sum(2, keepdim=True)
    p_label = joint.sum(1, keepdim=True)
    ratio = joint / (p_bin * p_label).clamp(min=1e-300)
    terms = torch.where(joint > 0, joint * ratio.clamp(min=1e-300).log(), torch.zeros_like(joint))
    return terms.sum((1, 2)).clamp(min=0)


def balance_groups(z_C: Tensor, z_M: Tensor, seed: int = BALANCE_SEED) -> tuple[Tensor, Tensor]:  # noqa: N803
    """Cut the larger of z_C [n_c, d], z_M [n_m, d] to the smaller's size, as the authors'
    `equal_label_examples`: shuffle its row indices with numpy's `RandomState(seed)` and keep the
    first rows in that shuffled order."""
    n = min(len(z_C), len(z_M))
    if len(z_C) == len(z_M):
        return z_C, z_M
    keep = torch.from_numpy(np.random.RandomState(seed).permutation(max(len(z_C), len(z_M)))[:n])
    return (z_C[keep], z_M) if len(z_C) > len(z_M) else (z_C, z_M[keep])


# ---------------------------------------------------------------- selection


def decreasing_mi(mi: Tensor) -> np.ndarray:
    """Feature indices by decreasing MI, ties by index (a stable order)."""
    return np.argsort(-mi.double().numpy(), kind="stable")


def count_by_cumulative_mi(mi: Tensor, p: float) -> int:
    """How many features the walk by decreasing MI takes until the running sum exceeds p x total
    (the feature that crosses included; every feature if the sum never exceeds it)."""
    running = np.cumsum(mi.double().numpy()[decreasing_mi(mi)])  # sequential sums, as a loop adds
    crossed = np.flatnonzero(running > p * running[-1])
    return int(crossed[0]) + 1 if len(crossed) else len(running)


def split_by_expectation(mi: Tensor, expectation: Tensor, n_counted: int) -> tuple[Tensor, Tensor]:
    """(S_C, S_M): walk features by decreasing MI, expectation > 0 to S_C, < 0 to S_M, 0 skipped,
    until n_counted features are taken (or the features run out)."""
    order = decreasing_mi(mi)
    sign = np.sign(expectation.double().numpy()[order])
    taken = order[sign != 0][:n_counted]
    to_context = sign[sign != 0][:n_counted] > 0
    return torch.from_numpy(taken[to_context]), torch.from_numpy(taken[~to_context])


def weighted_mean(z: Tensor, weights: Tensor | None) -> Tensor:
    """sum_i w_i z_i [d_sae] of codes z [n, d_sae]; plain mean when `weights` is None."""
    if weights is None:
        return z.double().mean(0).float()
    if weights.shape != (z.shape[0],):
        raise InputError(f"weights must be [{z.shape[0]}] (one per prompt), got {tuple(weights.shape)}")
    return (weights.double()[:, None] * z.double()).sum(0).float()


def select_features(
    z_C: Tensor,  # noqa: N803
    z_M: Tensor,  # noqa: N803
    p: float = 0.07,
    weights_C: Tensor | None = None,  # noqa: N803
    weights_M: Tensor | None = None,  # noqa: N803
    estimator: str = "mutual_info_classif",
    balance: bool = False,
    random_state: int = 0,
    mi: Tensor | None = None,
) -> Selection:
    """SpARE feature selection (module docstring, steps 1-4) from codes z_C [n_c, d_sae] and
    z_M [n_m, d_sae] of the C and M prompts.

    `weights_C`, `weights_M`: per-prompt target weights (`confidence_weights`); None gives plain
    means (not the authors': use it only without the answer losses). `mi` [d_sae]: the MI of an
    earlier selection from the same codes and settings (`Selection.mi`), so a sweep over p
    estimates it once.
    """
    if not 0 < p <= 1:
        raise InputError(f"p must be in (0, 1], got {p}")
    if estimator not in ESTIMATORS:
        raise InputError(f"unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    if z_C.dim() != 2 or z_M.dim() != 2 or z_C.shape[1] != z_M.shape[1]:
        raise InputError(
            f"z_C and z_M must be [n, d_sae] with one d_sae; got {tuple(z_C.shape)}, {tuple(z_M.shape)}"
        )
    if len(z_C) == 0 or len(z_M) == 0:
        raise InputError("select_features needs at least one C and one M prompt")
    target_C, target_M = weighted_mean(z_C, weights_C), weighted_mean(z_M, weights_M)  # noqa: N806
    group_C, group_M = balance_groups(z_C, z_M) if balance else (z_C, z_M)  # noqa: N806
    codes = torch.cat([group_C, group_M]).float()
    labels = torch.cat([torch.ones(len(group_C)), torch.zeros(len(group_M))])
    if mi is None:
        mi = mutual_information(codes, labels, estimator, random_state)
    elif mi.shape != (z_C.shape[1],):
        raise InputError(f"mi must be [{z_C.shape[1]}] (one per feature), got {tuple(mi.shape)}")
    expectation = group_C.float().mean(0) - group_M.float().mean(0)
    n_counted = count_by_cumulative_mi(mi, p)
    S_C, S_M = split_by_expectation(mi, expectation, n_counted)  # noqa: N806
    return Selection(S_C, S_M, target_C, target_M, mi, expectation, n_counted, estimator, p)


def random_selection(
    selection: Selection, seed: int = 0, among: Literal["active", "all"] = "active"
) -> Selection:
    """The random-feature control of `selection`: as many features in S_C and in S_M, drawn
    uniformly without replacement, with the same targets rule (each drawn feature keeps its own
    target_C / target_M).

    `among="active"` draws S_C from the features with target_C > 0 and S_M from those with
    target_M > 0: a feature silent on every prompt of its group has a zero target and an edit
    that does nothing, which would make the control pass for free. "all" draws from every feature.
    S_C is drawn first; S_M comes from its pool without S_C, topped up from S_C only when the rest
    is too small (large p on a model whose groups fire the same features), so the control exists
    whenever SpARE's own selection does (`control_overlap` counts the shared features).
    """
    if among not in ("active", "all"):
        raise InputError(f"among must be 'active' or 'all', got {among!r}")
    generator = torch.Generator().manual_seed(seed)
    d_sae = len(selection.target_C)

    def pool(target: Tensor) -> Tensor:
        return torch.nonzero(
            (target > 0) if among == "active" else torch.ones(d_sae, dtype=torch.bool)
        ).flatten()

    def draw(candidates: Tensor, size: int) -> Tensor:
        return candidates[torch.randperm(len(candidates), generator=generator)[:size]]

    drawn = {}
    for name, target, size in (
        ("S_C", selection.target_C, len(selection.S_C)),
        ("S_M", selection.target_M, len(selection.S_M)),
    ):
        eligible = pool(target)
        if len(eligible) < size:
            raise InputError(
                f"random_selection: {name} needs {size} features, only {len(eligible)} are eligible"
            )
        taken = drawn.get("S_C", eligible[:0])
        rest = eligible[~torch.isin(eligible, taken)]
        chosen = draw(rest, size)
        if len(chosen) < size:
            chosen = torch.cat([chosen, draw(eligible[torch.isin(eligible, taken)], size - len(chosen))])
        drawn[name] = chosen
    return Selection(
        drawn["S_C"],
        drawn["S_M"],
        selection.target_C,
        selection.target_M,
        selection.mi,
        selection.expectation,
        selection.n_counted,
        "random",
        selection.p,
    )


def control_overlap(selection: Selection) -> int:
    """Features in both S_C and S_M (0 for SpARE's selections; see `random_selection`)."""
    return int(torch.isin(selection.S_C, selection.S_M).sum())


# ---------------------------------------------------------------- confidence weights


def confidence_weights(loss_context: Tensor, loss_memory: Tensor, follows: Direction) -> Tensor:
    """Per-prompt weights [n] of one behaviour group, summing to 1.

    A prompt answered from the context weighs L_mem / (L_ctx + L_mem), one answered from memory
    L_ctx / (L_ctx + L_mem): the more the model preferred the answer it gave, the more it counts.
    """
    if loss_context.shape != loss_memory.shape or loss_context.dim() != 1 or len(loss_context) == 0:
        raise InputError(
            f"losses must be two non-empty [n] tensors; got {tuple(loss_context.shape)}, {tuple(loss_memory.shape)}"
        )
    if follows not in DIRECTIONS:
        raise InputError(f"follows must be one of {DIRECTIONS}, got {follows!r}")
    total = loss_context.double() + loss_memory.double()
    raw = (loss_memory.double() if follows == "context" else loss_context.double()) / total
    return raw / raw.sum()


def answer_losses(
    model: ModelLike,
    prompts: Sequence[str],
    context_answers: Sequence[str],
    memory_answers: Sequence[str],
    template: str = ANSWER_TEMPLATE,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """(L_ctx, L_mem) [n]: the language-model loss of each `template.format(prompt=..., answer=...)`
    with the context's answer and with the memory answer.

    The loss is the mean next-token cross-entropy over every token of the text (prompt included,
    the tokenizer's special tokens added), as the authors' `model(input_ids, labels=input_ids)`.
    The default template ends the answer as the prompt format ends a demonstration. The two texts
    of a prompt share its tokens, which run once (`steerscope.text_losses.paired_text_losses`).
    """
    if not len(prompts) == len(context_answers) == len(memory_answers):
        raise InputError(
            f"got {len(prompts)} prompts, {len(context_answers)} context answers and "
            f"{len(memory_answers)} memory answers; each prompt needs one of each"
        )
    texts = [
        [template.format(prompt=p, answer=a) for p, a in zip(prompts, answers, strict=True)]
        for answers in (context_answers, memory_answers)
    ]
    return paired_text_losses(model, texts[0], texts[1], batch_size, progress)


# ---------------------------------------------------------------- the edit


def _roles(selection: Selection, direction: str, alpha: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(remove, add, target_remove, target_add) for a direction."""
    if direction == "memory":
        remove, add = selection.S_C, selection.S_M
        target_remove, target_add = selection.target_C, selection.target_M
    elif direction == "context":
        remove, add = selection.S_M, selection.S_C
        target_remove, target_add = selection.target_M, selection.target_C
    else:
        raise InputError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    return remove, add, alpha * target_remove[remove], alpha * target_add[add]


def spare_edit(
    sae: Any, selection: Selection, direction: Direction = "memory", alpha: float = 1.0, fused: bool = True
) -> Edit:
    """The steerscope edit applying SpARE at the last prompt token of each row (other tokens,
    pads and generated tokens untouched). `fused=False` uses the full-SAE reference path."""
    if alpha <= 0:
        raise InputError(f"alpha must be positive, got {alpha}")
    parts = sae_parts(sae)
    remove, add, target_remove, target_add = _roles(selection, direction, alpha)
    subset = SubsetEdit.gather(parts, remove, add, target_remove, target_add)
    moved: dict[tuple, Any] = {}

    def edit(act: Tensor, tokens: TokenInfo) -> Tensor | None:
        chosen = tokens.is_last_prompt
        if not bool(chosen.any()):
            return None
        key = (act.device, act.dtype)
        rows = act[chosen]
        if fused:
            if key not in moved:
                moved[key] = subset.to(act.device, act.dtype)
            new_rows = fused_edit(moved[key], rows)
        else:
            new_rows = reference_edit(parts, rows.float(), remove, add, target_remove, target_add).to(
                act.dtype
            )
        out = act.clone()
        out[chosen] = new_rows
        return out

    return edit


def spare_edits(
    saes_by_site: Mapping[str, Any],
    selections: Mapping[str, Selection],
    direction: Direction = "memory",
    alpha: float = 1.0,
    fused: bool = True,
) -> dict[str, Edit]:
    """{site: edit} for several layers at once, for `steerscope.intervene(model, ...)`."""
    missing = set(selections) - set(saes_by_site)
    if missing:
        raise InputError(f"no SAE for selected sites {sorted(missing)}; SAEs at: {sorted(saes_by_site)}")
    return {
        site: spare_edit(saes_by_site[site], selection, direction, alpha, fused)
        for site, selection in selections.items()
    }
