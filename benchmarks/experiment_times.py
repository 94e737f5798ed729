"""Wall time of whole experiment runs, the code of an earlier commit (`--before`; without it, this
tree alone) against this tree, and this tree in another dtype, side by side on the same machine in
the same run.

For each repetition and experiment, every variant starts at the same moment as a separate
`steerscope run NAME --quick` process (`--full`: with the experiment's default settings), so all
of them see the same load from other jobs (a shared machine's load moves by minutes; sequential
runs would compare different loads). On a quiet
machine `--sequential` runs them one after another instead (the order rotating with each
repetition), so they do not share the cores. The earlier
commit runs from a `git archive` of it arranged as the installed package (`steerscope.probes` from
`probes/`, ...), put first on PYTHONPATH; the script checks which tree each process imported.

Results are compared, not only timed: `before` and `float32` must give the same results.json
(every answer, label, count and metric; floats within `--tolerance`) apart from the run's time;
other dtypes are reported next to float32 (conflict-probe's peak layer, answers that differ).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/experiment_times.py --before 783e594 \\
        --experiments spare conflict-probe efficiency --dtypes float32 bfloat16 --json times.json

`--set KEY=VALUE` is passed to every run (e.g. spare's `sae_max_tokens`, to use cached SAEs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from interleaved import finish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = {"probes": "probes", "steering": "steering", "kernels": "kernels"}
RUN = "import sys, steerscope, steerscope.cli as c; print('tree', steerscope.__file__); sys.exit(c.main())"
IGNORED = {"seconds", "dtype", "provenance", "config", "run_id"}


def tree_of(commit: str, into: Path) -> Path:
    """The package tree of `commit`, laid out as the install maps it: into/pkg/steerscope/..."""
    archive = into / "src.tar"
    with archive.open("wb") as handle:
        subprocess.run(["git", "archive", commit], cwd=ROOT, stdout=handle, check=True)
    source = into / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    package = into / "pkg" / "steerscope"
    package.parent.mkdir()
    (source / "steerscope").rename(package)
    for name, folder in SUBPACKAGES.items():
        (source / folder).rename(package / name)
    return into / "pkg"


def start(
    variant: str,
    name: str,
    out: Path,
    pythonpath: Path | None,
    dtype: str | None,
    settings: list[str],
    quick: bool = True,
) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, "-c", RUN, "run", name, *(["--quick"] if quick else []), "--out", str(out)]
    command += [part for setting in settings for part in ("--set", setting)]
    if dtype is not None:
        command += ["--dtype", dtype]
    log = (out.parent / f"{out.name}.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out.parent)
    return {"variant": variant, "process": process, "start": time.perf_counter(), "out": out, "log": log}


def wait(job: dict[str, Any]) -> None:
    """Wait for a run and record its exit code and wall time (once)."""
    if "code" not in job:
        job["code"] = job["process"].wait()
        job["seconds"] = time.perf_counter() - job["start"]
        job["log"].close()


def differences(a: Any, b: Any, tolerance: float, path: str = "") -> list[str]:
    """Where two results.json values differ (floats beyond `tolerance`), skipping IGNORED keys."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if key in IGNORED:
                continue
            if key not in a or key not in b:
                found.append(f"{path}/{key}: only in one")
            else:
                found += differences(a[key], b[key], tolerance, f"{path}/{key}")
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, tolerance, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= tolerance else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def summary(name: str, results: dict[str, Any]) -> dict[str, Any]:
    """What a dtype comparison looks at: conflict-probe's peak, spare's and efficiency's answers."""
    if name == "conflict-probe":
        best = results["best"]
        return {
            "n_memorised": results["n_memorised"],
            "peak": f"L{best['layer']}.{best['site']}",
            "acc": best["acc"],
        }
    if name == "spare":
        return {
            "n_memorised": results["n_memorised"],
            **{c: results[c]["em_c"] for c in ("no_edit", "diffmean_to_memory")},
        }
    return {k: results[k] for k in ("layer",) if k in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before",
        default=None,
        help="the commit to compare with (e.g. main before the change); none: this tree only",
    )
    parser.add_argument("--experiments", nargs="+", default=["spare", "conflict-probe", "efficiency"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every run")
    parser.add_argument(
        "--sequential", action="store_true", help="one variant at a time, in rotating order (quiet machine)"
    )
    parser.add_argument("--full", action="store_true", help="default settings instead of --quick")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="experiment-times-"))
    runs = args.out or work / "runs"
    old_tree = tree_of(args.before, work) if args.before else None
    rows = []
    for rep in range(args.reps):
        for name in args.experiments:
            folder = runs / f"rep{rep}" / name
            folder.mkdir(parents=True, exist_ok=True)
            load_before = os.getloadavg()
            variants = [(dtype, None, dtype) for dtype in args.dtypes]
            if old_tree is not None:
                variants.insert(0, ("before", old_tree, None))
            if args.sequential:
                shift = rep % len(variants)
                variants = variants[shift:] + variants[:shift]
            jobs = []
            for variant, tree, dtype in variants:
                jobs.append(start(variant, name, folder / variant, tree, dtype, args.set, not args.full))
                if args.sequential:
                    wait(jobs[-1])
            for job in jobs:
                wait(job)
            row: dict[str, Any] = {"rep": rep, "experiment": name, "load_average_before": load_before}
            row["load_average_after"] = os.getloadavg()
            results = {}
            for job in jobs:
                log = (job["out"].parent / f"{job['out'].name}.log").read_text()
                tree = next((line.split()[1] for line in log.splitlines() if line.startswith("tree ")), "?")
                row[job["variant"]] = {"seconds": round(job["seconds"], 1), "exit": job["code"], "tree": tree}
                if job["code"] == 0:
                    results[job["variant"]] = json.loads((job["out"] / "results.json").read_text())
                    row[job["variant"]]["summary"] = summary(name, results[job["variant"]])
            if "before" in results and "float32" in results:
                found = differences(results["before"], results["float32"], args.tolerance)
                row["float32_vs_before"] = {"same": not found, "differences": found[:20]}
                row["float32_over_before"] = round(row["float32"]["seconds"] / row["before"]["seconds"], 3)
            for dtype in args.dtypes:
                if dtype != "float32" and dtype in results and "float32" in results:
                    row[f"{dtype}_over_float32"] = round(row[dtype]["seconds"] / row["float32"]["seconds"], 3)
                    row[f"{dtype}_vs_float32_differences"] = len(
                        differences(results["float32"], results[dtype], args.tolerance)
                    )
            rows.append(row)
            print(json.dumps(row), flush=True)
    finish(
        {
            "before": args.before,
            "sequential": args.sequential,
            "settings_kind": "default" if args.full else "quick",
            "settings": args.set,
            "runs": str(runs),
            "rows": rows,
        },
        args.json,
        load_at_start,
    )


if __name__ == "__main__":
    main()
