"""`run_experiment`: resolve an experiment's settings, output folder, data and model, run it, and
write `results.json` and `report.html`.

Everything that can be wrong with the input is found before any expensive work, in this order:
settings (declared types and ranges) -> output folder -> data sources (read and validated) -> the
model -> layer settings against its layer count -> its context (an organism's vocabulary). The CLI
(`steerscope run NAME`) and notebooks call the same function.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from steerscope.context import build_context
from steerscope.data.records import check_kind
from steerscope.data.user_data import UserData, read_user_data
from steerscope.errors import InputError
from steerscope.loading import load, resolve_dtype
from steerscope.model import ModelLike, as_model
from steerscope.registry import EXPERIMENTS, Experiment, ExperimentConfig, Outcome
from steerscope.report import write_report, write_results
from steerscope.settings import check_layers, check_settings

EXPERIMENTS_PACKAGE = "steerscope.experiments"


def discover_experiments() -> list[str]:
    """Import every module of `steerscope.experiments` (each registers itself); the names."""
    package = importlib.import_module(EXPERIMENTS_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{module.name}")
    return EXPERIMENTS.names()


def get_experiment(name: str) -> Experiment:
    """The experiment registered as `name`, or an error listing the available ones."""
    names = discover_experiments()
    experiment = EXPERIMENTS.get(name)
    if experiment is None:
        raise InputError(f"unknown experiment {name!r}; available: {', '.join(names)}")
    return experiment


def make_config(experiment: Experiment, settings: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment's config from `settings` (with the `QUICK` setting under `quick=True`), each
    checked against its field's declared type and range (`steerscope.settings`)."""
    if settings.get("quick") is True:
        settings = {**experiment.config.QUICK, **settings}
    checked = check_settings(experiment.name, experiment.config, settings)
    try:
        return experiment.config(**checked)
    except (TypeError, ValueError) as error:
        raise InputError(f"{experiment.name}: {error}") from None


def check_output_folder(out: str | os.PathLike) -> Path:
    """`out` as a folder that exists or can be created, in a place this process can write (tried by
    creating and removing a file there: mode bits alone say nothing for root or a read-only mount),
    without creating the folder yet."""
    folder = Path(out).expanduser()
    place = folder
    try:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"output {out}: is a file; give a folder")
        while not place.exists():
            place = place.parent
        if not place.is_dir():
            raise InputError(f"output {out}: {place} is a file, so the folder cannot be created")
        handle, probe = tempfile.mkstemp(prefix=".steerscope-write-check.", dir=place)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"output {out}: cannot write in {place} ({error.strerror})") from None
    return folder


def read_data(experiment: Experiment, data: Mapping[str, str]) -> dict[str, UserData]:
    """Each `{kind: source}` the experiment takes, read and validated."""
    for kind in data:
        check_kind(kind)
        if kind not in experiment.data_kinds:
            takes = ", ".join(experiment.data_kinds) or "no data"
            raise InputError(f"{experiment.name} does not take {kind} data; it takes {takes}")
    return {kind: read_user_data(kind, str(source)) for kind, source in data.items()}


def fit_counts(
    experiment: Experiment, config: ExperimentConfig, user: Mapping[str, UserData], explicit: set[str]
) -> tuple[ExperimentConfig, dict[str, dict[str, int]]]:
    """The config with record counts fitted to the user's splits: a count the caller set that a
    split cannot meet is an error; a default or quick count is lowered to what the split holds.
    Returns the config and {field: {"from": ..., "to": ...}} for every lowered count."""
    changes, lowered = {}, {}
    for field, (kind, split) in config.RECORD_COUNTS.items():
        if kind not in user:
            continue
        data = user[kind]
        held = len(data.splits()[split]) if split else len(data.records)
        where = f"the {split} split of {data.source}" if split else data.source
        if held == 0:
            raise InputError(
                f"{experiment.name}: {where} holds no records (records are split by a hash of their "
                "content); give more records"
            )
        value = getattr(config, field)
        if value is None or value <= held:
            continue
        if field in explicit:
            raise InputError(
                f"{experiment.name}: {field}={value} needs {value} {kind} records, but {where} holds {held}"
            )
        changes[field] = held
        lowered[field] = {"from": value, "to": held}
    return (dataclasses.replace(config, **changes) if changes else config), lowered


def _model_dtype(model: Any, dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The dtype to load `model` in (None: load's default, or a model object as it is); a dtype
    given with a model object must be the object's own (steerscope does not cast a user's model)."""
    if dtype is None:
        return None
    try:
        wanted = resolve_dtype(dtype)
    except ValueError as error:
        raise InputError(f"dtype: {error}") from None
    if model is not None and not isinstance(model, (str, os.PathLike)):
        held = next(as_model(model).hf.parameters()).dtype
        if held != wanted:
            raise InputError(
                f"dtype={dtype} was given with a model object in {held}; cast it first "
                f"(model.to({wanted})) or leave dtype out"
            )
        return None
    return wanted


def run_experiment(
    name: str,
    out: str | os.PathLike,
    model: ModelLike | str | os.PathLike | None = None,
    data: Mapping[str, str] | None = None,
    dtype: str | torch.dtype | None = None,
    **settings: Any,
) -> Outcome:
    """Run experiment `name` on `model` and `data`, with `settings` (config fields), and write its
    results and report into `out`.

    `dtype` ("float32", "bfloat16", "float16"; None: float32, or a model object's own dtype) is
    the dtype the model is loaded in: its activations and generation run in it, while captured
    activations, Fisher scores, probe fits, MI and statistics accumulate in fp32 or wider.
    results.json records it.

    `model`: None (the embedded Gemma 3 270M), an HF name or folder, a `.gguf` file,
    "organism:NAME", "tiny:FAMILY", or a model object (steerscope `Model`, transformers or nnsight
    model). `data`: {kind: source}, replacing the model's default data of that kind (see
    `steerscope.data.records` for the kinds and `steerscope.data.sources` for the sources).
    """
    experiment = get_experiment(name)
    config = make_config(experiment, settings)
    torch_dtype = _model_dtype(model, dtype)
    folder = check_output_folder(out)
    user = read_data(experiment, data or {})
    config, lowered = fit_counts(experiment, config, user, set(settings))
    started = time.time()
    loaded = load(model, dtype=torch_dtype or torch.float32)
    if loaded.tokenizer is None:
        raise InputError(
            f"the model {loaded.source} has no tokenizer; pass steerscope.load(model, tokenizer=...) instead"
        )
    check_layers(name, config, loaded.anatomy.n_layers, loaded.source)
    context = build_context(model, loaded, user, experiment.data_kinds, lowered)
    outcome = experiment.run(config, context)
    outcome.results = {
        "experiment": name,
        "config": dataclasses.asdict(config),
        "provenance": context.provenance,
        "dtype": str(next(loaded.hf.parameters()).dtype).removeprefix("torch."),
        "seconds": round(time.time() - started, 1),
        **outcome.results,
    }
    write_results(folder, outcome.results)
    write_report(folder, outcome.title, outcome.summary, outcome.figures, outcome.tables)
    return outcome
