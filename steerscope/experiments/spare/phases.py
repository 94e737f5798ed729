"""spare's phases: split the facts, fit SAE features and the difference of means, choose on dev, run
the held-out facts once. Each takes the config and the context and returns data, so a notebook can
run them one by one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from steerscope.capture import capture
from steerscope.context import ExperimentContext
from steerscope.data.records import Conflict
from steerscope.data.user_data import content_fraction
from steerscope.errors import InputError
from steerscope.experiments.spare.config import DIRECTIONS, SpareConfig
from steerscope.experiments.spare.scores import (
    MAX_CONTROL_MOVE,
    control_move,
    exact_match_rates,
    target_score,
)
from steerscope.intervene import Edit, intervene
from steerscope.model import ModelLike, as_model
from steerscope.prefix_cache import CachedPrompts, cache_all_but_last
from steerscope.probes.knowledge import (
    ANSWER_BATCH,
    ANSWER_TOKENS,
    BehaviourCounts,
    LabelledExample,
    answer_greedy,
    answer_greedy_in_settings,
    behaviour_counts,
    known_conflicts,
    label_behaviour,
    says_any,
)
from steerscope.sites import Site
from steerscope.steering.apply import steering_edit
from steerscope.steering.choice import grid_rows, highest
from steerscope.steering.experiment_saes import experiment_saes
from steerscope.steering.sae import encode_pre, saes_by_site
from steerscope.steering.spare import (
    Selection,
    answer_losses,
    confidence_weights,
    random_selection,
    select_features,
    spare_edits,
)

MIN_PER_GROUP = 4  # labelled fit prompts needed in each of C and M


def dev_split(records: list[Conflict], dev: float, seed: int) -> tuple[list[Conflict], list[Conflict]]:
    """(fit, dev) by a salted hash of each record's content: independent of the held-out split
    (which may hash the same content) and of the records' order."""
    chosen = [content_fraction(r, salt=f"spare-dev/{seed}") < dev for r in records]
    return [r for r, c in zip(records, chosen, strict=True) if not c], [
        r for r, c in zip(records, chosen, strict=True) if c
    ]


def _answers(
    model: ModelLike,
    prompts: list[str],
    records: list[Conflict],
    settings: list[dict[str, Edit]],
    cached: CachedPrompts | None,
    progress: str | None = None,
) -> list[dict]:
    """Per setting (its edits), per-prompt hits with the substitute (C) and the original (M)
    answer, and behaviour labels. Every edit here acts at the last prompt token, so `cached` (the
    prompts run up to it once) serves them all, the settings as rows of shared batches
    (`answer_greedy_in_settings`); without it (a sliding window could cut the prompts) each
    setting runs on its own."""
    if cached is None:
        outputs = []
        for edits in tqdm(settings, desc=progress, disable=progress is None, leave=False):
            with intervene(model, edits):
                outputs.append(answer_greedy(model, prompts))
    else:
        outputs = answer_greedy_in_settings(model, cached, settings, progress=progress)
    return [_scored(texts, records) for texts in outputs]


def _scored(outputs: list[str], records: list[Conflict]) -> dict:
    pairs = list(zip(outputs, records, strict=True))
    return {
        "hit_c": [float(says_any(o, r.sub_answer)) for o, r in pairs],
        "hit_m": [float(says_any(o, r.org_answer)) for o, r in pairs],
        "labels": [label_behaviour(o, r.org_answer, r.sub_answer) for o, r in pairs],
        "outputs": outputs,
    }


def _best(rows: list[dict[str, Any]], direction: str, knob: str) -> dict[str, Any]:
    """The row of `direction` with the highest dev score; ties go to the gentler edit (smaller
    `knob`, then smaller p, then fewer layers)."""
    mine = [r for r in rows if r["direction"] == direction]
    return mine[highest(mine, target_score, lambda r: (r[knob], r.get("p", 0), len(r["layers"])))]


def controlled_choice(
    rows: list[dict[str, Any]], direction: str, no_edit: dict[str, float]
) -> dict[str, Any] | None:
    """The control-respecting rule (issue 29): the authors' choice (`_best`) among the SpARE dev
    settings whose random-feature control moves neither exact-match rate by `MAX_CONTROL_MOVE` or
    more; None when no setting's control stays put."""
    quiet = [r for r in rows if r["direction"] == direction and control_move(r, no_edit) < MAX_CONTROL_MOVE]
    return _best(quiet, direction, "alpha") if quiet else None


def site_names(layers: list[int]) -> list[str]:
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
        chosen = {s: self.selections[setting["p"]][s] for s in site_names(setting["layers"])}
        if random:
            chosen = {s: random_selection(sel, seed=self.seed) for s, sel in chosen.items()}
        return spare_edits(self.saes, chosen, setting["direction"], setting["alpha"])

    def diffmean(self, setting: dict[str, Any]) -> dict[str, Edit]:
        """Difference-of-means edits of a setting (its `layers`, `direction`, `strength`) at the
        last prompt token."""
        sign = setting["strength"] if setting["direction"] == "context" else -setting["strength"]
        return {
            s: steering_edit(self.diff[s], sign, "last_prompt", scale="absolute")
            for s in site_names(setting["layers"])
        }

    def n_selected(self, setting: dict[str, Any], group: str) -> int:
        """Features of `group` (S_C or S_M) that a SpARE setting edits, over its layers."""
        return sum(
            len(getattr(self.selections[setting["p"]][s], group)) for s in site_names(setting["layers"])
        )


@dataclass
class DevChoice:
    """The dev grids of SpARE and difference of means, the rows chosen per direction, and no edit."""

    no_edit: dict[str, float]
    spare_grid: list[dict[str, Any]]
    diffmean_grid: list[dict[str, Any]]
    spare: dict[str, dict[str, Any]]
    diffmean: dict[str, dict[str, Any]]
    # the control-respecting rule's choice per direction (None: no setting passes; {} when off)
    controlled: dict[str, dict[str, Any] | None]


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
        loss_ctx, loss_mem = answer_losses(
            model,
            prompts,
            [r.sub_answer[0] for r in records],
            [r.org_answer[0] for r in records],
            progress=True,
        )
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
    sites = site_names(sorted({layer for s in sets for layer in s}))
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
    cached = cache_all_but_last(as_model(model), prompts, ANSWER_TOKENS, ANSWER_BATCH)

    def rates(settings: list[dict[str, Edit]], progress: str) -> list[dict[str, float]]:
        return [exact_match_rates(a) for a in _answers(model, prompts, facts.dev, settings, cached, progress)]

    spare_settings = [
        {"method": "spare", "direction": direction, "layers": layers, "p": p, "alpha": alpha}
        for layers in sets
        for p in sorted(config.ps)
        for alpha in sorted(config.alphas)
        for direction in DIRECTIONS
    ]
    controls = [features.spare(s, random=True) for s in spare_settings] if config.dev_random_control else []
    # no edit, every setting and every control run together: the settings share each batch's calls
    measured = rates([{}] + [features.spare(s) for s in spare_settings] + controls, "spare dev grid")
    no_edit, spare_rates, control_rates = (
        measured[0],
        measured[1 : 1 + len(spare_settings)],
        measured[1 + len(spare_settings) :],
    )
    spare_grid = grid_rows(
        range(len(spare_settings)),
        lambda i: {
            **spare_settings[i],
            "S_C": features.n_selected(spare_settings[i], "S_C"),
            "S_M": features.n_selected(spare_settings[i], "S_M"),
        },
        lambda i: spare_rates[i],
        (lambda i: control_rates[i]) if config.dev_random_control else None,
    )
    spare = {d: _best(spare_grid, d, "alpha") for d in DIRECTIONS}
    diffmean_settings = [
        {"method": "diffmean", "direction": d, "layers": spare[d]["layers"], "strength": strength}
        for d in DIRECTIONS
        for strength in sorted(config.strengths)
    ]
    diffmean_rates = rates([features.diffmean(s) for s in diffmean_settings], "diff-of-means dev grid")
    diffmean_grid = [{**s, **r} for s, r in zip(diffmean_settings, diffmean_rates, strict=True)]
    diffmean = {d: _best(diffmean_grid, d, "strength") for d in DIRECTIONS}
    controlled = (
        {d: controlled_choice(spare_grid, d, no_edit) for d in DIRECTIONS} if config.control_rule else {}
    )
    return DevChoice(no_edit, spare_grid, diffmean_grid, spare, diffmean, controlled)


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
    same_as = {}  # a controlled choice equal to the authors' runs once
    for d, setting in chosen.controlled.items():
        if setting is None:
            continue
        for method in ("spare", "random_features"):
            name = f"{method}_controlled_to_{d}"
            if setting is chosen.spare[d]:
                same_as[name] = f"{method}_to_{d}"
            else:
                edits[name] = features.spare(setting, random=method == "random_features")
    cached = cache_all_but_last(as_model(context.model), prompts, ANSWER_TOKENS, ANSWER_BATCH)
    names = list(edits)
    answers = dict(
        zip(
            names,
            _answers(
                context.model, prompts, facts.held, [edits[n] for n in names], cached, "held-out conditions"
            ),
            strict=True,
        )
    )
    return prompts, answers | {name: answers[authors] for name, authors in same_as.items()}
