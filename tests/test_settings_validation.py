"""Every experiment setting and the output folder are checked before the model loads: each bad
value is one line naming the setting, the value and what is valid; the CLI prints that line and
exits 2 (`--debug` adds the traceback), the Python API raises `InputError` with the same text. A
layer index beyond the loaded model fails after the load, before any forward pass."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

import steerscope as ss
from steerscope.cli import main
from steerscope.errors import InputError
from steerscope.runner import (
    check_output_folder,
    discover_experiments,
    get_experiment,
    make_config,
    run_experiment,
)
from steerscope.settings import check_settings

# (experiment, settings as run_experiment takes them, the same as --set arguments, the message)
BAD_SETTINGS = [
    ("smoke", {"layer": 1.5}, ["layer=1.5"], "smoke: layer must be a layer index (an integer >= 0) or None, got 1.5"),
    ("smoke", {"seed": "abc"}, ["seed=abc"], "smoke: seed must be an integer in [0, 4294967295], got 'abc'"),
    (
        "smoke", {"seed": 2**70}, [f"seed={2**70}"],
        f"smoke: seed must be an integer in [0, 4294967295], got {2**70}",
    ),
    ("spare", {"seed": -1}, ["seed=-1"], "spare: seed must be an integer in [0, 4294967295], got -1"),
    (
        "efficiency", {"thought_delimiter": ""}, ['thought_delimiter=""'],
        "efficiency: thought_delimiter must be a string that is not empty, got ''",
    ),
    (
        "tom-sensitivity", {"sparsities": "abc"}, ["sparsities=abc"],
        "tom-sensitivity: sparsities must be a non-empty list of finite numbers in (0, 1] or None, got 'abc'",
    ),
    (
        "tom-sensitivity", {"sparsities": [1e-5, 2]}, ["sparsities=[1e-5,2]"],
        "tom-sensitivity: sparsities must be a non-empty list of finite numbers in (0, 1] or None, "
        "got [1e-05, 2] (item 1 is 2)",
    ),
    (
        "spare", {"ps": [2]}, ["ps=[2]"],
        "spare: ps must be a non-empty list of finite numbers in (0, 1], got [2] (item 0 is 2)",
    ),
    ("spare", {"held_out": 1.0}, ["held_out=1.0"], "spare: held_out must be a finite number in (0, 1), got 1.0"),
    (
        "smoke", {"relative_strength": math.nan}, ["relative_strength=NaN"],
        "smoke: relative_strength must be a finite number, got nan",
    ),
    (
        "steer-demo", {"strengths": [0.1, math.inf]}, ["strengths=[0.1,Infinity]"],
        "steer-demo: strengths must be a non-empty list of finite numbers, got [0.1, inf] (item 1 is inf)",
    ),
    ("steer-demo", {"n_train": 0}, ["n_train=0"], "steer-demo: n_train must be an integer >= 1, got 0"),
    ("smoke", {"max_new_tokens": True}, ["max_new_tokens=true"], "smoke: max_new_tokens must be an integer >= 1, got True"),
    (
        "efficiency", {"variant": "fast"}, ["variant=fast"],
        "efficiency: variant must be one of 'auto', 'sampled', 'prompt_contrast', got 'fast'",
    ),
    (
        "efficiency", {"probe_strength": 0}, ["probe_strength=0"],
        "efficiency: probe_strength must be a finite number other than 0, got 0",
    ),
    (
        "spare", {"layer_sets": []}, ["layer_sets=[]"],
        "spare: layer_sets must be a non-empty list of non-empty lists of layer indices (integers >= 0) "
        "or None, got []",
    ),
    (
        "smoke", {"layr": 1}, ["layr=1"],
        "smoke: unknown setting 'layr' (did you mean 'layer'?); valid: layer, max_new_tokens, quick, "
        "relative_strength, seed",
    ),
    (
        "rope", {"n_windows": 0, "n_tom": 0}, ["n_windows=0", "n_tom=0"],
        "rope: n_windows and n_tom are both 0; there is nothing to measure",
    ),
]  # fmt: skip


def _cli(experiment: str, out: Path, arguments: list[str], capsys) -> tuple[int, list[str]]:
    """`steerscope run experiment --out out arguments` in this process: exit code, stderr lines."""
    code = main(["run", experiment, "--out", str(out), *arguments])
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(("experiment", "settings", "sets", "message"), BAD_SETTINGS)
def test_a_bad_setting_is_one_line_before_the_model_loads(
    tmp_path, capsys, no_model_load, experiment, settings, sets, message
):
    with pytest.raises(InputError) as error:
        run_experiment(experiment, tmp_path / "out", **settings)
    assert str(error.value) == message and isinstance(error.value, ValueError)
    arguments = [part for setting in sets for part in ("--set", setting)]
    assert _cli(experiment, tmp_path / "out", arguments, capsys) == (2, [f"steerscope: error: {message}"])
    assert not (tmp_path / "out").exists()


def test_every_experiments_defaults_and_quick_settings_fit_their_declarations():
    for name in discover_experiments():
        experiment = get_experiment(name)
        for quick in (False, True):
            config = make_config(experiment, {"quick": quick})
            values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            assert check_settings(name, experiment.config, values) == values


def test_settings_are_converted_to_their_declared_types():
    config = make_config(get_experiment("spare"), {"ps": [1], "layer_sets": ((1, 2),), "sae_k": None})
    assert config.ps == [1.0] and isinstance(config.ps[0], float)
    assert config.layer_sets == [[1, 2]] and config.sae_k is None


def test_a_layer_beyond_the_loaded_model_fails_after_the_load_before_any_forward(tmp_path):
    model = ss.load("tiny:llama")
    calls = []
    model.hf.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(InputError) as error:
        run_experiment("smoke", tmp_path, model=model, layer=4)
    assert str(error.value) == "smoke: layer=4 is out of range: tiny-llama has layers 0-3"
    with pytest.raises(InputError) as error:
        run_experiment("spare", tmp_path, model=model, layer_sets=[[1, 7]])
    assert str(error.value).startswith("spare: layer_sets=[[1, 7]] (layer 7) is out of range")
    assert not calls and not list(tmp_path.iterdir())


def test_an_output_path_at_a_file_or_under_a_file_fails_before_the_model_loads(
    tmp_path, capsys, no_model_load
):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    cases = {
        taken: f"output {taken}: is a file; give a folder",
        taken / "run": f"output {taken / 'run'}: {taken} is a file, so the folder cannot be created",
    }
    for out, message in cases.items():
        with pytest.raises(InputError) as error:
            run_experiment("smoke", out)
        assert str(error.value) == message
        assert _cli("smoke", out, [], capsys) == (2, [f"steerscope: error: {message}"])
    assert taken.read_text() == "mine"


def test_a_read_only_output_folder_fails_before_the_model_loads(read_only_folder, capsys, no_model_load):
    for out in (read_only_folder, read_only_folder / "new" / "run"):
        with pytest.raises(
            InputError, match=f"output {out}: cannot write in {read_only_folder} \\("
        ) as error:
            run_experiment("smoke", out)
        assert _cli("smoke", out, [], capsys) == (2, [f"steerscope: error: {error.value}"])
    assert not list(read_only_folder.iterdir())


def test_checking_a_writable_output_folder_leaves_nothing_behind(tmp_path):
    out = tmp_path / "a" / "b"
    assert check_output_folder(out) == out
    assert not list(tmp_path.iterdir())  # neither the folder nor the write probe


def test_debug_prints_the_traceback_before_the_line(tmp_path, capsys, no_model_load):
    for arguments in (["--debug", "run", "smoke"], ["run", "smoke", "--debug"]):
        assert main([*arguments, "--out", str(tmp_path), "--set", "seed=abc"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):")
        message = "smoke: seed must be an integer in [0, 4294967295], got 'abc'"
        assert f"steerscope.errors.InputError: {message}" in err
        assert err.splitlines()[-1] == f"steerscope: error: {message}"


def test_the_installed_command_refuses_an_existing_file_as_out_in_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    command = [sys.executable, "-m", "steerscope.cli", "run", "smoke", "--model", "tiny:llama"]
    result = subprocess.run([*command, "--out", str(taken)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"steerscope: error: output {taken}: is a file; give a folder"]
