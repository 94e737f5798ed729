"""The `steerscope` command: `info`, `list`, `build organism:NAME | sae:SITE[,SITE...]`, and
`run NAME --out DIR [--model M] [--quick]`."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_PACKAGES = ("steerscope", "torch", "transformers", "transformer-lens", "nnsight", "sae-lens", "plotly")


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
    from steerscope.experiments import REGISTRY, _import_all
    from steerscope.organisms import ORGANISMS, PREFIX

    _import_all()
    print("experiments (steerscope run NAME --out DIR [--model M]):")
    for name in sorted(REGISTRY):
        print(f"  {name:<18} {REGISTRY[name].description}")
    print("model organisms (--model organism:NAME; trained on first use, then cached):")
    for name, spec in ORGANISMS.items():
        state = "cached" if is_intact(spec.folder()) else "not built"
        print(f"  {PREFIX + name:<18} {spec.description} [{state}]")


def _build(args: argparse.Namespace) -> None:
    if args.name.startswith("sae:"):
        return _build_sae(args)
    from steerscope.organisms.build import organism_folder
    from steerscope.organisms.train import REPORT

    folder = organism_folder(args.name)
    report = json.loads((folder / REPORT).read_text())
    print(f"{args.name}: {folder}")
    print(
        f"{report['steps']} steps in {report['train_seconds']} s, final loss {report['final_loss']:.3f}, "
        f"{report['n_parameters']} parameters, vocabulary {report['vocab_size']}"
    )


def _build_sae(args: argparse.Namespace) -> None:
    """`build sae:SITE[,SITE...]`: one SAE per site on the model's default texts, into the cache."""
    from steerscope.data.suite import suite_for
    from steerscope.loading import load
    from steerscope.steering.sae import build_saes, residual_sites, training_texts

    model = load(args.model)
    sites = residual_sites(model, [site for site in args.name.removeprefix("sae:").split(",") if site])
    for site, trained in build_saes(model, sites, training_texts(suite_for(model))).items():
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


def _run(args: argparse.Namespace) -> None:
    from steerscope.experiments import run_experiment

    settings = {"quick": args.quick, "seed": args.seed, **dict(args.set)}
    if args.model is not None:
        settings["model"] = args.model
    run_experiment(args.name, args.out, **settings)
    out = Path(args.out).resolve()
    print(f"results: {out / 'results.json'}\nreport:  {out / 'report.html'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerscope", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="model anatomy, cache path and state, versions")
    info.add_argument(
        "--model",
        default=None,
        help="HF name, folder, .gguf or organism:NAME (default: embedded Gemma 3 270M)",
    )
    info.add_argument("--dtype", default="float32")
    info.set_defaults(func=_info)
    listing = commands.add_parser("list", help="the registered experiments and model organisms")
    listing.set_defaults(func=_list)
    build = commands.add_parser(
        "build", help="train a model organism or SAEs into the cache (resumes an interrupted build)"
    )
    build.add_argument(
        "name",
        help="organism:tom, organism:sources, organism:length, or sae:SITE[,SITE...] (e.g. sae:L9.resid_post)",
    )
    build.add_argument("--model", default=None, help="for sae: builds (default: embedded Gemma 3 270M)")
    build.set_defaults(func=_build)
    run = commands.add_parser("run", help="run an experiment; writes results.json and report.html")
    run.add_argument("name")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--model", default=None)
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
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
        print(f"steerscope: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
