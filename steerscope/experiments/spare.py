"""`spare`: steer which source the model answers from (context or memory) by editing SAE
features at the last prompt token (SpARE, Zhao et al. 2025, arXiv 2410.15999), against a
difference-of-means edit at the same layers and position, with the settings of both chosen on a
dev split and the held-out facts touched once.

The memorised facts are split into held-out and the rest (the conflict data's own split), and the
rest by a hash of each record into `fit` (features, targets, mean difference) and `dev` (choosing
p, alpha and the layer set of SpARE, and the strength of difference of means, per direction; each
SpARE setting is also run as its random-feature control, so the grid shows which settings, if
any, move answers more than as many random features do). The
chosen settings then run once on the held-out facts beside no edit and a random-feature control
(as many features per layer and set, the same targets rule), with the C<->M transitions and 95%
bootstrap intervals. Conflict records, prompts and SAE training text come from the context, so
the same run serves a pretrained model, an organism and a user's NQ-Swap-style records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from steerscope.capture import capture
from steerscope.context import ExperimentContext
from steerscope.data.records import Conflict
from steerscope.data.user_data import content_fraction
from steerscope.errors import InputError
from steerscope.intervene import Edit, intervene
from steerscope.model import ModelLike
from steerscope.probes.intervals import mean_interval, paired_difference
from steerscope.probes.knowledge import (
    BehaviourCounts,
    LabelledExample,
    answer_greedy,
    behaviour_counts,
    known_conflicts,
    label_behaviour,
    says_any,
)
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.settings import Count, Layer, NonEmpty, Range
from steerscope.sites import Site
from steerscope.steering.apply import steering_edit
from steerscope.steering.choice import grid_rows, highest
from steerscope.steering.experiment_saes import SAESettings, experiment_saes
from steerscope.steering.sae import (
    encode_pre,
    saes_by_site,
)
from steerscope.steering.spare import (
    Selection,
    answer_losses,
    confidence_weights,
    control_overlap,
    random_selection,
    select_features,
    spare_edits,
)
from steerscope.steering.spare_planted import planted_results

DIRECTIONS = ("context", "memory")
CONDITIONS = (
    "no_edit",
    "spare_to_context",
    "spare_to_memory",
    "random_features_to_context",
    "random_features_to_memory",
    "diffmean_to_context",
    "diffmean_to_memory",
)
# the issue-14 bars: SpARE's gain toward its source (context: any, memory: at least 0.10) while
# the random-feature control moves neither exact-match rate by 0.05 or more
MIN_GAIN = {"context": 1e-6, "memory": 0.10}
MAX_CONTROL_MOVE = 0.05
SAE_REPORTED = ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "train_tokens", "train_windows")
MIN_PER_GROUP = 4  # labelled fit prompts needed in each of C and M


@dataclass
class SpareConfig(SAESettings, ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(
        n_candidates=120, ps=[0.03, 0.07, 0.2], alphas=[1.0, 2.0, 3.0], layer_set_sizes=[1, 2]
    )
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"n_candidates": (("conflicts", ""),)}
    n_candidates: Count | None = None  # None: every candidate fact of the conflict data
    demos: Annotated[int, Range(0)] = 3
    # of the memorised facts, touched once by the chosen settings
    held_out: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.3
    # of the other facts, for choosing settings; the rest fit features
    dev: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.35
    peak_layer: Layer | None = None  # None: n_layers // 2 (9 on Gemma 3 270M, the conflict-probe peak)
    # consecutive layers around the peak, one set per size
    layer_set_sizes: Annotated[list[Count], NonEmpty()] = field(default_factory=lambda: [1, 2, 4])
    # explicit sets instead of peak_layer / layer_set_sizes
    layer_sets: Annotated[list[Annotated[list[Layer], NonEmpty()]], NonEmpty()] | None = None
    # cumulative-MI share
    ps: Annotated[list[Annotated[float, Range(0, 1, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [0.01, 0.03, 0.07, 0.2, 0.5]
    )
    # target scale
    alphas: Annotated[list[Annotated[float, Range(0, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [1.0, 2.0, 3.0, 5.0]
    )
    # difference-of-means strengths
    strengths: Annotated[list[Annotated[float, Range(0, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0]
    )
    balance: bool = False  # cut the larger behaviour group before MI (the authors' option)
    # run the random-feature control at every SpARE dev setting too (doubles SpARE's dev grid), so
    # the grid shows whether any setting moves answers more than as many random features do
    dev_random_control: bool = True


def layer_sets(config: SpareConfig, n_layers: int) -> list[list[int]]:
    """The candidate layer sets: `layer_sets`, or for each size in `layer_set_sizes` that many
    consecutive layers from size // 2 below the peak (1: [9], 2: [8, 9], 4: [7, 8, 9, 10] on
    Gemma 3 270M; the authors edit 4 consecutive middle layers), shifted to fit the model."""
    if config.layer_sets is not None:
        sets = [sorted(set(s)) for s in config.layer_sets]
    else:
        peak = n_layers // 2 if config.peak_layer is None else config.peak_layer
        sets = []
        for size in config.layer_set_sizes:
            if size > n_layers:
                raise InputError(f"spare: a set of {size} layers does not fit a model of {n_layers}")
            start = min(max(0, peak - size // 2), n_layers - size)
            sets.append(list(range(start, start + size)))
    bad = [s for s in sets if not s or not all(0 <= layer < n_layers for layer in s)]
    if bad or not sets:
        raise InputError(f"spare: layer sets {sets} must be non-empty and in 0..{n_layers - 1}")
    return [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]


def dev_split(records: list[Conflict], dev: float, seed: int) -> tuple[list[Conflict], list[Conflict]]:
    """(fit, dev) by a salted hash of each record's content: independent of the held-out split
    (which may hash the same content) and of the records' order."""
    chosen = [content_fraction(r, salt=f"spare-dev/{seed}") < dev for r in records]
    return [r for r, c in zip(records, chosen, strict=True) if not c], [
        r for r, c in zip(records, chosen, strict=True) if c
    ]


def _answers(model: ModelLike, prompts: list[str], records: list[Conflict], edits: dict[str, Edit]) -> dict:
    """Per-prompt hits with the substitute (C) and the original (M) answer, and behaviour labels."""
    with intervene(model, edits):
        outputs = answer_greedy(model, prompts)
    pairs = list(zip(outputs, records, strict=True))
    return {
        "hit_c": [float(says_any(o, r.sub_answer)) for o, r in pairs],
        "hit_m": [float(says_any(o, r.org_answer)) for o, r in pairs],
        "labels": [label_behaviour(o, r.org_answer, r.sub_answer) for o, r in pairs],
        "outputs": outputs,
    }


def _rates(answers: dict) -> dict[str, float]:
    n = len(answers["hit_c"])
    return {"em_c": sum(answers["hit_c"]) / n, "em_m": sum(answers["hit_m"]) / n}


def _transitions(before: list, after: list) -> dict[str, int]:
    pairs = list(zip(before, after, strict=True))
    return {
        "C_to_M": sum(b == "C" and a == "M" for b, a in pairs),
        "M_to_C": sum(b == "M" and a == "C" for b, a in pairs),
        "C_kept": sum(b == "C" and a == "C" for b, a in pairs),
        "M_kept": sum(b == "M" and a == "M" for b, a in pairs),
    }


def _target_key(direction: str) -> str:
    """The exact-match rate a direction steers up: em_c toward context, em_m toward memory."""
    return "em_c" if direction == "context" else "em_m"


def _target_score(row: dict[str, Any]) -> float:
    """What a setting is chosen for: EM with the answer of the source it steers toward."""
    return row[_target_key(row["direction"])]


def _control_move(row: dict[str, Any], no_edit: dict[str, float]) -> float:
    """The random-feature control's largest change of either exact-match rate against no edit."""
    return max(abs(row["random_em_c"] - no_edit["em_c"]), abs(row["random_em_m"] - no_edit["em_m"]))


def _gain(row: dict[str, Any], no_edit: dict[str, float]) -> float:
    """A setting's change of exact match toward the source it steers to, against no edit."""
    return _target_score(row) - no_edit[_target_key(row["direction"])]


def _meets_bars(row: dict[str, Any], no_edit: dict[str, float]) -> bool:
    """SpARE moves answers toward its source by the issue's bar and its random control does not."""
    return (
        _gain(row, no_edit) >= MIN_GAIN[row["direction"]] - 1e-9
        and _control_move(row, no_edit) < MAX_CONTROL_MOVE
    )


def _best(rows: list[dict[str, Any]], direction: str, knob: str) -> dict[str, Any]:
    """The row of `direction` with the highest dev score; ties go to the gentler edit (smaller
    `knob`, then smaller p, then fewer layers)."""
    mine = [r for r in rows if r["direction"] == direction]
    return mine[highest(mine, _target_score, lambda r: (r[knob], r.get("p", 0), len(r["layers"])))]


def _site_names(layers: list[int]) -> list[str]:
    return [str(Site(layer, "resid_post")) for layer in layers]


@dataclass
class Facts:
    """The memorised facts split three ways, and the fit facts' labelled prompts with their weights."""

    tried: list[Conflict]
    memorised: list[Conflict]
    fit: list[Conflict]
    dev: list[Conflict]
    held: list[Conflict]
    behaviour: BehaviourCounts
    groups: dict[str, list[LabelledExample]]
    weights: dict[str, torch.Tensor]

    def prompts(self, label: str) -> list[str]:
        return [e.prompt for e in self.groups[label]]


@dataclass
class Features:
    """What the edits are built from: the trained SAEs, each p's feature selection per site, and
    the difference of means of the C and M residuals per site."""

    sites: list[str]
    trained: dict[str, Any]
    saes: dict[str, Any]
    selections: dict[float, dict[str, Selection]]
    diff: dict[str, torch.Tensor]
    seed: int

    def spare(self, setting: dict[str, Any], random: bool = False) -> dict[str, Edit]:
        """SpARE's edits of a setting (its `layers`, `p`, `direction`, `alpha`); `random`: its
        random-feature control (as many features per site, the same targets rule)."""
        chosen = {s: self.selections[setting["p"]][s] for s in _site_names(setting["layers"])}
        if random:
            chosen = {s: random_selection(sel, seed=self.seed) for s, sel in chosen.items()}
        return spare_edits(self.saes, chosen, setting["direction"], setting["alpha"])

    def diffmean(self, setting: dict[str, Any]) -> dict[str, Edit]:
        """Difference-of-means edits of a setting (its `layers`, `direction`, `strength`) at the
        last prompt token."""
        sign = setting["strength"] if setting["direction"] == "context" else -setting["strength"]
        return {
            s: steering_edit(self.diff[s], sign, "last_prompt", scale="absolute")
            for s in _site_names(setting["layers"])
        }

    def n_selected(self, setting: dict[str, Any], group: str) -> int:
        """Features of `group` (S_C or S_M) that a SpARE setting edits, over its layers."""
        return sum(
            len(getattr(self.selections[setting["p"]][s], group)) for s in _site_names(setting["layers"])
        )


@dataclass
class DevChoice:
    """The dev grids of SpARE and difference of means, the rows chosen per direction, and no edit."""

    no_edit: dict[str, float]
    spare_grid: list[dict[str, Any]]
    diffmean_grid: list[dict[str, Any]]
    spare: dict[str, dict[str, Any]]
    diffmean: dict[str, dict[str, Any]]


def split_facts(config: SpareConfig, context: ExperimentContext) -> Facts:
    """Phase 1: the memorised facts, split into fit, dev and held out; the fit facts' behaviour
    labels (C or M) and confidence weights (the MI targets)."""
    model, conflicts = context.model, context.data.need("conflicts")
    tried, facts = known_conflicts(
        model, conflicts, config.n_candidates, config.demos, config.seed, progress=True
    )
    rest, held = conflicts.split(facts, config.held_out, config.seed)
    fit, dev = dev_split(rest, config.dev, config.seed)
    if not held or not dev:
        raise InputError(
            f"spare: {len(facts)} memorised facts of {conflicts.source} give {len(held)} held-out and "
            f"{len(dev)} dev facts (held_out={config.held_out}, dev={config.dev}); both need some: "
            "give more records or raise the fractions"
        )
    behaviour = behaviour_counts(model, fit, conflicts, demos=config.demos, seed=config.seed, progress=True)
    groups = {label: [e for e in behaviour.labelled if e.label == label] for label in "CM"}
    if min(len(g) for g in groups.values()) < MIN_PER_GROUP:
        raise InputError(
            f"spare: too few labelled prompts to select features: {len(groups['C'])} C, "
            f"{len(groups['M'])} M (at least {MIN_PER_GROUP} each) from {len(fit)} fit facts of "
            f"{conflicts.source}"
        )
    context.used(
        "conflicts",
        candidates=len(tried),
        memorised=len(facts),
        fit=len(fit),
        dev=len(dev),
        held_out=len(held),
    )
    weights = {}
    for label, follows in (("C", "context"), ("M", "memory")):
        prompts, records = [e.prompt for e in groups[label]], [e.record for e in groups[label]]
        loss_ctx = answer_losses(model, prompts, [r.sub_answer[0] for r in records], progress=True)
        loss_mem = answer_losses(model, prompts, [r.org_answer[0] for r in records], progress=True)
        weights[label] = confidence_weights(loss_ctx, loss_mem, follows)
    return Facts(tried, facts, fit, dev, held, behaviour, groups, weights)


def train_site_saes(config: SpareConfig, context: ExperimentContext, sites: list[str]) -> dict[str, Any]:
    """Phase 2a: an SAE per site on the context's text (cached; its provenance recorded)."""
    return experiment_saes(context, sites, config.sae_train_settings(config.seed), config.demos)


def fit_features(
    config: SpareConfig, context: ExperimentContext, facts: Facts, sets: list[list[int]]
) -> Features:
    """Phase 2: SAEs at every layer of the sets, SpARE's features per p and site (by mutual
    information with the behaviour) and the difference of means, all from the fit facts."""
    model = context.model
    sites = _site_names(sorted({layer for s in sets for layer in s}))
    trained = train_site_saes(config, context, sites)
    saes = saes_by_site(trained)
    # One capture per label serves the SAE codes and the difference of means.
    resid_c = capture(model, facts.prompts("C"), sites, reduce="last", progress=False)
    resid_m = capture(model, facts.prompts("M"), sites, reduce="last", progress=False)
    codes_c = {site: encode_pre(saes[site], resid_c[site]) for site in sites}
    codes_m = {site: encode_pre(saes[site], resid_m[site]) for site in sites}
    selections: dict[float, dict[str, Selection]] = {p: {} for p in sorted(config.ps)}
    mi: dict[str, torch.Tensor] = {}  # estimated once per site, shared by every p
    for p, by_site in selections.items():
        for site in sites:
            by_site[site] = select_features(
                codes_c[site],
                codes_m[site],
                p,
                facts.weights["C"],
                facts.weights["M"],
                balance=config.balance,
                random_state=config.seed,
                mi=mi.get(site),
            )
            mi[site] = by_site[site].mi
    diff = {site: resid_c[site].mean(0) - resid_m[site].mean(0) for site in sites}
    return Features(sites, trained, saes, selections, diff, config.seed)


def _knowledge_prompts(config: SpareConfig, conflicts: Any, records: list[Conflict]) -> list[str]:
    return [conflicts.knowledge_prompt(r, "none", True, config.demos, config.seed) for r in records]


def choose_on_dev(
    config: SpareConfig, context: ExperimentContext, facts: Facts, features: Features, sets: list[list[int]]
) -> DevChoice:
    """Phase 3: SpARE's p, alpha and layers on the dev facts (each setting beside its random
    control), then difference of means' strength at the chosen layers, per direction."""
    model, conflicts = context.model, context.data.need("conflicts")
    prompts = _knowledge_prompts(config, conflicts, facts.dev)

    def rates(edits: dict[str, Edit]) -> dict[str, float]:
        return _rates(_answers(model, prompts, facts.dev, edits))

    no_edit = rates({})
    spare_settings = [
        {"method": "spare", "direction": direction, "layers": layers, "p": p, "alpha": alpha}
        for layers in sets
        for p in sorted(config.ps)
        for alpha in sorted(config.alphas)
        for direction in DIRECTIONS
    ]
    spare_grid = grid_rows(
        spare_settings,
        lambda s: {**s, "S_C": features.n_selected(s, "S_C"), "S_M": features.n_selected(s, "S_M")},
        lambda s: rates(features.spare(s)),
        (lambda s: rates(features.spare(s, random=True))) if config.dev_random_control else None,
        progress="spare dev grid",
    )
    spare = {d: _best(spare_grid, d, "alpha") for d in DIRECTIONS}
    diffmean_settings = [
        {"method": "diffmean", "direction": d, "layers": spare[d]["layers"], "strength": strength}
        for d in DIRECTIONS
        for strength in sorted(config.strengths)
    ]
    diffmean_grid = grid_rows(
        diffmean_settings, dict, lambda s: rates(features.diffmean(s)), progress="diff-of-means dev grid"
    )
    diffmean = {d: _best(diffmean_grid, d, "strength") for d in DIRECTIONS}
    return DevChoice(no_edit, spare_grid, diffmean_grid, spare, diffmean)


def measure_held_out(
    config: SpareConfig, context: ExperimentContext, facts: Facts, features: Features, chosen: DevChoice
) -> tuple[list[str], dict[str, dict]]:
    """Phase 4: the held-out facts, touched once: no edit and each chosen edit (with SpARE's
    random-feature control); returns the prompts and each condition's answers."""
    prompts = _knowledge_prompts(config, context.data.need("conflicts"), facts.held)
    edits: dict[str, dict[str, Edit]] = {"no_edit": {}}
    for d in DIRECTIONS:
        edits[f"spare_to_{d}"] = features.spare(chosen.spare[d])
        edits[f"random_features_to_{d}"] = features.spare(chosen.spare[d], random=True)
        edits[f"diffmean_to_{d}"] = features.diffmean(chosen.diffmean[d])
    answers = {
        name: _answers(context.model, prompts, facts.held, edits[name])
        for name in tqdm(CONDITIONS, desc="held-out conditions", leave=False)
    }
    return prompts, answers


def _selection_results(features: Features, chosen: DevChoice, balance: bool) -> dict[str, Any]:
    """The features each p selected, the top-MI features, and those the held-out edits used."""
    selections, seed = features.selections, features.seed

    def used(d: str) -> dict[str, Selection]:
        return {s: selections[chosen.spare[d]["p"]][s] for s in _site_names(chosen.spare[d]["layers"])}

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
    row: dict[str, Any] = {**_rates(got), "n": len(got["hit_c"])}
    for key, hits in (("em_c", "hit_c"), ("em_m", "hit_m")):
        row[f"{key}_ci95"] = list(mean_interval(got[hits], seed=seed))
        if base is not None:
            row[f"{key}_change"] = paired_difference(got[hits], base[hits], seed=seed)
    if base is not None:
        row["transitions"] = _transitions(base["labels"], got["labels"])
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
                if _meets_bars(r, chosen.no_edit) and r["direction"] == d
            ]
            for d in DIRECTIONS
        }
    for name in CONDITIONS:
        results[name] = _held_out_row(
            answers[name], None if name == "no_edit" else answers["no_edit"], config.seed
        )
    results["examples"] = [
        {
            "prompt_end": p.rsplit("\n\n", 1)[-1],
            "answer": " | ".join(r.org_answer),
            "substitute": " | ".join(r.sub_answer),
            **{n: answers[n]["outputs"][i] for n in CONDITIONS},
        }
        for i, (p, r) in enumerate(zip(prompts[:8], facts.held, strict=False))
    ]
    return results


@register(
    "spare",
    SpareConfig,
    "SpARE: SAE-feature edit steering context vs memory, chosen on dev, against difference of means",
    data=("conflicts", "text"),
)
def run(config: SpareConfig, context: ExperimentContext) -> Outcome:
    """Split the facts, fit features, choose on dev, touch the held-out facts once, report."""
    sets = layer_sets(config, context.model.anatomy.n_layers)
    facts = split_facts(config, context)
    features = fit_features(config, context, facts, sets)
    chosen = choose_on_dev(config, context, facts, features, sets)
    held_out = measure_held_out(config, context, facts, features, chosen)
    results = spare_results(config, context, facts, features, chosen, held_out)
    results.update(planted_results(context.model, features, chosen))  # {} but on a planted organism
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
            ("Settings chosen on dev", [{"condition": k, **v} for k, v in results["chosen"].items()]),
            ("Examples", results["examples"]),
        ],
    )


def _chosen_row(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {**{k: row[k] for k in keys}, "dev_em_c": row["em_c"], "dev_em_m": row["em_m"]}


def _held_out_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in CONDITIONS:
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
        key = _target_key(d)
        changes = "; ".join(
            f"{label} {_change(results[f'{method}_to_{d}'][f'{key}_change'])}"
            for method, label in (
                ("spare", "SpARE"),
                ("random_features", "random features"),
                ("diffmean", "diff-of-means"),
            )
        )
        lines.append(f"  to {d} ({key.upper()} {results['no_edit'][key]:.3f} without edit): {changes}")
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


def _change(change: dict[str, float]) -> str:
    return f"{change['delta']:+.3f} [{change['low']:+.2f}, {change['high']:+.2f}]"


def em_figure(results: dict[str, Any]) -> go.Figure:
    figure = go.Figure()
    for key, label in (("em_c", "EM with the context answer"), ("em_m", "EM with the memory answer")):
        values = [results[n][key] for n in CONDITIONS]
        figure.add_bar(
            x=list(CONDITIONS),
            y=values,
            name=label,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [results[n][f"{key}_ci95"][1] - v for n, v in zip(CONDITIONS, values, strict=True)],
                "arrayminus": [
                    v - results[n][f"{key}_ci95"][0] for n, v in zip(CONDITIONS, values, strict=True)
                ],
            },
        )
    figure.update_layout(
        title="Held-out conflicts: which source the answer follows (95% CI)", barmode="group"
    )
    return figure


def transitions_figure(results: dict[str, Any]) -> go.Figure:
    edited = [n for n in CONDITIONS if n != "no_edit"]
    figure = go.Figure()
    for key in ("C_to_M", "M_to_C"):
        figure.add_bar(
            x=edited, y=[results[n]["transitions"][key] for n in edited], name=key.replace("_", " ")
        )
    figure.update_layout(
        title="Behaviour changes against no edit on held-out facts (counts)", barmode="group"
    )
    return figure


def dev_grid_figures(results: dict[str, Any]) -> list[go.Figure]:
    """One heatmap per direction: dev EM toward that source over (layers, p) x alpha."""
    figures = []
    spare_rows = [r for r in results["dev_grid"] if r["method"] == "spare"]
    for direction in DIRECTIONS:
        rows = [r for r in spare_rows if r["direction"] == direction]
        alphas = sorted({r["alpha"] for r in rows})
        keys = list(dict.fromkeys((tuple(r["layers"]), r["p"]) for r in rows))
        score = {(tuple(r["layers"]), r["p"], r["alpha"]): _target_score(r) for r in rows}
        z = [[score[(layers, p, a)] for a in alphas] for layers, p in keys]
        figure = go.Figure(
            go.Heatmap(
                z=z,
                x=[f"alpha {a:g}" for a in alphas],
                y=[f"L{','.join(map(str, layers))} p={p:g}" for layers, p in keys],
                colorscale="Viridis",
            )
        )
        metric = _target_key(direction).upper()
        no_edit = results["dev_no_edit"][_target_key(direction)]
        figure.update_layout(title=f"Dev grid, SpARE to {direction}: {metric} (no edit {no_edit:.3f})")
        figures.append(figure)
    return figures


def dev_control_figure(results: dict[str, Any]) -> go.Figure:
    """Every SpARE dev setting: its gain toward the source it steers to against the largest move of
    its random-feature control; settings in the shaded band meet the issue's bars."""
    no_edit = results["dev_no_edit"]
    figure = go.Figure()
    for direction in DIRECTIONS:
        rows = [r for r in results["dev_grid"] if r["method"] == "spare" and r["direction"] == direction]
        figure.add_scatter(
            x=[_control_move(r, no_edit) for r in rows],
            y=[_gain(r, no_edit) for r in rows],
            mode="markers",
            name=f"to {direction}",
            text=[f"L{','.join(map(str, r['layers']))} p={r['p']:g} alpha={r['alpha']:g}" for r in rows],
        )
    figure.add_vrect(x0=0, x1=MAX_CONTROL_MOVE, fillcolor="green", opacity=0.1, line_width=0)
    figure.update_layout(
        title="Dev grid: SpARE's gain toward its source against its random control's largest EM move",
        xaxis_title="random control: largest |change| of EM_C or EM_M",
        yaxis_title="SpARE: change of EM toward the source",
    )
    return figure
