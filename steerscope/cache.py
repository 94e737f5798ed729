"""Atomic, verified folders in the steerscope cache (`$STEERSCOPE_CACHE`, default ~/.cache/steerscope).

A cached artefact is built in a temporary sibling folder, given a manifest of its files' sizes
and full-file XXH3-128 hashes (`steerscope.hashing`), made world-readable (files 0644, folders
0755) and renamed into place in one step; a lock file serialises builders, so concurrent loads
or a kill mid-build never leave a half-written entry. Every load re-hashes every byte: a folder
whose files differ from its manifest in any way (a changed byte, a missing or extra file, an
older manifest format) is rebuilt, with a warning that says what was wrong.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, data_digest, file_digest

MANIFEST = "steerscope-manifest.json"
_FORMAT = 2


CACHE_VARIABLE = "STEERSCOPE_CACHE"


def cache_root() -> Path:
    """The cache folder: `$STEERSCOPE_CACHE` (`~` expanded) or ~/.cache/steerscope."""
    return Path(os.environ.get(CACHE_VARIABLE, Path.home() / ".cache" / "steerscope")).expanduser()


def check_writable(folder: Path, what: str, fix: str = "") -> None:
    """`folder` is a folder or can be created, in a place this process can write (tried by
    creating and removing a file there: mode bits alone say nothing for root or a read-only
    mount), without creating it; else an `InputError` starting with `what`, ending with `fix`."""
    advice = f"; {fix}" if fix else ""
    place = folder
    try:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{what}: is a file; {fix or 'give a folder'}")
        while not place.exists():
            place = place.parent
        if not place.is_dir():
            raise InputError(f"{what}: {place} is a file, so the folder cannot be created{advice}")
        handle, probe = tempfile.mkstemp(prefix=".steerscope-write-check.", dir=place)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"{what}: cannot write in {place} ({error.strerror}){advice}") from None


def check_cache() -> Path:
    """The cache folder, checked to be a folder this process can write (or create), before any
    work that would build into it; else one line naming `$STEERSCOPE_CACHE`."""
    root = cache_root()
    named = f" ({CACHE_VARIABLE})" if CACHE_VARIABLE in os.environ else ""
    check_writable(root, f"steerscope cache {root}{named}", f"set {CACHE_VARIABLE} to a folder you can write")
    return root


def _files(folder: Path) -> list[str]:
    """Every file under `folder` but the manifest, as sorted relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _manifest_of(folder: Path) -> dict:
    files = {
        name: {"bytes": (folder / name).stat().st_size, HASH_NAME: file_digest(folder / name)}
        for name in _files(folder)
    }
    return {"format": _FORMAT, "hash": HASH_NAME, "files": files}


def damage(folder: Path) -> str | None:
    """What is wrong with the cached `folder` (a short phrase), or None when every file matches its
    manifest byte for byte. Sizes are compared first, so truncation is found without hashing."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no manifest" if folder.exists() else "missing"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != _FORMAT or manifest.get("hash") != HASH_NAME:
            return f"manifest of an older format ({manifest.get('format', 1)})"
        expected = manifest["files"]
        found = _files(folder)
        if sorted(expected) != found:
            changed = sorted(set(expected).symmetric_difference(found))
            return f"files missing or added: {', '.join(changed)}"
        for name, entry in expected.items():
            if (folder / name).stat().st_size != entry["bytes"]:
                return f"{name} has {(folder / name).stat().st_size} bytes, expected {entry['bytes']}"
        for name, entry in expected.items():
            if file_digest(folder / name) != entry[HASH_NAME]:
                return f"{name} changed (its {HASH_NAME} differs from the manifest)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"unreadable manifest or file ({error.__class__.__name__}: {error})"
    return None


def is_intact(folder: Path) -> bool:
    """True when `folder` has a manifest and every file in it still matches the manifest exactly."""
    return damage(folder) is None


def weights_digest(folder: Path) -> str | None:
    """XXH3-128 over the names and manifest hashes of the `*.safetensors` files of a cached
    folder: its content as far as computing goes (reports and configs, which hold timings and
    paths, left out); None when the folder has no readable manifest or no weights. Read from the
    manifest, so it says what the folder held when last verified (`is_intact`)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        weights = sorted(
            (name, entry[HASH_NAME]) for name, entry in files.items() if name.endswith(".safetensors")
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return data_digest(json.dumps(weights).encode()) if weights else None


def _make_readable(folder: Path) -> None:
    """Folders 0755 and files 0644, whatever modes the builder's writers chose."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


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

    Returns the folder and whether it was built now. A damaged folder is rebuilt with a warning.
    """
    if is_intact(folder):
        return folder, False
    if cache_root() in folder.parents:
        check_cache()
    else:
        check_writable(folder.parent, f"cache folder {folder.parent}")
    with _lock(folder.with_name(folder.name + ".lock")):
        problem = damage(folder)
        if problem is None:  # another process built it while we waited
            return folder, False
        if problem != "missing":
            warnings.warn(
                f"steerscope cache: {folder} failed verification ({problem}); rebuilding it", stacklevel=2
            )
        build_in_place(folder, build)
    return folder, True


def build_in_place(folder: Path, build: Callable[[Path], None]) -> None:
    """Build `folder` with `build(tmp)` in a temporary sibling, give it its manifest and readable
    modes, and rename it into place, replacing what was there. Not locked: `cached_folder` holds
    the lock around it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(folder.name + ".tmp-*"):  # left by a killed builder
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        build(tmp)
        _make_readable(tmp)
        (tmp / MANIFEST).write_text(json.dumps(_manifest_of(tmp), indent=1))
        (tmp / MANIFEST).chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write, renamed onto `path` when the block ends without an
    exception and removed when it raises: for writers that take a path, not bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file via a temporary sibling and a rename, so readers never see half of it."""
    with atomic_file(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
