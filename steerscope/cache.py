"""Atomic, verified folders in the steerscope cache (`$STEERSCOPE_CACHE`, default ~/.cache/steerscope).

A cached artefact is built in a temporary sibling folder, given a manifest of its files'
sizes and sampled digests, and renamed into place in one step; a lock file serialises
builders, so concurrent loads or a kill mid-build never leave a half-written entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "steerscope-manifest.json"
_SAMPLES = 64
_SAMPLE_BYTES = 1 << 16


def cache_root() -> Path:
    """The cache folder: `$STEERSCOPE_CACHE` or ~/.cache/steerscope."""
    return Path(os.environ.get("STEERSCOPE_CACHE", Path.home() / ".cache" / "steerscope"))


def _sampled_digest(path: Path) -> str:
    """sha256 over evenly spaced 64 KiB blocks and the size: catches truncation and most damage
    in well under a second for a 1 GB file (a full hash would cost ~2 s on every load)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        for i in range(_SAMPLES):
            handle.seek(max(0, (size - _SAMPLE_BYTES) * i // max(1, _SAMPLES - 1)))
            digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _manifest_of(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): _sampled_digest(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def is_intact(folder: Path) -> bool:
    """True when `folder` has a manifest and every listed file still matches it."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        expected = json.loads(manifest_path.read_text())["files"]
        return all(
            (folder / name).is_file() and _sampled_digest(folder / name) == digest
            for name, digest in expected.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_folder(folder: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return `folder`, building it with `build(tmp)` first if it is missing or damaged.

    Returns the folder and whether it was built now.
    """
    if is_intact(folder):
        return folder, False
    with _lock(folder.with_name(folder.name + ".lock")):
        if is_intact(folder):  # another process built it while we waited
            return folder, False
        for stale in folder.parent.glob(folder.name + ".tmp-*"):  # left by a killed builder
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
        tmp.chmod(0o755)
        try:
            build(tmp)
            (tmp / MANIFEST).write_text(json.dumps({"files": _manifest_of(tmp)}, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, True


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file via a temporary sibling and a rename, so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    os.fchmod(fd, 0o644)
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
