"""Every experiment runs on a user's data (tiny random models, fixture files in tests/data), and
results.json records the model and, per data kind, the source, its sha256, counts and the splits
used. Input errors stop the run before any model work, in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import steerscope as ss
from steerscope.cli import main
from steerscope.context import build_context
from steerscope.data.user_data import read_user_data
from steerscope.errors import InputError
from steerscope.organisms import ORGANISM_ATTRIBUTE
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.probes.knowledge import BehaviourCounts, LabelledExample
from steerscope.provenance import model_weights
from steerscope.runner import run_experiment
from steerscope.steering.efficiency import Harvest, LengthPair

DATA = Path(__file__).parent / "data"
TOM, TEXT = str(DATA / "tom.jsonl"), str(DATA / "text.txt")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def assert_user_source(provenance: dict, kind: str, source: str, records: int) -> dict:
    data = provenance["data"][kind]
    assert data["source"] == source and data["records"] == records and len(data["sha256"]) == 64
    assert data["duplicates_dropped"] >= 0 and sum(data["splits"].values()) == records
    return data


def test_tom_sensitivity_runs_on_a_users_stories_and_text(tmp_path):
    run_experiment(
        "tom-sensitivity", tmp_path, model="tiny:llama", data={"tom": TOM, "text": TEXT}, quick=True,
        window=16, n_eval_windows=2, sparsities=[0.01], random_seeds=1,
    )  # fmt: skip
    out = results(tmp_path)
    tom = assert_user_source(out["provenance"], "tom", TOM, 12)
    assert tom["duplicates_dropped"] == 1
    assert tom["used"] == {"fisher": tom["splits"]["fisher"], "eval": tom["splits"]["eval"]}
    # the quick counts (24 and 48) are lowered to what the splits hold, and the run says so
    assert out["config"]["n_eval_tom"] == tom["splits"]["eval"] == out["data"]["n_eval_tom"]
    assert out["provenance"]["settings_lowered_to_fit_data"]["n_fisher"] == {
        "from": 24,
        "to": tom["splits"]["fisher"],
    }
    assert_user_source(out["provenance"], "text", TEXT, 6)
    assert {"tom_acc[transfer]", "tom_acc[contents]"} <= set(out["baseline"])
    model = out["provenance"]["model"]
    assert (model["given"], model["source"]) == ("tiny:llama", "tiny-llama")
    assert (
        model["weights"]["of"] == "parameters and buffers in memory"
        and len(model["weights"]["xxh3_128"]) == 32
    )


def test_a_count_the_user_set_beyond_the_split_is_an_error_before_any_model_work(tmp_path):
    with pytest.raises(
        InputError, match=r"n_eval_tom=200 needs 200 tom records, but the eval split of .*tom.jsonl holds \d"
    ):
        run_experiment(
            "tom-sensitivity", tmp_path, model="organism:not-built", data={"tom": TOM}, n_eval_tom=200
        )


def test_rope_runs_on_a_users_stories_and_text(tmp_path):
    run_experiment(
        "rope", tmp_path, model="tiny:gemma3", data={"tom": TOM, "text": TEXT}, quick=True,
        sparsity=0.01, n_fisher=2, n_windows=2, n_tom=2, window=16, fisher_window=16,
    )  # fmt: skip
    out = results(tmp_path)
    assert assert_user_source(out["provenance"], "tom", TOM, 12)["used"] == {"fisher": 2, "eval": 2}
    assert out["provenance"]["data"]["text"]["used"] == {"fisher_windows": 2, "eval_windows": 2}


def test_position_logits_runs_on_a_users_text(tmp_path):
    run_experiment(
        "position-logits", tmp_path, model="tiny:llama", data={"text": TEXT}, n_prompts=2, window=16,
        distances=list(range(0, 16, 3)), random_init=False,
    )  # fmt: skip
    out = results(tmp_path)
    assert assert_user_source(out["provenance"], "text", TEXT, 6)["used"] == {"eval_windows": 2}
    assert out["data"]["source"] == TEXT


def labelled_alternately(model, records, conflicts, demos, seed, progress):
    """Stands in for behaviour a random model does not show: half the prompts C, half M."""
    examples = [
        LabelledExample(conflicts.knowledge_prompt(r, push, True, demos, seed), "", "CM"[i % 2], r, push)
        for i, (r, push) in enumerate((r, p) for r in records for p in ("context", "memory"))
    ]
    return BehaviourCounts({}, examples)


def test_spare_runs_on_a_users_conflicts_and_text(tmp_path, monkeypatch):
    import steerscope.experiments.spare as spare

    monkeypatch.setattr(
        spare, "known_conflicts", lambda model, c, n, d, s, progress: (c.candidates(n, s),) * 2
    )
    monkeypatch.setattr(spare, "behaviour_counts", labelled_alternately)
    source = str(DATA / "conflicts.jsonl")
    run_experiment(
        "spare", tmp_path, model="tiny:llama", data={"conflicts": source, "text": TEXT}, layer_sets=[[1]],
        ps=[0.5], alphas=[1.0], strengths=[1.0],
        sae_max_tokens=3000, sae_batch_size=128, sae_expansion=2, demos=2,
    )  # fmt: skip
    out = results(tmp_path)
    used = assert_user_source(out["provenance"], "conflicts", source, 16)["used"]
    assert used["fit"] + used["dev"] + used["held_out"] == 16 and out["no_edit"]["n"] == used["held_out"]
    assert out["provenance"]["data"]["text"]["used"] == {"sae_train_windows": out["sae"][0]["train_windows"]}
    assert out["selection"]["estimator"] == "mutual_info_classif"
    assert len(out["dev_grid"]) == 2 + 2  # SpARE and difference of means, one setting each way
    spare_rows = [r for r in out["dev_grid"] if r["method"] == "spare"]
    assert all(0 <= r["random_em_c"] <= 1 and 0 <= r["random_em_m"] <= 1 for r in spare_rows)
    assert set(out["dev_settings_meeting_bars"]) == {"context", "memory"}
    for name in ("random_features_to_context", "random_features_to_memory"):
        low, high = out[name]["em_c_ci95"]
        assert low <= out[name]["em_c"] <= high and set(out[name]["transitions"]) >= {"C_to_M", "M_to_C"}


def written_pairs(model, config, problems, prompt):
    """Stands in for the harvest a random model cannot make: a short and a long solution each."""
    pairs = [
        LengthPair(p, prompt(p, "standard"), f" {p.answer}.", f" Step by step, it is {p.answer}.", 3, 9)
        for p in problems
    ]
    counts = {"n_pairs": len(pairs)}
    return Harvest("prompt_contrast", pairs, counts), [{"variant": "prompt_contrast", **counts}]


def test_efficiency_runs_on_a_users_gsm8k_problems(tmp_path, monkeypatch):
    import steerscope.experiments.efficiency as efficiency

    monkeypatch.setattr(efficiency, "harvest_pairs", written_pairs)
    source = str(DATA / "problems.jsonl")
    run_experiment(
        "efficiency", tmp_path, model="tiny:llama", data={"problems": source}, quick=True, n_samples=2,
        max_new_tokens=6, strengths=[0.0, 0.1], min_pairs=2, layer_candidates=1, n_probe=2,
    )  # fmt: skip
    out = results(tmp_path)
    problems = assert_user_source(out["provenance"], "problems", source, 12)
    assert problems["used"] == {"train": 6, "heldout": problems["splits"]["heldout"]}
    questions = {json.loads(line)["question"] for line in Path(source).read_text().splitlines()}
    assert all(row["question"] in questions for row in out["generations"])
    assert out["example_pairs"][0]["question"] in questions


def test_efficiency_refuses_written_completions_for_problems_without_them(tmp_path):
    with pytest.raises(
        InputError, match="contrast_completions=written needs written brief and thorough solutions"
    ):
        run_experiment(
            "efficiency", tmp_path, model="tiny:llama", data={"problems": str(DATA / "problems.jsonl")},
            quick=True, variant="prompt_contrast", contrast_completions="written",
        )  # fmt: skip


def test_steer_demo_builds_the_vector_from_a_users_pairs(tmp_path):
    source = str(DATA / "pairs_completion.jsonl")
    run_experiment(
        "steer-demo", tmp_path, model="tiny:llama", data={"pairs": source}, n_train=4, n_heldout=2,
        strengths=[0.0, 0.2], max_new_tokens=2, prompts=["Q: Is it far?"],
    )  # fmt: skip
    out = results(tmp_path)
    assert assert_user_source(out["provenance"], "pairs", source, 8)["used"] == {"train": 4, "heldout": 2}
    assert [g["prompt"] for g in out["generations"]] == ["Q: Is it far?"] * 2


def test_a_model_object_runs_and_is_recorded_by_class(tmp_path):
    model = ss.load("tiny:llama")
    run_experiment("smoke", tmp_path, model=model, max_new_tokens=2)
    out = results(tmp_path)
    recorded = out["provenance"]["model"]
    assert {k: recorded[k] for k in ("given", "class", "source")} == {
        "given": "<Model object>",
        "class": "Model",
        "source": "tiny-llama",
    }
    assert recorded["weights"] == model_weights(model)
    assert "model" not in out["config"]


def test_data_an_experiment_does_not_take_names_what_it_takes(tmp_path):
    with pytest.raises(InputError, match="spare does not take tom data; it takes conflicts, text"):
        run_experiment("spare", tmp_path, data={"tom": TOM})


def test_an_output_path_that_is_a_file_is_refused_first(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(InputError, match="is a file; give a folder"):
        run_experiment("smoke", tmp_path / "taken", model="organism:not-built", data={"tom": "missing.jsonl"})


def test_user_data_with_words_an_organism_never_saw_lists_them():
    tokenizer = word_tokenizer(["Maya puts her scarf on the hook . She looks in the drawer"])
    tiny = ss.load("tiny:llama")
    model = ss.Model(tiny.hf, tokenizer, tiny.anatomy, "organism:test")
    setattr(model.hf.config, ORGANISM_ATTRIBUTE, "tom_world")
    with pytest.raises(
        InputError, match=r"tom.jsonl: \d+ words are unknown to the tokenizer of organism:test.*'brother'"
    ):
        build_context("organism:test", model, {"tom": read_user_data("tom", TOM)}, ("tom",), {})


def test_cli_bad_record_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "my_tom.jsonl"
    bad.write_text('{"story": "Ann looks in the", "answer": "box", "foil": "bag", "false_belief": "yes"}\n')
    command = [sys.executable, "-m", "steerscope.cli", "run", "tom-sensitivity", "--data", f"tom={bad}"]
    result = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"steerscope: error: {bad} line 1: field 'false_belief' must be true or false, got \"yes\""
    ]


def test_cli_data_check_prints_counts_splits_records_and_token_checks(capsys):
    assert main(["data", "check", TOM, "--kind", "tom", "--model", "tiny:llama"]) == 0
    out = capsys.readouterr().out
    assert f"{TOM}: 12 tom records (13 read, 1 duplicates dropped)" in out
    assert "splits (by content hash): fisher" in out and '"answers": [" hook"]' in out
    assert "answer: 13 of 13 tokenise to several tokens with tiny:llama's tokenizer" in out


def test_cli_list_shows_each_experiments_data_kinds(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "[data: tom, text]" in out and "[data: conflicts, text]" in out and "[data: pairs]" in out
