"""Specification of planted directions (`steerscope.organisms.planted`) and of
`organism:sources-planted`, the positive control whose source choice they carry."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import steerscope as ss
from steerscope.capture import capture
from steerscope.data.conflicts import from_fact
from steerscope.data.defaults import suite_for
from steerscope.data.facts import split_facts, starts_with_answer
from steerscope.data.records import Conflict
from steerscope.organisms import Shape, Training, organism_spec
from steerscope.organisms import sources_world as world
from steerscope.organisms.planted import (
    FLAG,
    option_edit,
    planted_directions,
    planted_spec,
)
from steerscope.organisms.train import build_corpus, train_steps
from steerscope.probes.knowledge import answer_greedy, conflict_pairs
from steerscope.probes.linear_probe import probe_metrics, train_probe

SPEC = organism_spec("sources-planted")
SMALL = dataclasses.replace(
    SPEC,
    name="sources-planted-test",
    shape=Shape(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_mlp=64),
    training=Training(steps=6, batch_size=8, warmup=2, n_task=300, n_filler=30, checkpoint_every=3),
    planted=dataclasses.replace(SPEC.planted, layer=0, swap_fraction=0.9),
)


@pytest.fixture(scope="module")
def small_corpus():
    return build_corpus(SMALL)


def test_the_directions_are_orthonormal_and_read_from_the_recipe() -> None:
    directions = planted_directions(SPEC)
    assert directions.shape == (3, SPEC.shape.d_model)
    assert torch.allclose(directions @ directions.T, torch.eye(3), atol=1e-6)
    assert torch.equal(planted_directions(SPEC), directions)
    reseeded = dataclasses.replace(SPEC, planted=dataclasses.replace(SPEC.planted, seed=1))
    assert not torch.allclose(planted_directions(reseeded), directions)
    assert reseeded.digest() != SPEC.digest()


def test_context_documents_are_labelled_at_their_last_prompt_token(small_corpus) -> None:
    """Every context document is labelled at the token before its answer, with the source it is
    answered from and, for a conflict, the other source's answer; nothing else is labelled."""
    rows, tokenizer = small_corpus.planted, small_corpus.tokenizer
    texts = world.training_texts(SMALL.training.n_task, SMALL.training.seed)
    labelled = 0
    for i, text in enumerate(texts):
        doc = small_corpus.documents[i]
        if "context:" not in text:
            assert rows.position[i] == -1
            continue
        labelled += 1
        p = int(rows.position[i])
        prompt, answer = text.rsplit(" ", 1)
        assert doc[: p + 1] == tokenizer(prompt).input_ids
        assert tokenizer.decode(doc[p + 1]).strip() == answer
        cue = next(kind for kind in ("context", "memory", "none") if text.startswith(world.CUES[kind]))
        fact = next(f for f in world.TRAIN_FACTS if f"question: {f.question}" in prompt)
        assert int(rows.choice[i]) == (0 if world.follows_context(fact, cue) else 1)
        conflict = bool(rows.flag[i])
        assert (rows.other_token[i] >= 0) == conflict
        if conflict:
            other = tokenizer.decode(int(rows.other_token[i])).strip()
            stated = answer if rows.choice[i] == 0 else other  # choice 0: answered from the context
            assert other != answer
            assert re.search(rf"\b{stated}\b", prompt.split("\n")[-3])  # the context line
    assert labelled > 0.5 * len(texts)
    assert (rows.position[len(texts) :] == -1).all()  # the filler


def test_a_resumed_planted_build_matches_an_uninterrupted_one(small_corpus, tmp_path) -> None:
    straight, _ = train_steps(SMALL, small_corpus, tmp_path / "straight", until=6, progress=False)
    train_steps(SMALL, small_corpus, tmp_path / "resumed", until=3, progress=False)
    resumed, state = train_steps(SMALL, small_corpus, tmp_path / "resumed", until=6, progress=False)
    assert state["step"] == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------- the trained organism

SITE = f"L{SPEC.planted.layer}.resid_post"


@pytest.fixture(scope="module")
def organism() -> ss.Model:
    return ss.load("organism:sources-planted")


@pytest.fixture(scope="module")
def held_out() -> list[Conflict]:
    """Conflicts about the evaluation facts, never seen in a training context prompt."""
    return [from_fact(f, world.substitute(f, 0)) for f in world.EVAL_FACTS]


def _follows_context(records: list[Conflict]) -> list[bool]:
    """The planted rule for unmarked conflicts, per record (the ground truth)."""
    fact_of = {f.question: f for f in world.EVAL_FACTS}
    return [world.follows_context(fact_of[r.question], "none") for r in records]


def test_the_organism_knows_its_planted_recipe(organism: ss.Model) -> None:
    assert planted_spec(organism) == SPEC
    assert planted_spec(ss.load("tiny:llama")) is None


@pytest.mark.slow
def test_a_probe_at_the_planted_layer_detects_held_out_conflicts(organism, held_out) -> None:
    """Split by fact, a linear probe on the planted site tells a conflicting unmarked context from
    an agreeing one, and so does the flag direction read from the recipe, thresholded at half
    the margin, with no fitting at all."""
    conflicting, agreeing = conflict_pairs(held_out, suite_for(organism).conflicts, 0, 0)
    acts = capture(organism, conflicting + agreeing, [SITE], reduce="last", progress=False)[SITE]
    labels = torch.cat([torch.ones(len(held_out)), torch.zeros(len(held_out))]).long()
    index = {r: i for i, r in enumerate(held_out)}
    train, test = split_facts(held_out, 0.3, seed=0)

    def rows(group: list[Conflict]) -> torch.Tensor:
        return torch.tensor([index[r] for r in group] + [index[r] + len(held_out) for r in group])

    probe = train_probe(acts[rows(train)], labels[rows(train)])
    assert probe_metrics(probe, acts[rows(test)], labels[rows(test)])["acc"] >= PROBE_ACCURACY
    flag = acts @ planted_directions(SPEC)[FLAG] > SPEC.planted.margin / 2
    assert (flag.long() == labels).double().mean() >= FLAG_ACCURACY


@pytest.mark.slow
def test_the_option_directions_carry_the_source_on_held_out_conflicts(organism, held_out) -> None:
    """At the planted site the larger of the two option projections is the source the planted rule
    says, and setting them to one source's code makes the organism answer from that source."""
    prompts = [suite_for(organism).conflicts.knowledge_prompt(r, "none", True, 0, 0) for r in held_out]
    rule = _follows_context(held_out)
    acts = capture(organism, prompts, [SITE], reduce="last", progress=False)[SITE]
    read = (acts @ planted_directions(SPEC)[:2].T).argmax(1) == 0
    assert (read == torch.tensor(rule)).double().mean() >= 0.95

    for choice, answers in ((0, [r.sub_answer[0] for r in held_out]), (1, [r.org_answer[0] for r in held_out])):
        with ss.intervene(organism, {SITE: option_edit(SPEC, choice)}):
            outputs = answer_greedy(organism, prompts, batch_size=len(prompts))
        hits = sum(starts_with_answer(o, a) for o, a in zip(outputs, answers, strict=True))
        assert hits >= SWITCHED * len(prompts), (choice, hits)
