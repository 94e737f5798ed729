"""Specification of planted directions (`steerscope.organisms.planted`) and of
`organism:sources-planted`, the positive control whose source choice they carry: its committed
weights carry the planted mechanism where the recipe says, and the tools find it there."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

import steerscope as ss
from steerscope import organisms
from steerscope.capture import capture
from steerscope.data.conflicts import from_fact
from steerscope.data.facts import starts_with_answer
from steerscope.organisms import organism_spec
from steerscope.organisms import sources_world as world
from steerscope.organisms.planted import FLAG, option_edit, planted_directions, planted_site, planted_spec
from steerscope.organisms.train import build_corpus
from steerscope.probes.knowledge import answer_greedy
from steerscope.runner import run_experiment
from steerscope.steering.sae_training import TrainSchedule, train_batch_topk
from steerscope.steering.spare_planted import cosines

SPEC = organism_spec("sources-planted")
SITE = planted_site(SPEC)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(SPEC)


def test_the_directions_are_orthonormal_and_read_from_the_recipe() -> None:
    directions = planted_directions(SPEC)
    assert directions.shape == (3, SPEC.shape.d_model)
    assert torch.allclose(directions @ directions.T, torch.eye(3), atol=1e-6)
    reseeded = dataclasses.replace(SPEC, planted=dataclasses.replace(SPEC.planted, seed=1))
    assert not torch.allclose(planted_directions(reseeded), directions)
    assert reseeded.digest() != SPEC.digest()


def test_the_recipe_depends_on_the_organism_it_starts_from(monkeypatch) -> None:
    before = SPEC.digest()
    sources = organism_spec("sources")
    shorter = dataclasses.replace(sources, training=dataclasses.replace(sources.training, steps=1))
    monkeypatch.setitem(organisms.ORGANISMS, "sources", shorter)
    assert SPEC.digest() != before


def test_context_documents_are_labelled_at_their_last_prompt_token(corpus) -> None:
    """Every context document is labelled at the token before its answer, with the source it is
    answered from and, for a conflict, the other source's answer; nothing else is labelled."""
    rows, tokenizer = corpus.planted, corpus.tokenizer
    texts = world.training_texts(SPEC.training.n_task, SPEC.training.seed)
    for i, text in enumerate(texts[:1500]):
        if "context:" not in text:
            assert rows.position[i] == -1
            continue
        doc, p = corpus.documents[i], int(rows.position[i])
        prompt, answer = text.rsplit(" ", 1)
        assert doc[: p + 1] == tokenizer(prompt).input_ids
        assert tokenizer.decode(doc[p + 1]).strip() == answer
        cue = next(kind for kind in ("context", "memory", "none") if text.startswith(world.CUES[kind]))
        fact = next(f for f in world.TRAIN_FACTS if f"question: {f.question}" in prompt)
        assert int(rows.choice[i]) == (0 if world.follows_context(fact, cue) else 1)
        assert (rows.other_token[i] >= 0) == bool(rows.flag[i])
        if rows.flag[i]:
            other = tokenizer.decode(int(rows.other_token[i])).strip()
            stated = answer if rows.choice[i] == 0 else other
            assert other != answer and re.search(rf"\b{stated}\b", prompt.split("\n")[-3])
    assert (rows.position[len(texts) :] == -1).all()  # the filler


# ---------------------------------------------------------------- the committed organism


@pytest.fixture(scope="module")
def organism() -> ss.Model:
    return ss.load("organism:sources-planted")


def _unmarked_conflicts() -> list[str]:
    """Unmarked conflicting prompts about the evaluation facts (never in a training context)."""
    return [world.knowledge_prompt(f, "none", True, world.substitute(f, 0)) for f in world.EVAL_FACTS]


def test_the_organism_knows_its_planted_recipe(organism) -> None:
    assert planted_spec(organism) == SPEC
    assert planted_spec(ss.load("tiny:llama")) is None


def test_conflict_probe_finds_the_conflict_first_at_the_planted_layer(organism, tmp_path) -> None:
    """`conflict-probe` on held-out facts: the residual probe first detects conflicts at the
    planted layer (organism:sources, unplanted, peaks at 0.64)."""
    run_experiment("conflict-probe", tmp_path, model="organism:sources-planted")
    rows = json.loads((tmp_path / "results.json").read_text())["layers"]
    acc = {r["layer"]: r["acc"] for r in rows if r["site"] == "resid_post"}
    assert min(layer for layer, a in acc.items() if a >= 0.9) == SPEC.planted.layer, acc


def test_the_option_directions_carry_the_source_on_held_out_conflicts(organism) -> None:
    """The larger option projection is the source the world's rule says, the flag is set, and
    setting the option directions to one source's code makes the organism answer from it."""
    prompts = _unmarked_conflicts()
    acts = capture(organism, prompts, [SITE], reduce="last", progress=False)[SITE]
    projections = acts @ planted_directions(SPEC).T
    rule = torch.tensor([world.follows_context(f, "none") for f in world.EVAL_FACTS])
    assert ((projections[:, :2].argmax(1) == 0) == rule).double().mean() >= 0.95
    assert (projections[:, FLAG] > SPEC.planted.margin / 2).double().mean() >= 0.9
    records = [from_fact(f, world.substitute(f, 0)) for f in world.EVAL_FACTS]
    for choice, answers in ((0, [r.sub_answer[0] for r in records]), (1, [r.org_answer[0] for r in records])):
        with ss.intervene(organism, {SITE: option_edit(SPEC, choice)}):
            outputs = answer_greedy(organism, prompts, batch_size=len(prompts))
        hits = sum(starts_with_answer(o, a) for o, a in zip(outputs, answers, strict=True))
        assert hits >= 0.9 * len(prompts), (choice, hits)


def test_a_small_sae_at_the_planted_site_has_features_along_the_planted_directions(organism) -> None:
    """An SAE trained on the planted site's activations over held-out conflicting prompts and
    filler text (every token, as spare's SAEs) has a feature along each option direction."""
    texts = _unmarked_conflicts() + world.generic_texts()[:200]
    captured = capture(organism, texts, [SITE], progress=False)
    schedule = TrainSchedule(steps=300, batch_size=256, lr=1e-3, k=8, expansion=4)
    trained = train_batch_topk(captured[SITE][captured.mask], schedule)
    best = cosines(trained["W_dec"], planted_directions(SPEC)).amax(0)
    assert (best[:2] >= 0.8).all(), best
