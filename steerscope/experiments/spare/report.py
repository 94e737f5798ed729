"""What spare writes: the results (splits, SAEs, selections, dev grids and choices, held-out rows with
intervals and transitions), the tables and the summary."""

from __future__ import annotations

from typing import Any

from steerscope.context import ExperimentContext
from steerscope.experiments.spare.config import DIRECTIONS, SpareConfig, reported_conditions
from steerscope.experiments.spare.figures import (
    dev_control_figure,
    dev_grid_figures,
    em_figure,
    transitions_figure,
)
from steerscope.experiments.spare.phases import DevChoice, Facts, Features, site_names
from steerscope.experiments.spare.scores import (
    MAX_CONTROL_MOVE,
    exact_match_rates,
    meets_bars,
    target_key,
    transitions,
)
from steerscope.probes.intervals import mean_interval, paired_difference
from steerscope.registry import Outcome
from steerscope.steering.spare import Selection, control_overlap, random_selection

SAE_REPORTED = ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "train_tokens", "train_windows")


def _selection_results(features: Features, chosen: DevChoice, balance: bool) -> dict[str, Any]:
    """The features each p selected, the top-MI features, and those the held-out edits used."""
    selections, seed = features.selections, features.seed

    def used(d: str) -> dict[str, Selection]:
        return {s: selections[chosen.spare[d]["p"]][s] for s in site_names(chosen.spare[d]["layers"])}

    return {
        "selection": {
            "estimator": "mutual_info_classif",
            "targets": "confidence_weighted",
            "balance": balance,
            "by_p": {
                str(p): {s: sel.summary() for s, sel in by_site.items()} for p, by_site in selections.items()
            },
            # the features of highest MI per site, [feature, mi]: what every p's walk starts from
            "top_mi": {s: sel.top_mi() for s, sel in next(iter(selections.values())).items()},
        },
        # features the random control put in both S_C and S_M, by direction and site (0 unless its
        # groups' active features run short: see steering.spare.random_selection)
        "random_control_overlap": {
            d: {s: control_overlap(random_selection(sel, seed=seed)) for s, sel in used(d).items()}
            for d in DIRECTIONS
        },
        # the features the held-out edits used, by direction and site (the random control's too)
        "held_out_features": {
            d: {
                s: {"spare": sel.features(), "random": random_selection(sel, seed=seed).features()}
                for s, sel in used(d).items()
            }
            for d in DIRECTIONS
        },
    }


def _held_out_row(got: dict, base: dict | None, seed: int) -> dict[str, Any]:
    """A condition's exact-match rates with bootstrap intervals, and (against no edit, `base`) the
    paired changes and behaviour transitions."""
    row: dict[str, Any] = {**exact_match_rates(got), "n": len(got["hit_c"])}
    for key, hits in (("em_c", "hit_c"), ("em_m", "hit_m")):
        row[f"{key}_ci95"] = list(mean_interval(got[hits], seed=seed))
        if base is not None:
            row[f"{key}_change"] = paired_difference(got[hits], base[hits], seed=seed)
    if base is not None:
        row["transitions"] = transitions(base["labels"], got["labels"])
    return row


def spare_results(
    config: SpareConfig,
    context: ExperimentContext,
    facts: Facts,
    features: Features,
    chosen: DevChoice,
    held_out: tuple[list[str], dict[str, dict]],
) -> dict[str, Any]:
    """Phase 5: the results: splits, SAEs, selections, dev grids and choices, held-out rows, examples."""
    prompts, answers = held_out
    results: dict[str, Any] = {
        "model": context.model.source,
        "n_memorised": len(facts.memorised),
        "n_fit_facts": len(facts.fit),
        "n_dev_facts": len(facts.dev),
        "n_heldout_facts": len(facts.held),
        "behaviour_counts": facts.behaviour.counts,
        "n_labelled": {label: len(g) for label, g in facts.groups.items()},
        "sae": [
            {"site": s, **{k: features.trained[s].report[k] for k in SAE_REPORTED}} for s in features.sites
        ],
        **_selection_results(features, chosen, config.balance),
        "chosen": {
            **{f"spare_to_{d}": _chosen_row(chosen.spare[d], ("layers", "p", "alpha")) for d in DIRECTIONS},
            **{
                f"diffmean_to_{d}": _chosen_row(chosen.diffmean[d], ("layers", "strength"))
                for d in DIRECTIONS
            },
        },
        "dev_no_edit": chosen.no_edit,
        "dev_grid": chosen.spare_grid + chosen.diffmean_grid,
    }
    if config.dev_random_control:
        results["dev_settings_meeting_bars"] = {
            d: [
                _chosen_row(r, ("layers", "p", "alpha"))
                for r in chosen.spare_grid
                if meets_bars(r, chosen.no_edit) and r["direction"] == d
            ]
            for d in DIRECTIONS
        }
    if config.control_rule:
        results["chosen_controlled"] = {
            f"spare_controlled_to_{d}": None if row is None else _chosen_row(row, ("layers", "p", "alpha"))
            for d, row in chosen.controlled.items()
        }
    for name in reported_conditions(answers):
        results[name] = _held_out_row(
            answers[name], None if name == "no_edit" else answers["no_edit"], config.seed
        )
    results["examples"] = [
        {
            "prompt_end": p.rsplit("\n\n", 1)[-1],
            "answer": " | ".join(r.org_answer),
            "substitute": " | ".join(r.sub_answer),
            **{n: answers[n]["outputs"][i] for n in reported_conditions(answers)},
        }
        for i, (p, r) in enumerate(zip(prompts[:8], facts.held, strict=False))
    ]
    return results


def _chosen_row(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {**{k: row[k] for k in keys}, "dev_em_c": row["em_c"], "dev_em_m": row["em_m"]}


def _held_out_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in reported_conditions(results):
        r = results[name]
        t = r.get("transitions", {})
        rows.append(
            {
                "condition": name,
                "em_c": f"{r['em_c']:.3f} [{r['em_c_ci95'][0]:.2f}, {r['em_c_ci95'][1]:.2f}]",
                "em_m": f"{r['em_m']:.3f} [{r['em_m_ci95'][0]:.2f}, {r['em_m_ci95'][1]:.2f}]",
                "C_to_M": t.get("C_to_M", ""),
                "M_to_C": t.get("M_to_C", ""),
                "n": r["n"],
            }
        )
    return rows


def _summary(results: dict[str, Any]) -> str:
    """Held-out: each edit's change of exact match toward the source it steers to, against no edit,
    with its interval; then what dev chose and how many dev settings beat their random control."""
    sites = ", ".join(s["site"].removesuffix(".resid_post") for s in results["sae"])
    lines = [
        f"{results['model']}: {results['n_memorised']} memorised facts ({results['n_fit_facts']} fit, "
        f"{results['n_dev_facts']} dev, {results['n_heldout_facts']} held out); SAEs at {sites}, FVU "
        + ", ".join(f"{s['fvu']:.2f}" for s in results["sae"]),
        "held-out change of exact match toward the source steered to, against no edit (95% interval):",
    ]
    for d in DIRECTIONS:
        key = target_key(d)
        changes = "; ".join(
            f"{label} {_change(results[f'{method}_to_{d}'][f'{key}_change'])}"
            for method, label in (
                ("spare", "SpARE"),
                ("random_features", "random features"),
                ("diffmean", "diff-of-means"),
            )
        )
        lines.append(f"  to {d} ({key.upper()} {results['no_edit'][key]:.3f} without edit): {changes}")
    if "chosen_controlled" in results:
        lines.append(_controlled_line(results))
    lines.append(
        "chosen on dev: "
        + "; ".join(
            f"{name} " + " ".join(f"{k}={v}" for k, v in row.items() if not k.startswith("dev_"))
            for name, row in results["chosen"].items()
        )
    )
    if "dev_settings_meeting_bars" in results:
        n_settings = {
            d: sum(r["method"] == "spare" and r["direction"] == d for r in results["dev_grid"])
            for d in DIRECTIONS
        }
        lines.append(
            "dev settings where SpARE gains toward its source while its random control moves EM by "
            f"< {MAX_CONTROL_MOVE}: "
            + ", ".join(
                f"to {d} {len(results['dev_settings_meeting_bars'][d])} of {n_settings[d]}"
                for d in DIRECTIONS
            )
        )
    return "\n".join(lines)


def _controlled_line(results: dict[str, Any]) -> str:
    """The control-respecting rule's held-out changes, or that no dev setting passed it."""
    parts = []
    for d in DIRECTIONS:
        if results["chosen_controlled"][f"spare_controlled_to_{d}"] is None:
            parts.append(f"to {d}: no dev setting's random control stays within {MAX_CONTROL_MOVE}")
            continue
        key = target_key(d)
        spare, control = results[f"spare_controlled_to_{d}"], results[f"random_features_controlled_to_{d}"]
        parts.append(
            f"to {d}: SpARE {_change(spare[f'{key}_change'])}; random features {_change(control[f'{key}_change'])}"
        )
    return f"control-respecting rule (dev random control moves EM < {MAX_CONTROL_MOVE}): " + "; ".join(parts)


def _change(change: dict[str, float]) -> str:
    return f"{change['delta']:+.3f} [{change['low']:+.2f}, {change['high']:+.2f}]"


def outcome(config: SpareConfig, results: dict[str, Any]) -> Outcome:
    """The run's outcome: the results with the summary, figures and tables drawn from them."""
    return Outcome(
        results=results,
        summary=_summary(results),
        figures=[
            em_figure(results),
            transitions_figure(results),
            *dev_grid_figures(results),
            *([dev_control_figure(results)] if config.dev_random_control else []),
        ],
        tables=[
            ("Exact match on held-out conflicts (95% bootstrap intervals)", _held_out_table(results)),
            (
                "Settings chosen on dev",
                [
                    {"condition": k, **(v or {"layers": "no setting passes the control"})}
                    for k, v in (results["chosen"] | results.get("chosen_controlled", {})).items()
                ],
            ),
            ("Examples", results["examples"]),
        ],
    )
