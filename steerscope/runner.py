"""`run_experiment`: resolve an experiment's settings, output folder, data and model, run it, and
write `results.json` and `report.html`.

Everything that can be wrong with the input is found before any expensive work, in this order:
settings (declared types and ranges) -> output folder -> cache folder -> data sources (read and
validated) and counts against the user's records -> the model's name (and layer settings where its
layer count is known unloaded) -> the model -> layer and position settings against it -> its
context (an organism's vocabulary) -> the user's records against its positions and every count
against its data (`steerscope.limits`). The CLI (`steerscope run NAME`) and notebooks call the
same function.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from steerscope.cache import check_cache
from steerscope.context import build_context
from steerscope.data.records import check_kind
from steerscope.data.user_data import UserData, read_user_data
from steerscope.errors import InputError
from steerscope.limits import fit_counts, fit_to_model, user_holdings
from steerscope.loading import layer_count, load, resolve_dtype
from steerscope.model import ModelLike, as_model
from steerscope.output import check_output_folder
from steerscope.provenance import run_record
from steerscope.registry import EXPERIMENTS, Experiment, ExperimentConfig, Outcome
from steerscope.report import write_report, write_results
from steerscope.settings import check_model_limits, check_settings

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


def check_data_kinds(experiment: Experiment, kinds: Iterable[str]) -> None:
    """Each kind is a data kind and one the experiment takes."""
    for kind in kinds:
        check_kind(kind)
        if kind not in experiment.data_kinds:
            takes = ", ".join(experiment.data_kinds) or "no data"
            raise InputError(f"{experiment.name} does not take {kind} data; it takes {takes}")


def read_data(experiment: Experiment, data: Mapping[str, str]) -> dict[str, UserData]:
    """Each `{kind: source}` the experiment takes, read and validated."""
    check_data_kinds(experiment, data)
    return {kind: read_user_data(kind, str(source)) for kind, source in data.items()}


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


def check_model_name(name: str, config: ExperimentConfig, model: Any) -> None:
    """For a model named by a string: an organism or tiny family steerscope knows, and the layer
    settings against its layer count where that is known without loading (`loading.layer_count`)."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return
    try:
        n_layers = layer_count(model)
    except ValueError as error:
        raise InputError(str(error)) from None
    if n_layers is not None:
        check_model_limits(name, config, n_layers, None, str(model or "the embedded model"))


def check_request(
    name: str,
    model: ModelLike | str | os.PathLike | None = None,
    data_kinds: Iterable[str] = (),
    dtype: str | torch.dtype | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[Experiment, ExperimentConfig]:
    """Everything `run_experiment` checks before any work but the two checks that touch files
    (the output folder, reading the data sources): the experiment, its settings (declared types
    and ranges), the dtype, the data kinds it takes, the model's name and the layer settings.
    Used to check a command without running it (`steerscope.published`)."""
    experiment = get_experiment(name)
    config = make_config(experiment, settings or {})
    _model_dtype(model, dtype)
    check_data_kinds(experiment, data_kinds)
    check_model_name(name, config, model)
    return experiment, config


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
    check_cache()
    user = read_data(experiment, data or {})
    config, lowered = fit_counts(name, config, user_holdings(user), set(settings))
    check_model_name(name, config, model)
    started = time.time()
    loaded = load(model, dtype=torch_dtype or torch.float32)
    if loaded.tokenizer is None:
        raise InputError(
            f"the model {loaded.source} has no tokenizer; pass steerscope.load(model, tokenizer=...) instead"
        )
    check_model_limits(name, config, loaded.anatomy.n_layers, loaded.anatomy.max_positions, loaded.source)
    context = build_context(model, loaded, user, experiment.data_kinds, lowered)
    context.provenance = {**run_record(name, model, data or {}, dtype, settings), **context.provenance}
    config = fit_to_model(name, config, context, user, set(settings))
    outcome = experiment.run(config, context)
    run_id = context.provenance["run"]["id"]
    outcome.results = {
        "experiment": name,
        "run_id": run_id,
        "config": dataclasses.asdict(config),
        "provenance": context.provenance,
        "dtype": str(next(loaded.hf.parameters()).dtype).removeprefix("torch."),
        "seconds": round(time.time() - started, 1),
        **outcome.results,
    }
    write_results(folder, outcome.results)
    write_report(folder, outcome.title, outcome.summary, outcome.figures, outcome.tables, run_id)
    return outcome
