"""Faults of a user's input, round two (issue 25), each tried as a new user would (the CLI and
Python, tiny models, copies of the fixture files): records that are well formed but meaningless,
counts, lengths and seeds beyond what the data and the model can give, output folders that would
lose a run, a broken cache setting, CSV a reader would merge silently, perturbations a user could
mean two ways. Each is one line before the work it would spoil, or works as the user meant."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import steerscope as ss
import steerscope.runner as runner
from steerscope.cli import main
from steerscope.data import arithmetic
from steerscope.data.user_data import read_user_data
from steerscope.errors import InputError
from steerscope.limits import fit_to_model
from steerscope.runner import get_experiment, make_config, run_experiment

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _copy(tmp_path: Path, name: str, first: dict | None = None, suffix: str = ".jsonl") -> str:
    """A copy of a fixture file with its first record's fields replaced by `first`."""
    rows = _rows(name)
    rows[0] = {**rows[0], **(first or {})}
    path = tmp_path / f"copy{suffix}"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _error(kind: str, source: str) -> str:
    with pytest.raises(InputError) as caught:
        read_user_data(kind, source)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def _cli(arguments: list[str], capsys) -> tuple[int, list[str]]:
    code = main(arguments)
    return code, capsys.readouterr().err.splitlines()


@pytest.fixture
def forwards():
    """A tiny Llama that counts its forward passes, and the count."""
    model = ss.load("tiny:llama")
    calls: list[int] = []
    model.hf.register_forward_pre_hook(lambda *args: calls.append(1))
    return model, calls


# ---------------------------------------------------------------- records checked for meaning


@pytest.mark.parametrize(
    ("first", "shown"),
    [
        ({"foil": "hook"}, '"hook"'),  # the answer itself: every margin would be 0
        ({"foil": " Hook "}, '" Hook "'),  # the same word once case and spacing are ignored
        ({"answer": ["hook", "peg"], "foil": ["drawer", "peg"]}, '"peg"'),
    ],
)
def test_a_tom_foil_that_is_also_an_answer_is_refused_before_any_model_work(
    tmp_path, capsys, no_model_load, first, shown
):
    source = _copy(tmp_path, "tom.jsonl", first)
    message = f"{source} line 1: field 'foil' {shown} is also an answer"
    assert _error("tom", source).startswith(message)
    code, err = _cli(["data", "check", source, "--kind", "tom"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"steerscope: error: {message}")
    with pytest.raises(InputError, match=re.escape(message)):
        run_experiment("tom-sensitivity", tmp_path / "out", data={"tom": source})


@pytest.mark.parametrize(
    ("first", "message"),
    [
        ({"sub_answer": "paris."}, "field 'sub_answer' \"paris.\" matches the same outputs as org_answer \"Paris\""),
        ({"sub_answer": ["Paris Texas"]}, "\"Paris Texas\" matches the same outputs as org_answer \"Paris\""),
        ({"org_answer": ["Paris", "the"]}, "field 'org_answer' \"the\" is empty once case, articles and"),
    ],
)  # fmt: skip
def test_a_conflict_whose_answers_cannot_be_told_apart_is_refused(tmp_path, first, message):
    assert message in _error("conflicts", _copy(tmp_path, "conflicts.jsonl", first))


def test_a_contrast_pair_of_one_text_is_refused(tmp_path):
    source = _copy(tmp_path, "pairs.jsonl", {"negative": _rows("pairs.jsonl")[0]["positive"]})
    assert _error("pairs", source) == (
        f"{source} line 1: field 'negative' is the same text as 'positive'; the two prompts of a "
        "contrast pair must differ"
    )


@pytest.mark.parametrize(
    "answer", [int("9" * 400), "#### " + "9" * 400, "#### " + "9" * 400 + ".5", 1e300, -(2**53) - 1]
)
def test_an_answer_beyond_exact_comparison_is_one_line_not_an_overflow(tmp_path, answer):
    source = _copy(tmp_path, "problems.jsonl", {"answer": answer})
    assert f"{source} line 1: field 'answer' must be a number within +-9007199254740992" in _error(
        "problems", source
    )
    largest = read_user_data("problems", _copy(tmp_path, "problems.jsonl", {"answer": f"#### {2**53}"}))
    assert largest.records[0].answer == 2**53


# ---------------------------------------------------------------- CSV a reader would merge


def _csv_lines() -> list[str]:
    return (DATA / "tom.csv").read_text().splitlines()


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p, text: p.write_bytes(text.encode("utf-16")), "UTF-16 text (or binary), not UTF-8"),
        (lambda p, text: p.write_bytes(text.encode("utf-16-le")), "UTF-16 text (or binary), not UTF-8"),
        (  # a closing quote left out: the reader would swallow the next row into this story
            lambda p, text: p.write_text(text.replace('Nia looks at the"', "Nia looks at the", 1)),
            'row 2 (line 3): a " inside a quoted field must be doubled ("") or the field closed',
        ),
        (
            lambda p, text: p.write_text(text + '"never closed,x,y,true\n'),
            "row 5 (line 6): a quoted field is never closed",
        ),
        (
            lambda p, text: p.write_text(text + "a story, with a comma,x,y,true,transfer\n"),
            "row 5 (line 6): 6 fields, but the header has 5 (story, answer, foil, false_belief, kind)",
        ),
    ],
)
def test_csv_that_is_utf16_or_has_an_unbalanced_quote_or_a_ragged_row_names_the_row(tmp_path, write, message):
    path = tmp_path / "tom.csv"
    write(path, "\n".join(_csv_lines()) + "\n")
    assert _error("tom", str(path)).startswith(f"{path}")
    assert message in _error("tom", str(path))
    assert len(read_user_data("tom", str(DATA / "tom.csv")).records) == 4  # the intact file still reads


def test_a_csv_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    path = tmp_path / "long.csv"
    story = "Ann walks on. " * 20_000 + "Ann looks in the"
    path.write_text(f'story,answer,foil,false_belief\n"{story}",box,bag,true\n')
    assert read_user_data("tom", str(path)).records[0].story == story


# ---------------------------------------------------------------- lengths and counts vs model and data


def test_a_record_longer_than_the_models_positions_fails_before_any_forward(tmp_path, capsys, forwards):
    model, calls = forwards
    source = _copy(tmp_path, "tom.jsonl", {"story": "word " * 5000 + "the"})
    message = (
        f"{source} line 1: field 'story' is too long: the model reads 25011 tokens for it, beyond the "
        "2048 positions of tiny-llama; shorten it"
    )
    with pytest.raises(InputError) as error:
        run_experiment("tom-sensitivity", tmp_path / "out", model=model, data={"tom": source}, quick=True)
    assert str(error.value) == message and not calls
    code, err = _cli(["data", "check", source, "--kind", "tom", "--model", "tiny:llama"], capsys)
    assert (code, err) == (2, [f"steerscope: error: {message.replace('tiny-llama', 'tiny:llama')}"])


def test_a_problem_is_measured_through_the_few_shot_prompt_and_the_tokens_generated(tmp_path, forwards):
    model, calls = forwards
    source = _copy(tmp_path, "problems.jsonl", {"question": "x" * 800})  # the prompt alone fits
    message = r"line 1: field 'question' is too long: the model reads 1978 tokens \+ 96 generated for it"
    with pytest.raises(InputError, match=message):
        run_experiment("efficiency", tmp_path / "out", model=model, data={"problems": source})
    user = {"problems": read_user_data("problems", source)}
    experiment = get_experiment("efficiency")
    context = runner.build_context(source, model, user, experiment.data_kinds, {})
    fitted = fit_to_model(
        experiment.name, make_config(experiment, {"max_new_tokens": 8}), context, user, set()
    )
    assert fitted.max_new_tokens == 8 and not calls


def test_a_conflict_prompt_is_measured_with_its_own_demonstrations(tmp_path, capsys):
    """A record fits when its prompt with its three demonstrations does, though its bound (its
    question with the three longest demonstrations of the file) does not."""
    context = _rows("conflicts.jsonl")[0]["sub_context"]
    fits = _copy(tmp_path, "conflicts.jsonl", {"sub_context": "So it goes. " * 90 + context})
    assert main(["data", "check", fits, "--kind", "conflicts", "--model", "tiny:llama"]) == 0
    too_long = _copy(tmp_path, "conflicts.jsonl", {"sub_context": "So it goes. " * 170 + context})
    code, err = _cli(["data", "check", too_long, "--kind", "conflicts", "--model", "tiny:llama"], capsys)
    assert code == 2 and re.fullmatch(
        rf"steerscope: error: {re.escape(too_long)} line 1: field 'sub_context' is too long: the model "
        r"reads \d+ tokens for it, beyond the 2048 positions of tiny:llama; shorten it",
        err[0],
    )


@pytest.mark.parametrize(
    ("experiment", "settings", "message"),
    [
        (  # issue 25: a MemoryError after the model loaded
            "tom-sensitivity", {"n_fisher": 10**9},
            "tom-sensitivity: n_fisher=1000000000 needs 1000000000 text windows of 127 tokens, but the "
            "fisher split of steerscope:natural holds",
        ),
        ("rope", {"n_windows": 10**6}, "rope: n_windows=1000000 needs 1000000 text windows of 64 tokens"),
        ("position-logits", {"n_prompts": 10**6}, "position-logits: n_prompts=1000000 needs 1000000 text windows of 63"),
        ("conflict-probe", {"n_candidates": 1000}, "conflict-probe: n_candidates=1000 needs 1000 conflicts records, but steerscope:natural holds 329"),
        ("steer-demo", {"n_train": 10**6}, "steer-demo: n_train=1000000 needs 1000000 pairs records, but the train split of steerscope:natural holds"),
        ("smoke", {"max_new_tokens": 10**9}, "smoke: max_new_tokens=1000000000 is out of range: tiny-llama has 2048 positions"),
        ("rope", {"window": 5000}, "rope: window=5000 is out of range: tiny-llama has 2048 positions"),
    ],
)  # fmt: skip
def test_counts_and_lengths_beyond_the_default_data_or_the_model_fail_before_any_forward(
    tmp_path, forwards, experiment, settings, message
):
    model, calls = forwards
    with pytest.raises(InputError) as error:
        run_experiment(experiment, tmp_path / "out", model=model, **settings)
    assert str(error.value).startswith(message) and not calls
    assert not (tmp_path / "out").exists()


def test_a_default_count_beyond_the_users_text_is_lowered_and_recorded(forwards):
    model, calls = forwards
    user = {"text": read_user_data("text", str(DATA / "text.jsonl"))}
    experiment = get_experiment("position-logits")
    config = make_config(experiment, {"quick": True, "window": 48})
    context = runner.build_context("tiny:llama", model, user, experiment.data_kinds, {})
    fitted = fit_to_model(experiment.name, config, context, user, set())
    windows = context.data.text.available(model.tokenizer, "eval", 47)
    assert 0 < windows < config.n_prompts == 4 and fitted.n_prompts == windows
    assert context.provenance["settings_lowered_to_fit_data"] == {"n_prompts": {"from": 4, "to": windows}}
    with pytest.raises(
        InputError,
        match=f"n_prompts=4 needs 4 text windows of 47 tokens, but the eval split of .*text.jsonl holds {windows}",
    ):
        fit_to_model(experiment.name, config, context, user, {"n_prompts"})
    assert not calls


def test_a_count_far_beyond_what_a_problem_generator_can_draw_fails_instead_of_drawing_for_hours():
    """The natural problems have no cheap exact count, so `efficiency --set n_train=1000000000` is
    stopped by the draw itself: 20000 draws in a row with nothing new (a few seconds here; the old
    bound, 200 draws per problem asked, would have run for days)."""
    three = [arithmetic.arithmetic_problems(3, "train")[i] for i in range(3)]

    def draw(rng, steps):
        return rng.choice(three)

    with pytest.raises(InputError, match=r"could not draw 1000000000 distinct train problems .* \(drew 3\)"):
        arithmetic.distinct_problems(draw, random.Random(0), 10**9, "train", [1])


def test_a_seed_beyond_what_numpy_takes_is_one_line_before_the_model_loads(tmp_path, capsys, no_model_load):
    for seed in (2**70, 2**32, -1):
        message = f"smoke: seed must be an integer in [0, 4294967295], got {seed}"
        with pytest.raises(InputError, match=re.escape(message)):
            run_experiment("smoke", tmp_path / "out", seed=seed)
        assert _cli(["run", "smoke", "--out", str(tmp_path / "out"), "--seed", str(seed)], capsys) == (
            2,
            [f"steerscope: error: {message}"],
        )


# ---------------------------------------------------------------- output folders and the cache


def test_out_with_a_tilde_is_written_and_printed_expanded_and_a_second_run_says_it_replaces_the_first(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    arguments = ["run", "smoke", "--model", "tiny:llama", "--out", "~/runs/r", "--set", "max_new_tokens=2"]
    folder = tmp_path / "home" / "runs" / "r"
    assert main(arguments) == 0
    out = capsys.readouterr().out
    paths = [line for line in out.splitlines() if line.startswith(("results:", "report:"))]
    assert f"results: {folder / 'results.json'}" in paths and not any("~" in line for line in paths)
    assert not (tmp_path / "~").exists()
    first = json.loads((folder / "results.json").read_text())["run_id"]
    assert f"<meta name='steerscope-run-id' content='{first}'>" in (folder / "report.html").read_text()
    assert main(arguments) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"steerscope: {folder} holds a smoke run (run {first}); this run replaces its results.json and report.html"
    ]
    second = json.loads((folder / "results.json").read_text())["run_id"]
    assert second != first and f"content='{second}'" in (folder / "report.html").read_text()


def test_a_run_killed_between_its_two_writes_leaves_files_with_different_run_ids(tmp_path, monkeypatch):
    model = ss.load("tiny:llama")
    run_experiment("smoke", tmp_path, model=model, max_new_tokens=2)
    old_report = (tmp_path / "report.html").read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "write_report", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("smoke", tmp_path, model=model, max_new_tokens=2)
    new_id = json.loads((tmp_path / "results.json").read_text())["run_id"]
    old_id = re.search(r"content='([^']+)'", old_report).group(1)
    assert (tmp_path / "report.html").read_text() == old_report and new_id != old_id


def test_an_output_folder_inside_the_cache_is_refused_and_the_entry_kept(
    tmp_path, monkeypatch, capsys, no_model_load
):
    cache = tmp_path / "cache"
    entry = cache / "gemma3-270m-abc-fp32"
    entry.mkdir(parents=True)
    (entry / "model.safetensors").write_text("weights")
    monkeypatch.setenv("STEERSCOPE_CACHE", str(cache))
    for out in (entry / "run", cache):
        message = (
            f"output {out}: inside the steerscope cache {cache}, whose entries are deleted and rebuilt "
            "when they fail verification; choose a folder outside it"
        )
        with pytest.raises(InputError) as error:
            run_experiment("smoke", out)
        assert str(error.value) == message
        assert _cli(["run", "smoke", "--out", str(out)], capsys) == (2, [f"steerscope: error: {message}"])
    assert sorted(p.name for p in entry.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("place", ["file", "under a file", "read-only"])
def test_a_cache_setting_that_cannot_be_written_is_one_line_before_the_model_loads(
    tmp_path, monkeypatch, capsys, no_model_load, request, place
):
    if place == "read-only":
        cache = request.getfixturevalue("read_only_folder") / "cache"
        problem = f"cannot write in {cache.parent} ("
    else:
        (tmp_path / "taken").write_text("mine")
        cache = tmp_path / "taken" if place == "file" else tmp_path / "taken" / "cache"
        problem = "is a file; set" if place == "file" else f"{tmp_path / 'taken'} is a file, so the folder"
    monkeypatch.setenv("STEERSCOPE_CACHE", str(cache))
    start = f"steerscope cache {cache} (STEERSCOPE_CACHE): {problem}"
    with pytest.raises(InputError) as error:
        run_experiment("smoke", tmp_path / "out")
    assert str(error.value).startswith(start)
    assert str(error.value).endswith("set STEERSCOPE_CACHE to a folder you can write")
    assert _cli(["run", "smoke", "--out", str(tmp_path / "out")], capsys) == (
        2,
        [f"steerscope: error: {error.value}"],
    )
    with pytest.raises(InputError, match=re.escape(start)):
        ss.load()  # the embedded model would be built into the cache


# ---------------------------------------------------------------- perturbations a user could mean two ways


def test_a_mask_given_as_a_nested_list_perturbs_as_the_tensor_would(tiny_llama):
    name = "model.layers.1.mlp.down_proj.weight"
    weight = tiny_llama.hf.get_parameter(name)
    before, mask = weight.detach().clone(), weight.detach().abs() > 0.05
    with ss.perturb(tiny_llama, {name: (mask, 0.0)}):
        with_tensor = weight.detach().clone()
    with ss.perturb(tiny_llama, {name: (mask.tolist(), 0.0)}):
        assert torch.equal(weight, with_tensor) and not torch.equal(weight, before)
    assert torch.equal(weight, before)


def test_perturbing_a_tied_parameter_names_the_tie(tiny_gemma):
    embedding = tiny_gemma.hf.get_parameter("model.embed_tokens.weight")
    before = embedding.detach().clone()
    mask = torch.ones_like(embedding, dtype=torch.bool)
    with pytest.raises(InputError) as error:
        with ss.perturb(tiny_gemma, {"lm_head.weight": (mask, 0.0)}):
            pass
    assert str(error.value) == (
        "lm_head.weight is tied to model.embed_tokens.weight (one tensor under two names); perturb "
        "model.embed_tokens.weight, which changes both"
    )
    assert torch.equal(embedding, before)


# ---------------------------------------------------------------- only input errors are one line


def test_the_cli_turns_only_input_errors_and_os_errors_about_the_users_paths_into_one_line(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    raised: list[BaseException] = []
    monkeypatch.setattr(runner, "run_experiment", lambda *args, **kwargs: (_ for _ in ()).throw(raised[-1]))
    raised.append(OSError(28, "No space left on device", str(out / "results.json")))
    assert _cli(["run", "smoke", "--out", str(out)], capsys) == (
        2,
        [f"steerscope: error: [Errno 28] No space left on device: '{out / 'results.json'}'"],
    )
    for bug in (
        KeyError("site"),
        TypeError("unsupported operand"),
        OSError(2, "No such file", "/elsewhere/x"),
    ):
        raised.append(bug)
        with pytest.raises(type(bug)):  # a bug in steerscope shows its traceback
            main(["run", "smoke", "--out", str(out)])


ALLOWED_BUILTIN_RAISES = {  # internal invariants: a bug in steerscope if they fire, so a traceback
    "steering/bank.py": ["RuntimeError(f\"site {site}: the steering bank saw no decoder call"],
    "probes/fisher.py": ["KeyError(f\"model has no parameters", "RuntimeError("],
    "steerscope/intervene.py": ["RuntimeError(f\"site {site}: the layer received", "RuntimeError(\"steerscope saw no"],
    "steerscope/interop.py": ["RuntimeError(\"steerscope saw no"],
    "steerscope/organisms/length_world.py": ["ValueError(f\"{value} {op} {number} leaves"],
    "steerscope/organisms/reasoning_world.py": ["ValueError(f\"{value} {op} {number} leaves"],
    "steerscope/organisms/train.py": ["ValueError("],
    "steerscope/organisms/planted.py": ["ValueError("],  # the recipe's own document labels, checked while building
    "steerscope/registry.py": ["ValueError(f\"experiment {experiment.name!r} is registered twice"],
    "steerscope/settings.py": ["TypeError(", "TypeError(f\"setting type"],
    "steering/control_vector.py": ["KeyError(\"format\")"],  # caught beside a missing key: one message
    "steering/layer_choice.py": ["ValueError(\"no steered layer"],
    "steering/llama_cpp_engine.py": ["RuntimeError(f\"llama.cpp refused the control vector"],  # checked file
    "steering/thinking.py": ["RuntimeError(", "RuntimeError(f\"attention mask covers", "RuntimeError(\"the thinking tracker"],
}  # fmt: skip
OWNED_ELSEWHERE = {"steering/apply.py", "steering/vector.py"}


def test_every_error_about_input_in_the_package_is_an_input_error():
    pattern = re.compile(
        r"raise (ValueError|KeyError|TypeError|RuntimeError|FileNotFoundError|OverflowError)\(.*"
    )
    found: dict[str, list[str]] = {}
    for folder in ("steerscope", "probes", "steering", "kernels"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = str(path.relative_to(REPO))
            if name in OWNED_ELSEWHERE:
                continue
            raises = [m.group(0).removeprefix("raise ") for m in pattern.finditer(path.read_text())]
            if raises:
                found[name] = raises
    for name, raises in found.items():
        for text in raises:
            assert any(text.startswith(allowed) for allowed in ALLOWED_BUILTIN_RAISES.get(name, [])), (
                name,
                text,
            )
    assert set(found) == set(ALLOWED_BUILTIN_RAISES)


def test_data_check_into_a_closed_pipe_exits_quietly():
    """`steerscope data check ... | head`: the reader is gone before anything is written."""
    command = [
        sys.executable,
        "-m",
        "steerscope.cli",
        "data",
        "check",
        str(DATA / "tom.jsonl"),
        "--kind",
        "tom",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait() == 1 and stderr == ""
