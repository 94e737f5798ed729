"""What decides a run's outcome, recorded under results.json's `provenance` key: the run's id and
call, the steerscope commit, library versions, the numerics of the machine (torch threads, CPU
code path, the environment variables that change them), and content hashes of the model weights
and of every cached artefact (SAEs, Fisher scores) the experiment used.

Two runs whose provenance agrees (id and time aside) should give the same results.json; where
they do not, the provenance says what differed. Content hashes come from the verified cache
manifests (XXH3-128 of each weights file, `steerscope.cache`), so they cost nothing; only the
weights files count, since a cached folder also holds its build's report, whose timings differ
between identical builds.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import xxhash

from steerscope.cache import weights_digest
from steerscope.model import Model
from steerscope.output import new_run_id

LIBRARIES = (
    "steerscope",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "sae-lens",
    "scikit-learn",
    "numpy",
    "scipy",
    "accelerate",
)
# Environment variables that change the numbers a CPU run computes (thread counts, code paths).
NUMERIC_ENVIRONMENT = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "CUBLAS_WORKSPACE_CONFIG",
)
MAX_HASHED_PARAMETERS = 50_000_000  # a model object this small is hashed in memory (< 0.2 s)


def run_record(
    name: str, model: Any, data: Mapping[str, str], dtype: Any, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The run's id and start time, and how it was asked for: the process's own command line
    (`sys.orig_argv`), the `steerscope` command when the process is that program, and the call's
    arguments either way."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    return {
        "run": {
            "id": new_run_id(),
            "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        "invocation": {
            "command": shlex.join(["steerscope", *sys.argv[1:]]) if program == "steerscope" else None,
            "process": shlex.join(sys.orig_argv),
            "call": {
                "experiment": name,
                "model": model if model is None or isinstance(model, str) else f"<{type(model).__name__}>",
                "data": {kind: str(source) for kind, source in data.items()},
                "dtype": None if dtype is None else str(dtype),
                "settings": dict(settings),
            },
        },
    }


def git_state(folder: Path) -> dict[str, Any]:
    """The commit of the git checkout holding `folder` and whether tracked files differ from it
    (untracked files, such as run outputs, do not count); {"checkout": False} outside one."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=20
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"checkout": False}
    return {"checkout": True, "commit": commit, "dirty": dirty}


def cpu_name() -> str:
    """The CPU model as the kernel names it (its vector units decide which kernels run)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """steerscope's commit, library versions and the numerics of this process."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "steerscope": git_state(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "libraries": versions,
        "numerics": {
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "environment": {name: os.environ[name] for name in NUMERIC_ENVIRONMENT if name in os.environ},
        },
        "platform": platform.platform(),
    }


def parameters_digest(model: Model) -> str:
    """XXH3-128 over the model's parameters and buffers in memory (names, shapes, dtypes, bytes)."""
    digest = xxhash.xxh3_128()
    for name, tensor in sorted(
        {**dict(model.hf.named_parameters()), **dict(model.hf.named_buffers())}.items()
    ):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_weights(model: Model) -> dict[str, Any]:
    """The content hash of the weights a model computes with: its cache folder's weights files
    (verified when it loaded) when it came from one, else its parameters hashed in memory when
    there are at most `MAX_HASHED_PARAMETERS`, else a note that it was not computed."""
    name = str(getattr(model.hf, "name_or_path", "") or "")
    folder = Path(name).expanduser() if name else None
    found = weights_digest(folder) if folder is not None and folder.is_dir() else None
    if folder is not None and found is not None:
        return {"xxh3_128": found, "of": f"the *.safetensors files of {folder.name} (cache manifest)"}
    n_parameters = sum(p.numel() for p in model.hf.parameters())
    if n_parameters <= MAX_HASHED_PARAMETERS:
        return {"xxh3_128": parameters_digest(model), "of": "parameters and buffers in memory"}
    return {
        "xxh3_128": None,
        "of": f"not computed: {n_parameters} parameters and no steerscope cache manifest",
    }
