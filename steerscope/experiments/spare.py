"""`spare`: steer which source the model answers from (context or memory) by editing SAE
features at the last prompt token (SpARE, Zhao et al. 2025, arXiv 2410.15999), against a
difference-of-means edit at the same layers and position, on held-out facts. Conflict records,
prompts and SAE training text come from the context, so the same run serves a pretrained model,
an organism and a user's NQ-Swap-style records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import plotly.graph_objects as go

from steerscope.capture import capture
from steerscope.context import ExperimentContext
from steerscope.data.records import Conflict
from steerscope.errors import InputError
from steerscope.intervene import Edit, intervene
from steerscope.probes.knowledge import (
    answer_greedy,
    behaviour_counts,
    known_conflicts,
    label_behaviour,
    says_any,
)
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.sites import Site
from steerscope.steering.apply import steering_edit
from steerscope.steering.sae import SAETrainSettings, saes_by_site, train_saes, training_texts
from steerscope.steering.spare import last_token_codes, select_features, spare_edits

SAE_REPORTED = ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "train_tokens", "train_windows")
CONDITIONS = ("no_edit", "spare_to_context", "spare_to_memory", "diffmean_to_context", "diffmean_to_memory")


@dataclass
class SpareConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_candidates=120)
    RECORD_COUNTS: ClassVar[dict[str, tuple[str, str]]] = {"n_candidates": ("conflicts", "")}
    n_candidates: int | None = None  # None: every candidate fact of the conflict data
    layers: list[int] | None = None  # None: `default_layers` (quick: the middle layer only)
    demos: int = 3
    held_out: float = 0.3
    p: float = 0.1  # cumulative-MI fraction kept
    alpha: float = 1.0  # target scale for the SpARE edit
    sae_k: int | None = None  # None: a tenth of d_model
    sae_expansion: int = 8
    sae_max_tokens: int | None = 1_100_000  # SAE training tokens (as `steerscope build sae:`)
    sae_batch_size: int = 2048


def default_layers(n_layers: int) -> list[int]:
    """A third, half and two thirds of the depth, without repeats (Gemma 3 270M: 6, 9, 12)."""
    return sorted({n_layers // 3, n_layers // 2, 2 * n_layers // 3})


def _layers(config: SpareConfig, n_layers: int) -> list[int]:
    if config.layers is None:
        return [n_layers // 2] if config.quick else default_layers(n_layers)
    layers = list(config.layers)
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise ValueError(f"spare: layers {layers} must be non-empty and in 0..{n_layers - 1} for this model")
    return layers


def _exact_match(model: Any, prompts: list[str], records: list[Conflict], edits: dict[str, Edit]) -> dict:
    """Exact match of the answers with the substitute (EM_C) and the original (EM_M), any accepted
    answer counting, and each answer's behaviour label."""
    with intervene(model, edits):
        outputs = answer_greedy(model, prompts)
    labels = [label_behaviour(o, r.org_answer, r.sub_answer) for o, r in zip(outputs, records, strict=True)]
    n = len(prompts)
    return {
        "em_c": sum(says_any(o, r.sub_answer) for o, r in zip(outputs, records, strict=True)) / n,
        "em_m": sum(says_any(o, r.org_answer) for o, r in zip(outputs, records, strict=True)) / n,
        "n": n,
        "labels": labels,
        "outputs": outputs,
    }


def _transitions(before: list, after: list) -> dict[str, int]:
    pairs = list(zip(before, after, strict=True))
    return {
        "C_to_M": sum(b == "C" and a == "M" for b, a in pairs),
        "M_to_C": sum(b == "M" and a == "C" for b, a in pairs),
        "C_kept": sum(b == "C" and a == "C" for b, a in pairs),
        "M_kept": sum(b == "M" and a == "M" for b, a in pairs),
    }


@register(
    "spare",
    SpareConfig,
    "SpARE: SAE-feature edit steering context vs memory, against difference of means",
    data=("conflicts", "text"),
)
def run(config: SpareConfig, context: ExperimentContext) -> Outcome:
    model, conflicts = context.model, context.data.need("conflicts")
    layers = _layers(config, model.anatomy.n_layers)
    sae_k = config.sae_k or max(1, model.anatomy.d_model // 10)
    tried, facts = known_conflicts(model, conflicts, config.n_candidates, config.demos, config.seed)
    train, held = conflicts.split(facts, config.held_out, config.seed)
    if not held:
        raise InputError(
            f"spare: none of the {len(facts)} memorised facts of {conflicts.source} falls in the held-out "
            f"split (held_out={config.held_out}); give more records or raise held_out"
        )
    behaviour = behaviour_counts(model, train, conflicts, demos=config.demos, seed=config.seed)
    labelled = behaviour.labelled
    c_prompts = [e.prompt for e in labelled if e.label == "C"]
    m_prompts = [e.prompt for e in labelled if e.label == "M"]
    if len(c_prompts) < 4 or len(m_prompts) < 4:
        raise InputError(
            f"spare: too few labelled prompts to select features: {len(c_prompts)} C, {len(m_prompts)} M "
            f"(at least 4 each) from {len(train)} memorised training facts of {conflicts.source}"
        )
    context.used(
        "conflicts", candidates=len(tried), memorised=len(facts), train=len(train), held_out=len(held)
    )

    sites = [str(Site(layer, "resid_post")) for layer in layers]
    settings = SAETrainSettings(
        expansion=config.sae_expansion,
        k=sae_k,
        max_tokens=config.sae_max_tokens,
        batch_size=config.sae_batch_size,
        seed=config.seed,
    )
    trained = train_saes(model, sites, settings, training_texts(context.data, config.demos))
    context.used("text", sae_train_windows=trained[sites[0]].report["train_windows"])
    saes = saes_by_site(trained)
    codes_c = last_token_codes(model, saes, c_prompts)
    codes_m = last_token_codes(model, saes, m_prompts)
    selections = {site: select_features(codes_c[site], codes_m[site], p=config.p) for site in sites}

    resid_c = capture(model, c_prompts, sites, reduce="last", progress=False)
    resid_m = capture(model, m_prompts, sites, reduce="last", progress=False)
    diff = {site: resid_c[site].mean(0) - resid_m[site].mean(0) for site in sites}

    def diffmean(sign: float) -> dict[str, Edit]:
        return {s: steering_edit(d, sign, "last_prompt", scale="absolute") for s, d in diff.items()}

    prompts = [conflicts.knowledge_prompt(r, "none", True, config.demos, config.seed) for r in held]
    edits = {
        "no_edit": {},
        "spare_to_context": spare_edits(saes, selections, "context", config.alpha),
        "spare_to_memory": spare_edits(saes, selections, "memory", config.alpha),
        "diffmean_to_context": diffmean(1.0),
        "diffmean_to_memory": diffmean(-1.0),
    }
    outcomes = {name: _exact_match(model, prompts, held, e) for name, e in edits.items()}
    baseline_labels = outcomes["no_edit"]["labels"]
    results: dict[str, Any] = {
        "model": model.source,
        "n_memorised": len(facts),
        "n_train_facts": len(train),
        "n_heldout_facts": len(held),
        "behaviour_counts": behaviour.counts,
        "n_labelled": {"C": len(c_prompts), "M": len(m_prompts)},
        "sae": [
            {"layer": int(Site.parse(s).layer), **{k: trained[s].report[k] for k in SAE_REPORTED}}
            for s in sites
        ],
        "selected_features": {s: {"S_C": len(sel.S_C), "S_M": len(sel.S_M)} for s, sel in selections.items()},
        "settings": {"p": config.p, "alpha": config.alpha, "layers": layers, "sae_k": sae_k},
    }
    for name, outcome in outcomes.items():
        results[name] = {k: outcome[k] for k in ("em_c", "em_m", "n")}
        if name != "no_edit":
            results[name]["transitions"] = _transitions(baseline_labels, outcome["labels"])
    results["examples"] = [
        {
            "prompt_end": p.rsplit("\n\n", 1)[-1],
            "answer": " | ".join(r.org_answer),
            "substitute": " | ".join(r.sub_answer),
            **{n: outcomes[n]["outputs"][i] for n in CONDITIONS},
        }
        for i, (p, r) in enumerate(zip(prompts[:8], held, strict=False))
    ]
    return Outcome(
        results=results,
        summary=_summary(results),
        figures=[em_figure(results), transitions_figure(results)],
        tables=[
            (
                "Exact match on held-out conflicts",
                [{"condition": n, **{k: results[n][k] for k in ("em_c", "em_m", "n")}} for n in CONDITIONS],
            ),
            ("Examples", results["examples"]),
        ],
    )


def _summary(results: dict[str, Any]) -> str:
    lines = [
        f"{results['model']}: {results['n_memorised']} memorised facts ({results['n_train_facts']} train, "
        f"{results['n_heldout_facts']} held out); labelled train prompts {results['n_labelled']}",
        "SAEs: " + ", ".join(f"L{s['layer']} FVU {s['fvu']:.3f} L0 {s['l0']:.0f}" for s in results["sae"]),
    ]
    for name in CONDITIONS:
        r = results[name]
        lines.append(f"{name:<20} EM_C {r['em_c']:.3f}  EM_M {r['em_m']:.3f}  (n={r['n']})")
    return "\n".join(lines)


def em_figure(results: dict[str, Any]) -> go.Figure:
    figure = go.Figure()
    for key, label in (("em_c", "EM with the context answer"), ("em_m", "EM with the memory answer")):
        figure.add_bar(x=list(CONDITIONS), y=[results[n][key] for n in CONDITIONS], name=label)
    figure.update_layout(title="Held-out conflicts: which source the answer follows", barmode="group")
    return figure


def transitions_figure(results: dict[str, Any]) -> go.Figure:
    edited = [n for n in CONDITIONS if n != "no_edit"]
    figure = go.Figure()
    for key in ("C_to_M", "M_to_C"):
        figure.add_bar(
            x=edited, y=[results[n]["transitions"][key] for n in edited], name=key.replace("_", " ")
        )
    figure.update_layout(title="Behaviour changes against no edit (counts)", barmode="group")
    return figure
