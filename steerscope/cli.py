"""The `steerscope` command: `info`, `list`, `build organism:NAME... | sae:SITE[,SITE...]`,
`run NAME --out DIR [--model M] [--data KIND=SOURCE ...] [--dtype D] [--quick]`, `data check FILE --kind K`
and `vector export NAME FILE.gguf [--strength S]` / `vector import FILE.gguf NAME` (llama.cpp control vectors).

Bad input (a setting, a path, a record: an `InputError`, or an OS error about a path the user
gave) is one line on stderr and exit code 2; `--debug` prints the traceback before it. Any other
exception is a bug in steerscope and shows its traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerscope.errors import InputError
from steerscope.vector_command import add_vector_command

if TYPE_CHECKING:
    from steerscope.organisms import OrganismSpec

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
    from steerscope.organisms import ORGANISMS, PREFIX
    from steerscope.organisms.build import ready_folder
    from steerscope.registry import EXPERIMENTS
    from steerscope.runner import discover_experiments

    print("experiments (steerscope run NAME --out DIR [--model M] [--data KIND=SOURCE]):")
    for name in discover_experiments():
        experiment = EXPERIMENTS.get(name)
        kinds = ", ".join(experiment.data_kinds) or "none"
        print(f"  {name:<18} {experiment.description} [data: {kinds}]")
    print("model organisms (--model organism:NAME; committed weights, verified on load):")
    for name, spec in ORGANISMS.items():
        state = "ready" if ready_folder(name) else "not built"
        print(f"  {PREFIX + name:<18} {spec.description} [{state}]")


def _build(args: argparse.Namespace) -> None:
    saes = [name for name in args.name if name.startswith("sae:")]
    if saes:
        if len(args.name) > 1:
            raise InputError(f"build {saes[0]} takes no other name; give its sites comma-separated")
        if args.from_recipe or args.commit:
            raise InputError("--from-recipe and --commit are for organism: builds")
        return _build_sae(args, saes[0])
    if args.data:
        raise InputError(f"--data is for sae: builds; {args.name[0]} trains on its own world")
    if args.commit and not args.from_recipe:
        raise InputError("--commit commits a build from the recipe: give --from-recipe with it")
    from steerscope.organisms import organism_spec

    for spec in [organism_spec(name) for name in args.name]:  # every name checked before any work
        _build_organism(spec, args.from_recipe, args.commit)


def _build_organism(spec: OrganismSpec, from_recipe: bool, commit: bool) -> None:
    """Verify `spec`'s committed weights, or with `from_recipe` build it from its recipe into the cache
    and say whether its bytes equal the committed ones; `commit` makes that build the committed one."""
    from steerscope.organisms import PREFIX, REPORT
    from steerscope.organisms.build import organism_folder, recipe_build
    from steerscope.organisms.committed import (
        commit_build,
        committed_folder,
        committed_recipe,
        differing_files,
    )

    name = PREFIX + spec.name
    if from_recipe:
        folder, trained = recipe_build(spec)
        state = "trained from the recipe now" if trained else "built from the recipe earlier, cached"
    else:
        folder = organism_folder(name)
        committed = folder == committed_folder(spec)
        state = "committed weights, verified" if committed else "no committed build of this recipe, cached"
    report = json.loads((folder / REPORT).read_text())
    loss = "none logged" if report["final_loss"] is None else f"{report['final_loss']:.3f}"  # < 50 steps
    print(f"{name}: {folder} [{state}; recipe {spec.digest()[:12]}]")
    print(
        f"  {report['steps']} steps in {report['train_seconds']} s, final loss {loss}, "
        f"{report['n_parameters']} parameters, vocabulary {report['vocab_size']}"
    )
    recipe = committed_recipe(spec)
    if from_recipe and recipe is None:
        print("  no committed weights to compare with")
    elif from_recipe:
        differing = differing_files(spec, folder)
        print(
            f"  bytes equal to the committed weights (recipe {recipe['recipe'][:12]}): "
            f"{'no: ' + ', '.join(differing) if differing else 'yes'}"
        )
    if commit:
        print(f"  committed: {commit_build(spec, folder)}")


def _build_sae(args: argparse.Namespace, name: str) -> None:
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
    sites = residual_sites(model, [site for site in name.removeprefix("sae:").split(",") if site])
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


def run_request(args: argparse.Namespace) -> dict[str, Any]:
    """The request a parsed `run` command makes: {"name", "out", "model", "data", "dtype",
    "settings"}, as `run_experiment` (and `runner.check_request`) take them."""
    return {
        "name": args.name,
        "out": args.out,
        "model": args.model,
        "data": _data_arguments(args.data),
        "dtype": args.dtype,
        "settings": {"quick": args.quick, "seed": args.seed, **dict(args.set)},
    }


def _run(args: argparse.Namespace) -> None:
    from steerscope.output import output_folder, previous_run
    from steerscope.runner import run_experiment

    request = run_request(args)
    settings = request.pop("settings")
    out = output_folder(args.out)
    previous = previous_run(out)
    if previous:
        print(
            f"steerscope: {out} holds {previous}; this run replaces its results.json and report.html",
            file=sys.stderr,
        )
    outcome = run_experiment(**request, **settings)
    print(f"\n{outcome.summary}\n\nresults: {out / 'results.json'}\nreport:  {out / 'report.html'}")


def _data_check(args: argparse.Namespace) -> None:
    from steerscope.data.check import report
    from steerscope.data.user_data import read_user_data
    from steerscope.limits import check_fits
    from steerscope.loading import load_tokenizer

    user = read_user_data(args.kind, args.file)
    tokenizer = None if args.model is None else load_tokenizer(args.model)
    if tokenizer is not None:
        check_fits(user, args.model, tokenizer)
    print("\n".join(report(user, tokenizer, args.model)))


def _add_info_and_list(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`info` and `list`."""
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


def _add_build(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`build organism:NAME... | sae:SITES`."""
    build = commands.add_parser(
        "build",
        parents=[debug],
        help="verify model organisms' committed weights, or build them from their recipes; "
        "train SAEs into the cache (an interrupted build resumes)",
    )
    build.add_argument(
        "name",
        nargs="+",
        help="one or more of organism:tom, organism:sources, organism:sources-planted, organism:length, "
        "organism:reasoning; or sae:SITE[,SITE...] (e.g. sae:L9.resid_post)",
    )
    build.add_argument(
        "--from-recipe",
        action="store_true",
        help="organisms: train from the recipe into the cache (minutes; resumes) instead of using the "
        "committed weights, and say whether the bytes equal the committed ones",
    )
    build.add_argument(
        "--commit",
        action="store_true",
        help="with --from-recipe: make that build the committed weights (steerscope/organisms/trained-weights/)",
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


def _add_run(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`run NAME --out DIR ...`."""
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


def _add_data(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`data check FILE --kind K`."""
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
    check.add_argument(
        "--model",
        default=None,
        help="count multi-token answers with this model's tokenizer and check each record fits its positions",
    )
    check.set_defaults(func=_data_check)


def build_parser() -> argparse.ArgumentParser:
    """The `steerscope` command's parser (each subcommand sets `func`)."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
    )
    parser = argparse.ArgumentParser(prog="steerscope", description=__doc__, parents=[debug])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_info_and_list, _add_build, _add_run, _add_data, add_vector_command):
        add(commands, debug)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:  # `steerscope ... | head`: the reader left; stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (InputError, OSError) as error:
        if isinstance(error, OSError) and not _about_user_path(error, args):
            raise  # an OS error inside steerscope is a bug: its traceback must show
        if getattr(args, "debug", False):  # given before or after the command
            traceback.print_exc()
        print(f"steerscope: error: {error}", file=sys.stderr)
        return 2
    return 0


def _about_user_path(error: OSError, args: argparse.Namespace) -> bool:
    """Whether `error` names a file or folder the user gave (--out, a data file, a model folder)
    or one inside it: a full disk or a folder removed under a run is the user's to fix."""
    given = [getattr(args, name, None) for name in ("out", "file", "model")]
    given += [source for _, source in getattr(args, "data", [])]
    roots = [Path(str(path)).expanduser().absolute() for path in given if path]
    for name in (error.filename, error.filename2):
        if name is None:
            continue
        path = Path(os.fsdecode(name)).absolute()
        if any(path == root or root in path.parents for root in roots):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
