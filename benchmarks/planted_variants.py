"""organism:sources-planted rebuilt with other `Planted` settings, and what the positive control
then shows: conflict-probe (per layer, where the flag is read) and spare (does it still switch sources).

Each variant is trained from its recipe into `--cache` (a scratch steerscope cache; an earlier
build of the same recipe there is reused), then conflict-probe runs on the trained facts and the
candidates, and, with `--spare`, spare with SAEs of the last prompt token (`sae_positions=last`,
batch 128, 400 epochs, as docs/results.md) on the evaluation facts (`eval`) and/or the 160
training facts (`train`, given as a conflicts file). Prints JSON: per layer the resid_post probe
accuracy, flag AUC and probe cosine with the flag and the option plane; per spare run the held-out
changes (paired 95%) of both rules and their random controls, and the best contrast cosines.
A build takes 4-11 minutes on 2 cores, a spare run 4-10.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/planted_variants.py --early-quiet-weight 10 \\
        [--flag-only] --cache /tmp/variant-cache --out runs/variant [--spare eval,train] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from interleaved import finish

SPARE = {"sae_positions": "last", "sae_batch_size": 128, "sae_epochs": 400}
HELD_OUT = (
    "spare_to_context",
    "spare_to_memory",
    "random_features_to_context",
    "random_features_to_memory",
    "spare_controlled_to_context",
    "spare_controlled_to_memory",
    "random_features_controlled_to_context",
    "random_features_controlled_to_memory",
)


def probe_rows(results: dict[str, Any]) -> dict[str, list[float]]:
    """conflict-probe's per-layer numbers for the planted flag, rounded to 2 places."""
    planted = results["planted"]["layers"]
    return {
        "resid_post_acc": [round(r["acc"], 2) for r in results["layers"] if r["site"] == "resid_post"],
        "flag_auc": [round(r["flag_auc"], 2) for r in planted],
        "probe_cos_flag": [round(r["probe_cos_flag"], 2) for r in planted],
        "probe_cos_options": [round(r["probe_cos_options"], 2) for r in planted],
    }


def spare_rows(results: dict[str, Any]) -> dict[str, Any]:
    """spare's held-out changes against no edit and the best contrast cosines (with MI ranks)."""
    changes = {
        name: {
            key: [round(results[name][f"{key}_change"][k], 3) for k in ("delta", "low", "high")]
            for key in ("em_c", "em_m")
        }
        for name in HELD_OUT
    }
    best = results["planted"]["best_features"]
    return {
        "n_heldout": results["n_heldout_facts"],
        "no_edit": {key: round(results["no_edit"][key], 3) for key in ("em_c", "em_m")},
        "changes": changes,
        "best_contrast": {
            name: [round(best[name]["cos"], 2), best[name]["mi_rank"]]
            for name in ("context_minus_memory", "memory_minus_context")
        },
        "seconds": round(results["seconds"], 1),
    }


def training_facts_file(path: Path) -> Path:
    """The 160 facts organism:sources was trained on with contexts, as a conflicts file."""
    from steerscope.data.conflicts import from_fact
    from steerscope.organisms import sources_world as world

    lines = []
    for fact in world.TRAIN_FACTS:
        c = from_fact(fact, world.substitute(fact, 0))
        record = {
            "question": c.question,
            "org_context": c.org_context,
            "org_answer": list(c.org_answer),
            "sub_context": c.sub_context,
            "sub_answer": list(c.sub_answer),
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--early-quiet-weight", type=float, required=True)
    parser.add_argument("--flag-only", action="store_true", help="quiet the flag alone before L2")
    parser.add_argument("--cache", type=Path, required=True, help="a scratch steerscope cache")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs")
    parser.add_argument("--spare", default="", help="comma-separated: eval, train (default: none)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    spare_facts = [name for name in args.spare.split(",") if name]
    if set(spare_facts) - {"eval", "train"}:
        parser.error(f"--spare takes eval and/or train, not {args.spare}")
    os.environ["STEERSCOPE_CACHE"] = str(args.cache)
    from steerscope import organisms
    from steerscope.organisms.build import recipe_build
    from steerscope.runner import run_experiment

    load_at_start = os.getloadavg()[0]
    base = organisms.ORGANISMS["sources-planted"]
    planted = dataclasses.replace(
        base.planted, early_quiet_weight=args.early_quiet_weight, early_quiet_flag_only=args.flag_only
    )
    spec = dataclasses.replace(base, planted=planted)
    organisms.ORGANISMS["sources-planted"] = spec  # this process loads the variant by the name
    args.out.mkdir(parents=True)
    start = time.perf_counter()
    _, trained = recipe_build(spec, progress=False)
    results: dict[str, Any] = {
        "planted": dataclasses.asdict(planted),
        "digest": spec.digest(),
        "build_seconds": round(time.perf_counter() - start, 1) if trained else "cached",
    }
    for facts in ("trained", "candidates"):
        folder = args.out / f"conflict-probe-{facts}"
        run_experiment("conflict-probe", folder, model="organism:sources-planted", facts=facts)
        results[f"conflict_probe_{facts}"] = probe_rows(json.loads((folder / "results.json").read_text()))
    for facts in spare_facts:
        data = (
            {"conflicts": str(training_facts_file(args.out / "train_facts.jsonl"))}
            if facts == "train"
            else None
        )
        folder = args.out / f"spare-{facts}"
        run_experiment("spare", folder, model="organism:sources-planted", data=data, **SPARE)
        results[f"spare_{facts}"] = spare_rows(json.loads((folder / "results.json").read_text()))
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
