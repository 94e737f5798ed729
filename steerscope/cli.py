"""The `steerscope` command: `info`, `list`, `build organism:NAME | sae:SITE[,SITE...]`,
`run NAME --out DIR [--model M] [--data KIND=SOURCE ...] [--dtype D] [--quick]` and `data check FILE --kind K`.

Bad input (a setting, a path, a record) is one line on stderr and exit code 2; `--debug` prints
the traceback before it."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from steerscope.errors import InputError

_PACKAGES = ("steerscope", "torch", "transformers", "transformer-lens", "nnsight", "sae-lens", "plotly")
SAE_DATA_KINDS = ("text", "conflicts")  # what `build sae:` trains on


def _versions() -> str:
    found = []
    for name in _PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _info(args: argparse.Namespace) -> None:
    from steerscope.cache import cache_root, is_intact
    from steerscope.loading import embedded_cache_dir, load

    folder = embedded_cache_dir()
    state = "ready" if is_intact(folder) else "not built yet (the first load builds it, ~1 min)"
    print(f"cache         {cache_root()}\nembedded      {folder} [{state}]\nversions      {_versions()}")
    model = load(args.model, dtype=args.dtype)
    print(f"model         {model.source}\n{model.anatomy}")


def _list(args: argparse.Namespace) -> None:
    from steerscope.cache import is_intact
    from steerscope.organisms import ORGANISMS, PREFIX
    from steerscope.registry import EXPERIMENTS
    from steerscope.runner import discover_experiments

    print("experiments (steerscope run NAME --out DIR [--model M] [--data KIND=SOURCE]):")
    for name in discover_experiments():
        experiment = EXPERIMENTS.get(name)
        kinds = ", ".join(experiment.data_kinds) or "none"
        print(f"  {name:<18} {experiment.description} [data: {kinds}]")
    print("model organisms (--model organism:NAME; trained on first use, then cached):")
    for name, spec in ORGANISMS.items():
        state = "cached" if is_intact(spec.folder()) else "not built"
        print(f"  {PREFIX + name:<18} {spec.description} [{state}]")


def _build(args: argparse.Namespace) -> None:
    if args.name.startswith("sae:"):
        return _build_sae(args)
    if args.data:
        raise InputError(f"--data is for sae: builds; {args.name} trains on its own world")
    from steerscope.organisms.build import organism_folder, training_report

    folder = organism_folder(args.name)
    report = training_report(args.name)
    print(f"{args.name}: {folder}")
    print(
        f"{report['steps']} steps in {report['train_seconds']} s, final loss {report['final_loss']:.3f}, "
        f"{report['n_parameters']} parameters, vocabulary {report['vocab_size']}"
    )


def _build_sae(args: argparse.Namespace) -> None:
    """`build sae:SITE[,SITE...]`: one SAE per site on the default texts of the model's data, with
    the user's `--data text=...` / `--data conflicts=...` in place of the defaults, into the cache
    (the SAEs `steerscope run spare` then finds there)."""
    from steerscope.context import build_context
    from steerscope.data.user_data import read_user_data
    from steerscope.loading import load
    from steerscope.steering.sae import SAETrainSettings, residual_sites, train_saes, training_texts

    data = _data_arguments(args.data)
    unknown = sorted(set(data) - set(SAE_DATA_KINDS))
    if unknown:
        raise InputError(f"build sae: takes {' and '.join(SAE_DATA_KINDS)} data, not {', '.join(unknown)}")
    user = {kind: read_user_data(kind, source) for kind, source in data.items()}
    model = load(args.model)
    sites = residual_sites(model, [site for site in args.name.removeprefix("sae:").split(",") if site])
    suite = build_context(args.model, model, user, SAE_DATA_KINDS, {}).data
    for site, trained in train_saes(model, sites, SAETrainSettings(), training_texts(suite)).items():
        r = trained.report
        print(
            f"{site}: {trained.folder}\n  FVU {r['fvu']:.3f}, L0 {r['l0']:.1f}, dead {r['dead_fraction']:.1%}, "
            f"CE loss recovered {r['ce_loss_recovered']:.3f}, {r['train_tokens']} training tokens"
        )


def _setting(text: str) -> tuple[str, Any]:
    """`key=value` with a JSON value (`n_fisher=50`, `sparsities=[1e-5,1e-4]`) or a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes key=value, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _data_source(text: str) -> tuple[str, str]:
    """`kind=source`, e.g. `tom=my_tom.jsonl` or `conflicts=hf:pminervini/NQ-Swap:dev`."""
    kind, sep, source = text.partition("=")
    if not sep or not kind or not source:
        raise argparse.ArgumentTypeError(f"--data takes KIND=SOURCE, got {text!r}")
    return kind, source


def _data_arguments(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """{kind: source} from the `--data` arguments; a kind given twice is an error."""
    data: dict[str, str] = {}
    for kind, source in pairs:
        if kind in data:
            raise InputError(f"--data {kind} given twice ({data[kind]} and {source}); give each kind once")
        data[kind] = source
    return data


def _run(args: argparse.Namespace) -> None:
    from steerscope.runner import run_experiment

    data = _data_arguments(args.data)
    settings = {"quick": args.quick, "seed": args.seed, **dict(args.set)}
    outcome = run_experiment(args.name, args.out, model=args.model, data=data, dtype=args.dtype, **settings)
    out = Path(args.out).resolve()
    print(f"\n{outcome.summary}\n\nresults: {out / 'results.json'}\nreport:  {out / 'report.html'}")


def _data_check(args: argparse.Namespace) -> None:
    from steerscope.data.check import report
    from steerscope.data.user_data import read_user_data
    from steerscope.loading import load_tokenizer

    user = read_user_data(args.kind, args.file)
    tokenizer = None if args.model is None else load_tokenizer(args.model)
    print("\n".join(report(user, tokenizer, args.model)))


def main(argv: list[str] | None = None) -> int:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
    )
    parser = argparse.ArgumentParser(prog="steerscope", description=__doc__, parents=[debug])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", parents=[debug], help="model anatomy, cache path and state, versions")
    info.add_argument(
        "--model",
        default=None,
        help="HF name, folder, .gguf or organism:NAME (default: embedded Gemma 3 270M)",
    )
    info.add_argument("--dtype", default="float32")
    info.set_defaults(func=_info)
    listing = commands.add_parser(
        "list", parents=[debug], help="the registered experiments and model organisms"
    )
    listing.set_defaults(func=_list)
    build = commands.add_parser(
        "build",
        parents=[debug],
        help="train a model organism or SAEs into the cache (resumes an interrupted build)",
    )
    build.add_argument(
        "name",
        help="organism:tom, organism:sources, organism:length, organism:reasoning, or sae:SITE[,SITE...] (e.g. sae:L9.resid_post)",
    )
    build.add_argument("--model", default=None, help="for sae: builds (default: embedded Gemma 3 270M)")
    build.add_argument(
        "--data",
        type=_data_source,
        action="append",
        default=[],
        metavar="KIND=SOURCE",
        help="for sae: builds, your text and/or conflicts data in place of the model's defaults "
        "(as for run); repeatable",
    )
    build.set_defaults(func=_build)
    run = commands.add_parser(
        "run", parents=[debug], help="run an experiment; writes results.json and report.html"
    )
    run.add_argument("name")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--model", default=None, help="as for info (default: embedded Gemma 3 270M)")
    run.add_argument(
        "--data",
        type=_data_source,
        action="append",
        default=[],
        metavar="KIND=SOURCE",
        help="your data for one kind (tom, conflicts, problems, text, pairs): .jsonl, .json, .csv, "
        ".parquet, .txt (text), a datasets folder or hf:NAME[:SPLIT]; repeatable",
    )
    run.add_argument(
        "--dtype",
        default="float32",
        help="float32 (default), bfloat16 or float16: the model's activations and generation; "
        "Fisher scores, probe fits and statistics accumulate in fp32",
    )
    run.add_argument("--quick", action="store_true", help="a short setting for a first look or CI")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field (JSON value)",
    )
    run.set_defaults(func=_run)
    data = commands.add_parser("data", parents=[debug], help="inspect a data source")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser(
        "check",
        parents=[debug],
        help="counts, duplicates, split sizes, first records, token checks; runs nothing else",
    )
    check.add_argument(
        "file", help="a .jsonl, .json, .csv, .parquet, .txt, datasets folder or hf:NAME[:SPLIT]"
    )
    check.add_argument("--kind", required=True, help="tom, conflicts, problems, text or pairs")
    check.add_argument("--model", default=None, help="count multi-token answers with this model's tokenizer")
    check.set_defaults(func=_data_check)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
        if getattr(args, "debug", False):  # given before or after the command
            traceback.print_exc()
        print(f"steerscope: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
