import json
import re
import zlib
from pathlib import Path

import pytest
import torch

from steerscope.data.conflicts import PUSHES
from steerscope.data.defaults import natural_suite
from steerscope.errors import InputError
from steerscope.experiments import spare
from steerscope.experiments.conflict_probe import phases as conflict_probe
from steerscope.experiments.spare import phases as spare_phases
from steerscope.experiments.spare import scores as spare_scores
from steerscope.organisms import sources_world
from steerscope.probes.knowledge import BehaviourCounts, LabelledExample, conflict_pairs
from steerscope.probes.lm_metrics import top_token_probability
from steerscope.runner import run_experiment
from steerscope.steering.sae import encode_pre

DATA = Path(__file__).parent / "data"


def test_conflict_pairs_differ_only_in_the_stated_answer():
    conflicts = natural_suite().conflicts
    records = conflicts.candidates(5, 0)
    conflicting, agreeing = conflict_pairs(records, conflicts, demos=3, seed=0)
    for record, c, a in zip(records, conflicting, agreeing, strict=True):
        assert c.rsplit("\n\n", 1)[0] == a.rsplit("\n\n", 1)[0]  # same demonstrations
        assert record.org_context in a and record.org_context not in c
        assert c.endswith(f"question: {record.question}\nanswer:")


def test_conflict_pairs_on_an_organism_use_its_unmarked_prompts():
    conflicts = sources_world.suite().conflicts
    records = conflicts.candidates(4, 0)
    conflicting, agreeing = conflict_pairs(records, conflicts, demos=3, seed=0)
    for record, c, a in zip(records, conflicting, agreeing, strict=True):
        assert a == f"context: {record.org_context}\nquestion: {record.question}\nanswer:"
        assert c == a.replace(record.org_context, record.sub_context)


def test_spare_layer_sets_are_consecutive_around_the_peak_and_fit_the_model():
    config = spare.SpareConfig()
    assert spare.layer_sets(config, 18) == [[9], [8, 9], [7, 8, 9, 10]]  # Gemma 3 270M
    assert spare.layer_sets(config, 4) == [[2], [1, 2], [0, 1, 2, 3]]
    shifted = spare.SpareConfig(peak_layer=17, layer_set_sizes=[4])
    assert spare.layer_sets(shifted, 18) == [[14, 15, 16, 17]]
    assert spare.layer_sets(spare.SpareConfig(layer_sets=[[3, 2], [2, 3]]), 18) == [[2, 3]]
    with pytest.raises(InputError, match="in 0..3"):
        spare.layer_sets(spare.SpareConfig(layer_sets=[[4]]), 4)


def test_spare_dev_split_is_by_content_and_disjoint():
    records = natural_suite().conflicts.candidates(60, 0)
    fit, dev = spare_phases.dev_split(records, 0.35, seed=0)
    assert sorted(map(id, fit + dev)) == sorted(map(id, records)) and 10 < len(dev) < 32
    again_fit, again_dev = spare_phases.dev_split(list(reversed(records)), 0.35, seed=0)
    assert set(again_dev) == set(dev) and set(spare_phases.dev_split(records, 0.35, seed=1)[1]) != set(dev)


def all_memorised(model, conflicts, n, demos, seed, **_):
    """Stands in for the closed-book check a tiny random model cannot pass."""
    records = conflicts.candidates(n, seed)
    return records, records


def test_conflict_probe_run_writes_per_layer_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(conflict_probe, "known_conflicts", all_memorised)
    run_experiment("conflict-probe", tmp_path, model="tiny:llama", restarts=2, n_candidates=30)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["layers"]) == 3 * 4  # resid_post, attn_out, mlp_out x 4 tiny layers
    for row in results["layers"]:
        assert {"layer", "site", "acc", "auc", "auprc"} <= set(row)
        assert 0.0 <= row["acc"] <= 1.0
    assert results["n_memorised"] == 30
    assert results["sae_probe"] is None and "sae" not in results["provenance"].get(
        "cached", {}
    )  # off by default


PLANTED_FEATURE = 7


def planted_conflict_feature(sae, h):
    """The SAE's codes with feature 7 turned on in the first half of the rows: conflict-probe
    captures the conflicting prompts first, so the feature carries the label and nothing else does."""
    codes = encode_pre(sae, h)
    codes[: len(codes) // 2, PLANTED_FEATURE] += 3.0
    return codes


def test_conflict_probe_sae_probe_finds_a_planted_feature_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(conflict_probe, "known_conflicts", all_memorised)
    monkeypatch.setattr(conflict_probe, "encode_pre", planted_conflict_feature)
    data = {"conflicts": str(DATA / "conflicts.jsonl"), "text": str(DATA / "text.txt")}
    outcome = run_experiment(
        "conflict-probe",
        tmp_path / "out",
        model="tiny:llama",
        data=data,
        restarts=2,
        sae_probe=True,
        sae_layers=[2, 1],
        sae_probe_k=3,
        sae_max_tokens=4000,
        sae_batch_size=512,
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    probe = results["sae_probe"]
    assert probe["selection"] == "l1" and probe["k"] == 3
    assert [row["layer"] for row in probe["layers"]] == [1, 2]
    sae = results["provenance"]["cached"]["sae"]
    assert set(sae) == {"L1.resid_post", "L2.resid_post"} and sae["L1.resid_post"]["built_by_this_run"]
    records = {r["sub_context"] for r in map(json.loads, (DATA / "conflicts.jsonl").read_text().splitlines())}
    for row in probe["layers"]:
        assert row["acc"] == 1.0 and row["auc"] == 1.0 and 1 <= row["n_features"] <= 3
        assert 0 < row["sae_quality"]["fvu"] and row["sae_quality"]["train_tokens"] > 1000
        first = row["features"][0]
        assert first["feature"] == PLANTED_FEATURE and first["weight"] > 0 and first["in_splits"] == 2
        assert len(first["top_prompts"]) == 3
        for top in first["top_prompts"]:  # the planted feature fires on conflicting prompts only
            assert top["conflict"] and top["prompt"] < 16 and top["activation"] >= 3.0
            assert any(context in top["text"] for context in records)
    assert "SAE-feature probe (l1, at most 3 features)" in outcome.summary
    assert [title for title, _ in outcome.tables][1:] == [
        "Dense vs SAE-feature probe (resid_post)",
        "SAE-probe features and their top-activating prompts",
    ]
    assert len(outcome.figures) == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sae_layers": [1]}, "conflict-probe: sae_layers applies only with sae_probe=True"),
        ({"sae_k": 4, "sae_probe_k": 2}, "conflict-probe: sae_k, sae_probe_k apply only with sae_probe=True"),
        ({"sae_probe": True, "sae_layers": [4]}, "conflict-probe: sae_layers=[4] (layer 4) is out of range"),
        ({"sae_probe": True, "sae_layers": []}, "conflict-probe: sae_layers must be a non-empty list"),
        (
            {"sae_probe": True, "sae_probe_selection": "lasso"},
            "sae_probe_selection must be one of 'l1', 'mi'",
        ),
        ({"sae_probe": True, "sae_probe_k": 0}, "conflict-probe: sae_probe_k must be an integer >= 1"),
    ],
)
def test_conflict_probe_refuses_bad_sae_probe_settings_before_any_forward(
    tmp_path, monkeypatch, settings, message
):
    monkeypatch.setattr(conflict_probe, "known_conflicts", None)  # any forward pass would fail otherwise
    with pytest.raises(InputError, match=re.escape(message)):
        run_experiment("conflict-probe", tmp_path, model="tiny:llama", **settings)
    assert not (tmp_path / "results.json").exists()


def test_conflict_probe_runs_on_a_users_records_and_records_their_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(conflict_probe, "known_conflicts", all_memorised)
    source = str(DATA / "conflicts.jsonl")
    run_experiment("conflict-probe", tmp_path, model="tiny:llama", data={"conflicts": source}, restarts=1)
    results = json.loads((tmp_path / "results.json").read_text())
    data = results["provenance"]["data"]["conflicts"]
    assert data["source"] == source and data["records"] == 16 and len(data["sha256"]) == 64
    assert data["used"]["memorised"] == 16 and data["used"]["train"] + data["used"]["held_out"] == 16
    assert results["n_memorised"] == 16


def test_conflict_probe_refuses_trained_facts_on_data_without_them_before_any_forward(tmp_path, monkeypatch):
    monkeypatch.setattr(conflict_probe, "known_conflicts", None)  # any forward pass would fail otherwise
    with pytest.raises(InputError, match="facts='trained' needs an organism trained on facts with contexts"):
        run_experiment("conflict-probe", tmp_path, model="tiny:llama", facts="trained")
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(("experiment", "settings"), [("spare", {}), ("conflict-probe", {"sae_probe": True})])
def test_saes_of_last_tokens_refuse_fewer_prompts_than_a_batch_before_any_forward(
    tmp_path, monkeypatch, experiment, settings
):
    monkeypatch.setattr(conflict_probe, "known_conflicts", None)  # any forward pass would fail otherwise
    monkeypatch.setattr(spare_phases, "known_conflicts", None)
    with pytest.raises(InputError, match="are fewer than batch_size=100000; lower the batch size"):
        run_experiment(
            experiment, tmp_path, model="tiny:llama", sae_positions="last", sae_batch_size=100000, **settings
        )
    assert not (tmp_path / "results.json").exists()


def test_conflict_probe_on_a_random_model_says_how_few_facts_it_knows(tmp_path):
    source = str(DATA / "conflicts.jsonl")
    with pytest.raises(InputError, match=f"only 0 of 16 facts from {source} are memorised"):
        run_experiment("conflict-probe", tmp_path, model="tiny:llama", data={"conflicts": source})
    assert not (tmp_path / "results.json").exists()


def test_spare_refuses_to_select_features_without_both_behaviours(tmp_path, monkeypatch):
    monkeypatch.setattr(spare_phases, "known_conflicts", all_memorised)
    with pytest.raises(InputError, match="too few labelled prompts to select features"):
        run_experiment("spare", tmp_path, model="tiny:llama", layer_sets=[[1]], n_candidates=12)


def test_a_dev_setting_meets_the_bars_only_if_spare_gains_and_its_random_control_stays_put():
    no_edit = {"em_c": 0.5, "em_m": 0.2}

    def row(direction, em_c, em_m, random_em_c=0.5, random_em_m=0.2):
        return {
            "direction": direction,
            "em_c": em_c,
            "em_m": em_m,
            "random_em_c": random_em_c,
            "random_em_m": random_em_m,
        }

    assert spare_scores.meets_bars(row("context", 0.55, 0.2), no_edit)
    assert not spare_scores.meets_bars(row("context", 0.5, 0.2), no_edit)  # no gain
    moved_control = row("context", 0.9, 0.0, random_em_m=0.3)
    assert not spare_scores.meets_bars(moved_control, no_edit)  # control moves EM_M
    assert spare_scores.meets_bars(row("memory", 0.3, 0.3, random_em_c=0.46), no_edit)
    assert not spare_scores.meets_bars(row("memory", 0.3, 0.25), no_edit)  # memory needs +0.10


def test_the_control_respecting_rule_chooses_only_among_settings_whose_control_stays_put():
    no_edit = {"em_c": 0.5, "em_m": 0.2}

    def row(em_c, random_em_c, alpha, direction="context"):
        return {"direction": direction, "em_c": em_c, "em_m": 0.2, "random_em_c": random_em_c,
                "random_em_m": 0.2, "alpha": alpha, "p": 0.1, "layers": [1]}  # fmt: skip

    loud = row(0.9, 0.7, alpha=1.0)  # the authors' rule takes it: the best dev score
    quiet = row(0.6, 0.52, alpha=2.0)
    rows = [loud, quiet, row(0.55, 0.5, alpha=3.0), row(0.95, 0.5, alpha=1.0, direction="memory")]
    assert spare_phases._best(rows, "context", "alpha") is loud
    assert spare_phases.controlled_choice(rows, "context", no_edit) is quiet
    assert spare_phases.controlled_choice([loud], "context", no_edit) is None
    with pytest.raises(InputError, match="control_rule=true needs dev_random_control=true"):
        spare.SpareConfig(dev_random_control=False)
    assert not spare.SpareConfig(dev_random_control=False, control_rule=False).control_rule


def test_transitions_count_label_changes():
    before = ["C", "C", "M", "M", None]
    after = ["M", "C", "C", "M", "C"]
    assert spare_scores.transitions(before, after) == {"C_to_M": 1, "M_to_C": 1, "C_kept": 1, "M_kept": 1}


def test_top_token_probability_is_a_batch_independent_probability(tiny_llama):
    prompts = ["question: a?\nanswer:", "context: xyz.\nquestion: why?\nanswer:", "hi"]
    together = top_token_probability(tiny_llama, prompts, batch_size=3)
    alone = torch.cat([top_token_probability(tiny_llama, [p]) for p in prompts])
    assert ((together > 0) & (together <= 1)).all()
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


# ---- spare reproduces: the same command from an empty cache gives the same results.json
# (the run's id and time aside). A tiny random model memorises nothing and answers gibberish,
# so the closed-book check and the behaviour labels are stood in for; the rest is spare's own.

REPRODUCIBLE_SPARE = dict(
    demos=0,
    layer_sets=[[1]],
    ps=[0.2, 0.5],
    alphas=[1.0],
    strengths=[1.0],
    sae_max_tokens=8000,
    sae_batch_size=512,
)


def labelled_by_hash(model, records, conflicts, demos=3, seed=0, **_):
    """Stands in for the behaviour labels: each conflicting prompt is C or M by a hash of its text."""
    examples = [
        LabelledExample(prompt, "", "CM"[zlib.crc32(prompt.encode()) % 2], record, kind)
        for kind in PUSHES
        for record in records
        for prompt in [conflicts.knowledge_prompt(record, kind, True, demos, seed)]
    ]
    counts = {
        kind: {label: sum(e.label == label and e.demo_kind == kind for e in examples) for label in "CM"}
        | {"dropped": 0}
        for kind in PUSHES
    }
    return BehaviourCounts(counts, examples)


@pytest.fixture(scope="module")
def two_spare_runs(tmp_path_factory):
    """results.json of the same spare run twice, each with a cache of its own (SAEs trained twice)."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(spare_phases, "known_conflicts", all_memorised)
    monkeypatch.setattr(spare_phases, "behaviour_counts", labelled_by_hash)
    runs = []
    for name in ("first", "second"):
        folder = tmp_path_factory.mktemp(name)
        monkeypatch.setenv("STEERSCOPE_CACHE", str(folder / "cache"))
        data = {"conflicts": str(DATA / "conflicts.jsonl"), "text": str(DATA / "text.txt")}
        run_experiment("spare", folder / "out", model="tiny:llama", data=data, **REPRODUCIBLE_SPARE)
        runs.append(json.loads((folder / "out" / "results.json").read_text()))
    monkeypatch.undo()
    return runs


def without_run_identity(results: dict) -> dict:
    """results.json without what differs between two runs of one command: id, start and wall time."""
    provenance = {key: value for key, value in results["provenance"].items() if key != "run"}
    return {**results, "provenance": provenance, "run_id": None, "seconds": None}


def test_spare_run_twice_from_empty_caches_gives_the_same_results_json(two_spare_runs):
    first, second = two_spare_runs
    assert first["provenance"]["run"]["id"] != second["provenance"]["run"]["id"]
    assert without_run_identity(first) == without_run_identity(second)


def test_results_json_records_what_decided_the_selection(two_spare_runs):
    results, _ = two_spare_runs
    sae = results["provenance"]["cached"]["sae"]["L1.resid_post"]
    assert sae["built_by_this_run"] and len(sae["weights_xxh3_128"]) == 32
    assert sae["settings"]["k"] == 6 and sae["n_texts"] > 0 and len(sae["texts_sha256"]) == 64
    numerics = results["provenance"]["environment"]["numerics"]
    assert numerics["torch_threads"] >= 1 and numerics["cpu_capability"]
    assert len(results["provenance"]["model"]["weights"]["xxh3_128"]) == 32
    selection = results["selection"]["by_p"]["0.2"]["L1.resid_post"]
    assert len(selection["S_C_features"]) == selection["S_C"]
    assert len(selection["S_M_features"]) == selection["S_M"]
    top = results["selection"]["top_mi"]["L1.resid_post"]
    assert [mi for _, mi in top] == sorted((mi for _, mi in top), reverse=True)
    for direction in ("context", "memory"):
        used = results["held_out_features"][direction]["L1.resid_post"]
        chosen_p = str(results["chosen"][f"spare_to_{direction}"]["p"])
        assert used["spare"]["S_C"] == results["selection"]["by_p"][chosen_p]["L1.resid_post"]["S_C_features"]
        assert len(used["random"]["S_C"]) == len(used["spare"]["S_C"])


def test_the_control_respecting_choice_is_held_out_beside_the_authors(two_spare_runs):
    results, _ = two_spare_runs
    for direction in ("context", "memory"):
        chosen = results["chosen_controlled"][f"spare_controlled_to_{direction}"]
        names = (f"spare_controlled_to_{direction}", f"random_features_controlled_to_{direction}")
        if chosen is None:
            assert not any(name in results for name in names)
            continue
        grid = [r for r in results["dev_grid"] if r["method"] == "spare" and r["direction"] == direction]
        quiet = [r for r in grid if spare_scores.control_move(r, results["dev_no_edit"]) < 0.05]
        assert max(spare_scores.target_score(r) for r in quiet) == spare_scores.target_score(
            {"direction": direction, "em_c": chosen["dev_em_c"], "em_m": chosen["dev_em_m"]}
        )
        assert all(results[name]["n"] == results["no_edit"]["n"] for name in names)


def test_conflict_probe_reads_the_sae_spare_built_with_the_same_settings(
    two_spare_runs, tmp_path_factory, monkeypatch
):
    (cache,) = tmp_path_factory.getbasetemp().glob("first[0-9]*/cache")  # the first spare run's cache
    monkeypatch.setenv("STEERSCOPE_CACHE", str(cache))
    monkeypatch.setattr(conflict_probe, "known_conflicts", all_memorised)
    data = {"conflicts": str(DATA / "conflicts.jsonl"), "text": str(DATA / "text.txt")}
    settings = {key: REPRODUCIBLE_SPARE[key] for key in ("demos", "sae_max_tokens", "sae_batch_size")}
    out = tmp_path_factory.mktemp("probe")
    run_experiment(
        "conflict-probe",
        out,
        model="tiny:llama",
        data=data,
        restarts=1,
        sae_probe=True,
        sae_layers=[1],
        **settings,
    )
    read = json.loads((out / "results.json").read_text())["provenance"]["cached"]["sae"]["L1.resid_post"]
    built = two_spare_runs[0]["provenance"]["cached"]["sae"]["L1.resid_post"]
    assert not read["built_by_this_run"]
    assert read == {**built, "built_by_this_run": False}
