"""SpARE edit overhead: greedy generation with the fused SAE edit against no edit and the full SAE.

On the embedded Gemma 3 270M (fp32), generates 32 new tokens greedily for a batch of 8
knowledge-conflict prompts (`context_prompt(fact, demonstrations(fact, "none", 3), True,
substitute(fact))` for 8 facts spread over the fact table) with three variants, timed side by
side with interleaved repetitions (each repetition runs every variant once, in an order that
rotates between repetitions):

- `plain`: `model.generate`;
- `spare_fused`: inside `intervene(model, spare_edits(..., fused=True))` at L9.resid_post
  (towards memory, alpha 1): encodes and decodes only the selected features;
- `spare_full`: the same edit with `fused=False`, the full-SAE reference path.

The SAE is a small one trained for this benchmark (BatchTopK, expansion 8, k 64, one epoch over
about 8k tokens of the offline generic text; cached after the first run): its quality does not
matter for timing, its d_sae (8 x 640) does. The selection is built directly, not by `select_features`, so that its size is
fixed: codes at the last prompt token of the 8 conflict prompts (group C) and of the same 8 facts
with an agreeing context (group M), an arbitrary split for timing only; the 32 features with the
highest MI (`mutual_info_classif`) among those with a higher mean under C form S_C, likewise 32
for S_M, with plain-mean targets. This is the set `select_features` would return for the p at which
its top-MI prefix holds 32 of each.

Ratios are medians of per-repetition ratios. Checked once, outside the timing: the generated ids
of the two SpARE variants are identical, and whether the edit changes the output at all. Then the
edit alone (fused against full) on the 8 last-token L9 residual rows, in microseconds per row, at
one thread and at the run's thread count.

Run (`--quick` is a smoke run with 2 repetitions, 16 tokens):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/sae_edit.py --json runs/sae_edit.json
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/sae_edit.py --json /tmp/sae_edit.json --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sae_lens
import torch
import transformers
from interleaved import Variant, finish, median_ratio, time_interleaved
from torch import Tensor

import steerscope
from steerscope.capture import capture, tokenize_for_generate
from steerscope.data.defaults import natural_suite
from steerscope.data.facts import FACTS, Fact, context_prompt, demonstrations, substitute
from steerscope.kernels.sae_edit import SubsetEdit, fused_edit, reference_edit, sae_parts
from steerscope.model import Model
from steerscope.steering.sae import SAETrainSettings, last_token_codes, saes_by_site, train_saes
from steerscope.steering.spare import Selection, mutual_information, spare_edits

SITE = "L9.resid_post"
BATCH = 8
N_PER_SIDE = 32  # features in S_C and in S_M
ALPHA = 1.0
SAE_SETTINGS = SAETrainSettings(k=64, epochs=1.0, max_tokens=8192, ce_windows=2)
MICRO_CALLS = 200  # edit calls per timed micro repetition


def benchmark_facts() -> list[Fact]:
    """8 facts spread over the table (it is grouped by relation), so several relations appear."""
    return list(FACTS[:: len(FACTS) // BATCH][:BATCH])


def conflict_prompts(facts: list[Fact], conflict: bool = True) -> list[str]:
    """Context prompts with 3 plain demonstrations; with `conflict`, the context states a substitute."""
    return [
        context_prompt(f, demonstrations(f, "none", 3), conflict, substitute(f) if conflict else None)
        for f in facts
    ]


def generation_kwargs(n_tokens: int) -> dict[str, Any]:
    return {"min_new_tokens": n_tokens, "max_new_tokens": n_tokens, "do_sample": False}


def fixed_selection(z_C: Tensor, z_M: Tensor, n_per_side: int) -> Selection:  # noqa: N803
    """A Selection with the `n_per_side` top-MI features on each side, from codes [n, d_sae]."""
    labels = torch.cat([torch.ones(len(z_C)), torch.zeros(len(z_M))])
    mi = mutual_information(torch.cat([z_C, z_M]).float(), labels)
    mean_C, mean_M = z_C.float().mean(0), z_M.float().mean(0)  # noqa: N806
    order = mi.argsort(descending=True)
    to_context = mean_C[order] > mean_M[order]
    S_C, S_M = order[to_context][:n_per_side], order[~to_context][:n_per_side]  # noqa: N806
    if len(S_C) < n_per_side or len(S_M) < n_per_side:
        raise ValueError(f"only {len(S_C)} C-side and {len(S_M)} M-side features, wanted {n_per_side}")
    return Selection(
        S_C, S_M, mean_C, mean_M, mi, mean_C - mean_M, 2 * n_per_side, "mutual_info_classif", 1.0
    )


def generation_timing(
    model: Model, saes: dict[str, Any], selection: Selection, prompts: list[str], reps: int, n_tokens: int
) -> dict[str, Any]:
    """Time plain / fused / full generation; check the two SpARE variants agree on the ids."""
    inputs = tokenize_for_generate(model, prompts)
    fused = spare_edits(saes, {SITE: selection}, "memory", ALPHA, fused=True)
    full = spare_edits(saes, {SITE: selection}, "memory", ALPHA, fused=False)

    def plain() -> Tensor:
        return model.generate(**inputs, **generation_kwargs(n_tokens))

    def edited(edits: dict[str, Any]) -> Variant:
        def run() -> Tensor:
            with steerscope.intervene(model, edits):
                return model.generate(**inputs, **generation_kwargs(n_tokens))

        return run

    variants = {"plain": plain, "spare_fused": edited(fused), "spare_full": edited(full)}
    ids = {name: run() for name, run in variants.items()}
    seconds, _ = time_interleaved(variants, reps)
    return {
        "median_seconds": {name: round(statistics.median(s), 4) for name, s in seconds.items()},
        "ratio_spare_vs_plain": round(median_ratio(seconds, "spare_fused", "plain"), 4),
        "ratio_full_vs_fused": round(median_ratio(seconds, "spare_full", "spare_fused"), 4),
        "ratio_full_vs_plain": round(median_ratio(seconds, "spare_full", "plain"), 4),
        "outputs_equal_fused_vs_full": torch.equal(ids["spare_fused"], ids["spare_full"]),
        "spare_changes_output": not torch.equal(ids["spare_fused"], ids["plain"]),
        "seconds": {name: [round(t, 4) for t in s] for name, s in seconds.items()},
    }


def edit_functions(sae: Any, selection: Selection, rows: Tensor) -> dict[str, Callable[[], Tensor]]:
    """The edit alone on rows [n, d_model] towards memory (remove S_C, add S_M): fused and full."""
    parts = sae_parts(sae)
    remove, add = selection.S_C, selection.S_M
    target_remove, target_add = ALPHA * selection.target_C[remove], ALPHA * selection.target_M[add]
    subset = SubsetEdit.gather(parts, remove, add, target_remove, target_add)
    return {
        "fused": lambda: fused_edit(subset, rows),
        "full": lambda: reference_edit(parts, rows, remove, add, target_remove, target_add),
    }


def edit_timing(
    edits: dict[str, Callable[[], Tensor]], n_rows: int, reps: int, threads: int
) -> dict[str, Any]:
    """Microseconds per row of each edit alone, at `threads` torch threads (restored afterwards)."""

    def repeat(edit: Callable[[], Tensor]) -> Variant:
        def run() -> None:
            for _ in range(MICRO_CALLS):
                edit()

        return run

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds, _ = time_interleaved({name: repeat(edit) for name, edit in edits.items()}, reps)
    finally:
        torch.set_num_threads(before)
    return {
        "us_per_row": {
            name: round(statistics.median(s) / (MICRO_CALLS * n_rows) * 1e6, 3) for name, s in seconds.items()
        },
        "ratio_full_vs_fused": round(median_ratio(seconds, "full", "fused"), 3),
    }


def edit_micro(sae: Any, selection: Selection, rows: Tensor, reps: int) -> dict[str, Any]:
    """The edit alone on rows [n, d_model]: agreement, size, and time at 1 thread and at torch's count.

    One thread is the fair figure for 8 rows: with two threads on busy cores, OpenMP's barrier
    waits for a descheduled peer and swamps a few-microsecond kernel.
    """
    edits = edit_functions(sae, selection, rows)
    edited, reference = edits["fused"](), edits["full"]()
    result: dict[str, Any] = {
        "rows": rows.shape[0],
        "calls_per_repetition": MICRO_CALLS,
        "max_abs_difference": float((edited - reference).abs().max()),
        "edit_norm_mean": round(float((edited - rows).norm(dim=-1).mean()), 2),
        "residual_norm_mean": round(float(rows.norm(dim=-1).mean()), 2),
    }
    for threads in sorted({1, torch.get_num_threads()}):
        result[f"threads_{threads}"] = edit_timing(edits, rows.shape[0], reps, threads)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repetitions, 16 tokens")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    reps, n_tokens = (2, 16) if args.quick else (args.reps, 32)

    load_at_start = os.getloadavg()[0]
    model = steerscope.load()
    # Training needs gradients, so it runs before inference mode.
    trained = train_saes(model, [SITE], SAE_SETTINGS, natural_suite().text.texts())
    saes = saes_by_site(trained)
    facts = benchmark_facts()
    prompts = conflict_prompts(facts)
    with torch.inference_mode():
        z_C = last_token_codes(model, saes, prompts)[SITE]  # noqa: N806
        z_M = last_token_codes(model, saes, conflict_prompts(facts, conflict=False))[SITE]  # noqa: N806
        selection = fixed_selection(z_C, z_M, N_PER_SIDE)
        rows = capture(model, prompts, SITE, reduce="last", progress=False)[SITE].float()
        generation = generation_timing(model, saes, selection, prompts, reps, n_tokens)
        micro = edit_micro(saes[SITE], selection, rows, reps)
    results = {
        "model": model.source,
        "site": SITE,
        "batch": BATCH,
        "n_new_tokens": n_tokens,
        "reps": reps,
        "threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sae_lens": sae_lens.__version__,
        },
        "sae": {
            "d_sae": int(saes[SITE].cfg.d_sae),
            "settings": trained[SITE].report["settings"],
            "train_tokens": trained[SITE].report["train_tokens"],
            "fvu": round(trained[SITE].report["fvu"], 4),
            "l0": round(trained[SITE].report["l0"], 1),
            "trained_now": trained[SITE].built,
        },
        "selection": {"S_C": len(selection.S_C), "S_M": len(selection.S_M), "alpha": ALPHA},
        "notes": (
            "Times are seconds per greedy generate call of the whole batch, warm-up excluded; ratios "
            "are medians of per-repetition ratios. The selection is fixed at 32+32 features from an "
            "arbitrary split (conflict vs agreeing context), for timing only. edit_micro times "
            "fused_edit and reference_edit alone on the last-token L9 rows of the batch (no hook, "
            "no clone), in microseconds per row, at 1 thread and at the run's thread count; a "
            "generate call runs the edit once, at prefill (later steps have no last prompt token)."
        ),
        **generation,
        "edit_micro": micro,
    }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
