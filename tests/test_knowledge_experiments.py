import json

import pytest
import torch

from steerscope.data.facts import FACTS
from steerscope.experiments import conflict_probe, run_experiment, spare
from steerscope.organisms import sources_world
from steerscope.probes.lm_metrics import top_token_probability


def test_conflict_pairs_differ_only_in_the_stated_answer():
    facts = list(FACTS[:5])
    conflicting, agreeing = conflict_probe.conflict_pairs(facts, demos=3, seed=0)
    for fact, c, a in zip(facts, conflicting, agreeing, strict=True):
        assert c.rsplit("\n\n", 1)[0] == a.rsplit("\n\n", 1)[0]  # same demonstrations
        assert fact.context() in a and fact.context() not in c
        assert c.endswith(f"question: {fact.question}\nanswer:")


def test_conflict_pairs_on_an_organism_use_its_unmarked_prompts():
    suite = sources_world.suite()
    facts = suite.candidate_facts(4, 0)
    conflicting, agreeing = conflict_probe.conflict_pairs(facts, demos=3, seed=0, suite=suite)
    for fact, c, a in zip(facts, conflicting, agreeing, strict=True):
        assert a == f"context: {fact.context()}\nquestion: {fact.question}\nanswer:"
        assert c == a.replace(fact.context(), fact.context(suite.substitute(fact, 0)))


def test_spare_default_layers_follow_the_depth():
    assert spare.default_layers(18) == [6, 9, 12]  # Gemma 3 270M
    assert spare.default_layers(4) == [1, 2]


def test_conflict_probe_run_writes_per_layer_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(conflict_probe, "known_facts", lambda model, n, demos, seed: list(FACTS[:30]))
    run_experiment("conflict-probe", tmp_path, model="tiny:llama", restarts=2)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["layers"]) == 3 * 4  # resid_post, attn_out, mlp_out x 4 tiny layers
    for row in results["layers"]:
        assert {"layer", "site", "acc", "auc", "auprc"} <= set(row)
        assert 0.0 <= row["acc"] <= 1.0
    assert results["n_memorised"] == 30


def test_spare_refuses_to_select_features_without_both_behaviours(tmp_path, monkeypatch):
    monkeypatch.setattr(spare, "known_facts", lambda model, n, demos, seed: list(FACTS[:12]))
    with pytest.raises(ValueError, match="too few labelled prompts to select features"):
        run_experiment("spare", tmp_path, model="tiny:llama", layers=[1])


def test_transitions_count_label_changes():
    before = ["C", "C", "M", "M", None]
    after = ["M", "C", "C", "M", "C"]
    assert spare._transitions(before, after) == {"C_to_M": 1, "M_to_C": 1, "C_kept": 1, "M_kept": 1}


def test_top_token_probability_is_a_batch_independent_probability(tiny_llama):
    prompts = ["question: a?\nanswer:", "context: xyz.\nquestion: why?\nanswer:", "hi"]
    together = top_token_probability(tiny_llama, prompts, batch_size=3)
    alone = torch.cat([top_token_probability(tiny_llama, [p]) for p in prompts])
    assert ((together > 0) & (together <= 1)).all()
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
