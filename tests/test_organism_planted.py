"""Specification of planted directions (`steerscope.organisms.planted`) and of
`organism:sources-planted`, the positive control whose source choice they carry: its committed
weights carry the planted mechanism where the recipe says, a dense difference of means finds it,
and where it stops (held-out facts, toward memory) is pinned by the numbers in docs/results.md."""

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
from steerscope.experiments.spare.planted import DIRECTION_NAMES, readout_directions
from steerscope.kernels.sae_edit import sae_parts
from steerscope.organisms import organism_spec, suite_for
from steerscope.organisms import sources_world as world
from steerscope.organisms.planted import (
    FLAG,
    cosines,
    option_edit,
    planted_directions,
    planted_loss,
    planted_site,
    planted_spec,
)
from steerscope.organisms.train import batch_at, batch_picks, build_corpus
from steerscope.probes.knowledge import answer_greedy
from steerscope.runner import run_experiment
from steerscope.steering.sae import SAETrainSettings, train_saes, training_texts

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


def _with_early_quiet(weight: float, flag_only: bool = False) -> organisms.OrganismSpec:
    planted = dataclasses.replace(SPEC.planted, early_quiet_weight=weight, early_quiet_flag_only=flag_only)
    return dataclasses.replace(SPEC, planted=planted)


def test_the_early_quiet_term_is_in_the_digest_only_when_trained() -> None:
    """`early_quiet_weight` 0 leaves the recipe's digest what it was before the term existed (the
    digest organism:sources-planted's weights were committed with); a weight, or which directions
    it quiets, changes it."""
    assert _with_early_quiet(0.0).digest() == _with_early_quiet(0.0, flag_only=True).digest()
    assert _with_early_quiet(0.0).digest().startswith("dfa6034642bd")
    digests = {_with_early_quiet(w, f).digest() for w in (0.0, 1.0, 10.0) for f in (False, True)}
    assert len(digests) == 5


def test_the_early_quiet_term_penalises_the_code_before_the_planted_layer(corpus) -> None:
    """The term is `early_quiet_weight` x the mean squared projection (in margins) of the residual
    leaving L0 and L1 at the labelled tokens: on all three directions, or on the flag alone; with
    weight 0 it is not computed. Checked on a batch of the corpus with the committed organism
    (which writes the code from L0 on)."""
    model = ss.load("organism:sources-planted").hf
    picks, (ids, mask, labels) = batch_picks(corpus, SPEC, 0), batch_at(corpus, SPEC, 0)
    position = corpus.planted.position[picks]
    labelled = torch.nonzero(position >= 0).flatten()
    directions = planted_directions(SPEC)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        before = torch.stack([h[labelled, position[labelled]] for h in hidden[1:3]])  # leaving L0, L1
        base, parts = planted_loss(model, SPEC, corpus.planted, picks, ids, mask, labels, step=0)
        assert "early" not in parts
        for flag_only, rows in ((False, slice(None)), (True, slice(FLAG, None))):
            expected = (before @ directions[rows].T / SPEC.planted.margin).pow(2).mean()
            spec = _with_early_quiet(10.0, flag_only)
            loss, parts = planted_loss(model, spec, corpus.planted, picks, ids, mask, labels, step=0)
            assert len(labelled) and parts["early"] == pytest.approx(float(expected), rel=1e-4)
            assert parts["early"] > 0.01  # this organism writes the code before L2
            assert float(loss - base) == pytest.approx(10.0 * parts["early"], rel=1e-3)


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


def _conflicts(facts, kind: str = "none", conflict: bool = True) -> list[str]:
    return [world.knowledge_prompt(f, kind, conflict, world.substitute(f, 0)) for f in facts]


def _switched(organism, facts, choice: int) -> float:
    """The share of unmarked conflicts about `facts` answered from source `choice` (0 context,
    1 memory) once the option directions are set to its code."""
    records = [from_fact(f, world.substitute(f, 0)) for f in facts]
    with ss.intervene(organism, {SITE: option_edit(SPEC, choice)}):
        outputs = answer_greedy(organism, _conflicts(facts), batch_size=len(facts))
    answers = [r.sub_answer[0] if choice == 0 else r.org_answer[0] for r in records]
    return sum(starts_with_answer(o, a) for o, a in zip(outputs, answers, strict=True)) / len(facts)


def test_the_organism_knows_its_planted_recipe(organism) -> None:
    assert planted_spec(organism) == SPEC
    assert planted_spec(ss.load("tiny:llama")) is None


def test_the_planted_directions_carry_the_source_on_held_out_conflicts(organism) -> None:
    """On facts never seen with a context, the larger option projection at the planted site is
    the source the world's rule gives, and the difference of means of context- and
    memory-following residuals there (a dense probe, no recipe) lies along context - memory."""
    acts = capture(organism, _conflicts(world.EVAL_FACTS), [SITE], reduce="last", progress=False)[SITE]
    directions = planted_directions(SPEC)
    rule = torch.tensor([world.follows_context(f, "none") for f in world.EVAL_FACTS])
    assert ((acts @ directions[:2].T).argmax(1) == 0).eq(rule).double().mean() >= 0.95
    difference = acts[rule].mean(0) - acts[~rule].mean(0)
    option = (directions[0] - directions[1]) / 2**0.5
    assert difference @ option / difference.norm() >= 0.5  # 0.66 measured; 0.72 at L0, -0.04 at L3


def test_the_planted_edit_switches_the_source(organism) -> None:
    """Setting the option directions switches the answer: both ways on the training facts (seen
    with contexts), toward the context on held-out facts. Toward memory it does not generalise
    to held-out facts (0.28 measured, with 0.24 unedited): docs/results.md."""
    seen = world.TRAIN_FACTS[:40]
    assert _switched(organism, seen, 0) >= 0.95 and _switched(organism, seen, 1) >= 0.95
    assert _switched(organism, world.EVAL_FACTS, 0) >= 0.9


def test_the_flag_direction_marks_conflicts_on_facts_seen_with_a_context(organism) -> None:
    """On training facts the flag projection separates conflicting from agreeing contexts at half
    the margin (on held-out facts it marks agreeing contexts too: docs/results.md)."""
    seen = world.TRAIN_FACTS[:40]
    prompts = _conflicts(seen) + _conflicts(seen, conflict=False)
    acts = capture(organism, prompts, [SITE], reduce="last", progress=False)[SITE]
    flagged = acts @ planted_directions(SPEC)[FLAG] > SPEC.planted.margin / 2
    assert flagged.tolist() == [True] * len(seen) + [False] * len(seen)


def _conflict_probe(folder, facts: str) -> dict:
    run_experiment("conflict-probe", folder, model="organism:sources-planted", facts=facts, restarts=1)
    return json.loads((folder / "results.json").read_text())


def test_the_conflict_probe_finds_the_planted_flag_on_the_facts_it_was_planted_on(tmp_path) -> None:
    """The positive control of the conflict probe (issue 29 item 1a). On the facts asked with
    contexts in training (`facts="trained"`), the dense probe at the planted site separates
    conflicts held out by fact and reads along the planted flag, and the flag alone does too; the
    organism writes it from L0 on and loses part of it at L3, so accuracy alone shows no peak at
    L2 (measured: accuracy 0.99-1.00 at L0-L2, cosines 0.72-0.77, flag AUC 1.00; L3 0.98, 0.56,
    0.84). On the default candidates, facts it never saw with a context, the flag does not mark
    conflicts (flag AUC 0.54 at L2) and the probe reads something else (cosine 0.17)."""
    trained = _conflict_probe(tmp_path / "trained", "trained")
    assert trained["facts"] == "trained" and trained["planted"]["site"] == SITE
    accuracy = {r["layer"]: r["acc"] for r in trained["layers"] if r["site"] == "resid_post"}
    planted = {r["layer"]: r for r in trained["planted"]["layers"]}
    layer = SPEC.planted.layer
    assert accuracy[layer] >= 0.95
    assert planted[layer]["flag_auc"] >= 0.98 and planted[layer]["probe_cos_flag"] >= 0.6
    assert planted[layer]["probe_cos_options"] < 0.2  # the flag, not the source
    assert planted[3]["flag_auc"] < 0.95  # past the planted site the code fades
    candidates = _conflict_probe(tmp_path / "candidates", "candidates")
    unseen = {r["layer"]: r for r in candidates["planted"]["layers"]}
    assert unseen[layer]["flag_auc"] < 0.7 and unseen[layer]["probe_cos_flag"] < 0.4


def test_an_sae_of_last_prompt_tokens_has_features_along_the_planted_source_contrast(
    organism, tmp_path, monkeypatch
) -> None:
    """Issue 29 item 1c: trained on the last token of the experiments' prompts (`positions="last"`,
    where the code is planted and SpARE edits), the SAE has a feature along each sign of the
    option contrast (measured 0.59 / 0.63 here; 0.68 / 0.66 at 400 epochs). The SAE of every
    position that spare trains by default reaches 0.33 at best (docs/results.md): there the code
    is 1 token in 60 and its features mix it with what the answer token carries otherwise."""
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    texts = training_texts(suite_for(organism), documents=False)
    settings = SAETrainSettings(expansion=8, k=12, epochs=100, batch_size=128, positions="last")
    sae = train_saes(organism, [SITE], settings, texts, progress=False)[SITE].sae
    cos = cosines(sae_parts(sae).W_dec.detach(), readout_directions(SPEC)).amax(0)
    best = dict(zip(DIRECTION_NAMES, cos.tolist(), strict=True))
    assert best["context_minus_memory"] >= 0.5 and best["memory_minus_context"] >= 0.5
