"""Rerun published rows and say, row by row, whether main still gives their numbers.

The rows live in docs/published.json, the one source of truth for every rerunnable result in
docs/results.md: each row has an id (which results.md cites beside its table), the command that
produced it, how long it takes on a quiet 2-core machine, where it came from (commit and a short
XXH3-128 of its results.json, when that was kept) and its checks: a path into results.json, the
expected value, the tolerance it is stated with, and the text results.md shows for it
(`tests/test_published_commands.py` checks that every command validates and that results.md
shows each check's text where it cites the row, so the page and the rows cannot drift apart).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reproduce.py --quick            # rows marked quick
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reproduce.py --rows spare/gemma-quick
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reproduce.py --quick --record   # rows that match

`--quick` takes the rows marked quick (tiny-model and organism rows, quick Gemma runs) in file
order while their stated minutes fit `--budget` (default 20); without it, every row with checks
(the long reruns). Each row runs as its own `steerscope` process with an output folder of its own;
a number matches when it is within the row's tolerance of the expected value, anything else when
it is equal. `--record` writes this tree's commit, the rerun's results.json hash and what decided
its numbers (weights hashes of the model and of cached SAEs, CPU, threads, library versions) into
the rows that matched in full (their values stay as published); a later rerun that differs then
names the inputs that differ from the recorded run. `--reuse` checks the results.json a row's
earlier run left in `--out` instead of running it again. Stale rows (a command main no longer runs
as measured) are listed, not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import xxhash

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "docs" / "published.json"
RUN = "import sys, steerscope.cli as c; sys.exit(c.main())"


def load_rows(path: Path = ROWS) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["rows"]


def value_at(results: Any, path: list[Any]) -> Any:
    """The value at `path` in results.json: a str steps into a dict, an int into a list, and a
    dict picks the one list item whose fields equal it (e.g. {"sparsity": 0.001})."""
    value = results
    for step in path:
        if isinstance(step, dict):
            matches = [item for item in value if all(item.get(k) == v for k, v in step.items())]
            if len(matches) != 1:
                raise KeyError(f"{step} matches {len(matches)} items")
            value = matches[0]
        else:
            value = value[step]
    return value


def check(results: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """One check against a rerun's results: {"path", "expected", "got", "ok"}."""
    try:
        got = value_at(results, spec["path"])
    except (KeyError, IndexError, TypeError) as error:
        return {"path": spec["path"], "expected": spec["expected"], "got": f"missing ({error})", "ok": False}
    expected, tolerance = spec["expected"], spec.get("tolerance", 0.0)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (got, expected))
    ok = abs(got - expected) <= tolerance + 1e-12 if numbers else got == expected
    return {"path": spec["path"], "expected": expected, "tolerance": tolerance, "got": got, "ok": ok}


def inputs_of(results: dict[str, Any]) -> dict[str, Any]:
    """What decided a run's numbers besides its command (from results.json's provenance): the
    content hashes of the model's weights and of every cached artefact, the CPU and its code path,
    torch threads and the versions of the libraries that compute."""
    provenance = results.get("provenance", {})
    environment = provenance.get("environment", {})
    numerics = environment.get("numerics", {})
    cached = {
        f"{kind}:{name}": entry.get("weights_xxh3_128")
        for kind, entries in provenance.get("cached", {}).items()
        for name, entry in entries.items()
    }
    libraries = environment.get("libraries", {})
    return {
        "model_weights": provenance.get("model", {}).get("weights", {}).get("xxh3_128"),
        **cached,
        **{key: numerics.get(key) for key in ("cpu", "cpu_capability", "torch_threads")},
        **{name: libraries.get(name) for name in ("torch", "transformers", "scikit-learn", "sae-lens")},
    }


def command_argv(command: str, out: Path) -> list[str]:
    """The words after `steerscope` of a row's command, with --out replaced by `out`."""
    words = shlex.split(command)
    argv = words[words.index("steerscope") + 1 :]
    argv[argv.index("--out") + 1] = str(out)
    return argv


def rerun(row: dict[str, Any], folder: Path, reuse: bool = False) -> dict[str, Any]:
    """Run a row's command in its own process (or, with `reuse`, take the results.json an
    earlier run left in `folder`) and check its results.json."""
    out = folder / row["id"].replace("/", "-")
    log = out.with_suffix(".log")
    if reuse and (out / "results.json").is_file():
        code, seconds = 0, None
    else:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **row.get("environment", {})}
        start = time.perf_counter()
        with log.open("w") as handle:
            code = subprocess.run(
                [sys.executable, "-c", RUN, *command_argv(row["command"], out)],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            ).returncode
        seconds = round(time.perf_counter() - start, 1)
    report = {"id": row["id"], "seconds": seconds, "exit_code": code, "log": str(log)}
    if code != 0:
        return {**report, "ok": False, "checks": [], "error": log.read_text()[-500:]}
    data = (out / "results.json").read_bytes()
    results = json.loads(data)
    checks = [check(results, spec) for spec in row["checks"]]
    inputs = inputs_of(results)
    published = row["source"].get("inputs") or {}
    steerscope = results.get("provenance", {}).get("environment", {}).get("steerscope", {})
    return {
        **report,
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
        "results_xxh3": xxhash.xxh3_128_hexdigest(data)[:12],
        "commit": (steerscope.get("commit") or "")[:7] + ("+dirty" if steerscope.get("dirty") else ""),
        "run_seconds": results.get("seconds"),
        "inputs": inputs,
        "inputs_differing": sorted(k for k in published if published[k] != inputs.get(k)),
    }


def chosen_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> tuple[list, list]:
    """(rows to rerun, stale rows) for the arguments."""
    stale = [r for r in rows if r.get("stale")]
    live = [r for r in rows if not r.get("stale") and r["checks"]]
    if args.rows:
        known = {r["id"] for r in rows}
        unknown = sorted(set(args.rows) - known)
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; known: {', '.join(sorted(known))}")
        return [r for r in live if r["id"] in args.rows], [r for r in stale if r["id"] in args.rows]
    if not args.quick:
        return live, stale
    taken, minutes = [], 0.0
    for row in live:
        if row["kind"] == "quick" and minutes + row["minutes"] <= args.budget:
            taken.append(row)
            minutes += row["minutes"]
    return taken, stale


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else json.dumps(value)[:60]


def print_report(reports: list[dict[str, Any]], stale: list[dict[str, Any]]) -> None:
    for report in reports:
        verdict = "MATCH" if report["ok"] else "DIFFERS" if report["exit_code"] == 0 else "FAILED"
        took = f"{report['seconds']} s" if report["seconds"] is not None else "reused"
        print(
            f"\n{report['id']}: {verdict} ({took}, exit {report['exit_code']}, commit {report.get('commit')})"
        )
        if report["exit_code"] != 0:
            print("  " + report["error"].strip().splitlines()[-1])
        if report.get("inputs_differing"):
            print(f"  inputs that differ from the published run: {', '.join(report['inputs_differing'])}")
        for c in report["checks"]:
            tolerance = f" +- {c['tolerance']:g}" if c.get("tolerance") else ""
            mark = "ok " if c["ok"] else "NO "
            print(
                f"  {mark} {json.dumps(c['path'])}: expected {_shown(c['expected'])}{tolerance}, got {_shown(c['got'])}"
            )
    for row in stale:
        print(f"\n{row['id']}: STALE, not run ({row['stale']})")
    matched = sum(r["ok"] for r in reports)
    print(f"\n{matched} of {len(reports)} rows match; {len(stale)} stale rows listed, not run")


def record(path: Path, reports: list[dict[str, Any]]) -> None:
    """Write each fully matching rerun's commit (as its results.json records it), results hash and
    inputs into the rows file."""
    document = json.loads(path.read_text())
    matched = {r["id"]: r for r in reports if r["ok"]}
    for row in document["rows"]:
        if row["id"] in matched:
            row["source"] = {
                "commit": matched[row["id"]]["commit"],
                "results_xxh3": matched[row["id"]]["results_xxh3"],
                "date": datetime.date.today().isoformat(),
                "note": "rerun by benchmarks/reproduce.py; every check matched",
                "inputs": matched[row["id"]]["inputs"],
            }
    path.write_text(json.dumps(document, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only rows marked quick, within --budget")
    parser.add_argument("--budget", type=float, default=20.0, help="minutes of stated row time (--quick)")
    parser.add_argument("--rows", nargs="+", help="these row ids only")
    parser.add_argument("--out", help="folder for the reruns' outputs (default: a temporary one)")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--record", action="store_true", help="record matching reruns in the rows file")
    parser.add_argument(
        "--reuse", action="store_true", help="check the results.json a row's earlier run left in --out"
    )
    args = parser.parse_args()
    rows, stale = chosen_rows(load_rows(), args)
    folder = Path(args.out or tempfile.mkdtemp(prefix="steerscope-reproduce-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(rows)} rows to rerun (stated {sum(r['minutes'] for r in rows):g} min on a quiet machine), outputs in {folder}"
    )
    reports = []
    for row in rows:
        print(f"{'checking' if args.reuse else 'running'} {row['id']}: {row['command']}", flush=True)
        reports.append(rerun(row, folder, args.reuse))
    print_report(reports, stale)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"reports": reports, "stale": [r["id"] for r in stale]}, indent=1)
        )
    if args.record:
        record(ROWS, reports)


if __name__ == "__main__":
    main()
