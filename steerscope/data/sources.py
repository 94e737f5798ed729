"""Read the raw rows of a user's data source, with where each came from and a sha256 of what was read.

JSON Lines and JSON go through Python's `json`, so an error can name the line and a record's
values arrive exactly as written (Arrow's JSON reader rejects a column whose type changes between
rows before any record could be checked, and renumbers records). CSV, Parquet, folders saved by
`datasets` (`save_to_disk`) and the Hugging Face hub go through HF `datasets`; local files are
read with a temporary cache folder, so nothing is written next to the user's data or left behind.
Plain `.txt` (the text kind only) is split into paragraphs on blank lines.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerscope.errors import InputError

HUB_PREFIX = "hf:"
FILE_FORMATS = (".jsonl", ".json", ".csv", ".parquet", ".txt")
FORMATS = (*FILE_FORMATS, "a folder saved by datasets", "hf:NAME[:SPLIT]", "hf:NAME:CONFIG:SPLIT")


@dataclass(frozen=True)
class Row:
    """One raw record: a dict of fields (a paragraph's text for `.txt`) and where it was found."""

    location: str  # "line 7" (JSON Lines), "row 3" (CSV), "record 2", "paragraph 4"
    values: Any


@dataclass(frozen=True)
class RawSource:
    """The rows of a source; `sha256` covers the bytes read (`hashed` says which)."""

    source: str
    sha256: str
    hashed: str  # "file", "folder" (every file, by relative path) or "records" (hub rows as JSON)
    rows: list[Row]


def read_source(source: str) -> RawSource:
    """The rows of `source`: a file, a `datasets` folder, or `hf:NAME[:CONFIG][:SPLIT]`."""
    if source.startswith(HUB_PREFIX):
        return _read_hub(source)
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(source, path)
    if not path.is_file():
        raise InputError(f"{source}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise InputError(
            f"{source}: unknown format {suffix or '(no extension)'!r}; valid: {', '.join(FORMATS)}"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if suffix == ".csv":
        _check_csv(source, _decoded(source, data))
    if suffix in (".csv", ".parquet"):
        builder = suffix.removeprefix(".")
        rows = [
            Row(_location(suffix, i), r) for i, r in enumerate(_read_with_datasets(source, builder, path))
        ]
        return RawSource(source, digest, "file", rows)
    text = _decoded(source, data)
    if suffix == ".jsonl":
        rows = list(_json_lines(source, text))
    elif suffix == ".json":
        rows = _json_list(source, text)
    else:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text)]
        rows = [Row(f"paragraph {i + 1}", p) for i, p in enumerate(p for p in paragraphs if p)]
    return RawSource(source, digest, "file", rows)


def _location(suffix: str, index: int) -> str:
    return f"row {index + 1}" if suffix == ".csv" else f"record {index + 1}"


def _decoded(source: str, data: bytes) -> str:
    """`data` as UTF-8 text (a BOM allowed); UTF-16 (with its BOM, or ASCII with NUL bytes between
    the letters) is named as such."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise InputError(f"{source}: UTF-16 text (or binary), not UTF-8; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{source}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None


_CSV_PROBLEMS = {
    "unexpected end of data": 'a quoted field is never closed (it opens with " and no " ends it)',
    "',' expected after '\"'": 'a " inside a quoted field must be doubled ("") or the field closed',
}


def _check_csv(source: str, text: str) -> None:
    """What a CSV reader would silently merge or fail on vaguely, in one line naming the row: an
    unbalanced quote (which swallows the rows after it) or a row whose field count differs from
    the header's. Rows are counted as records are ("row 1" is the first after the header)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, row, start = None, 0, 1
    limit = csv.field_size_limit(len(text) + 1)  # no field is too long; restored below
    try:
        for fields in reader:
            if header is None:
                header = fields
            elif fields:
                row += 1
                if len(fields) != len(header):
                    hint = (
                        "quote a field that holds a comma"
                        if len(fields) > len(header)
                        else "give every column"
                    )
                    raise InputError(
                        f"{source} row {row} (line {start}): {len(fields)} fields, but the header has "
                        f"{len(header)} ({', '.join(header)}); {hint}"
                    )
            start = reader.line_num + 1
    except csv.Error as error:
        problem = _CSV_PROBLEMS.get(str(error), str(error))
        raise InputError(f"{source} row {row + 1} (line {start}): {problem}") from None
    finally:
        csv.field_size_limit(limit)


def _json_lines(source: str, text: str) -> Iterator[Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield Row(f"line {number}", json.loads(line))
        except json.JSONDecodeError as error:
            raise InputError(
                f"{source} line {number}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None


def _json_list(source: str, text: str) -> list[Row]:
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{source}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if not isinstance(loaded, list):
        raise InputError(
            f"{source}: a .json source must hold a list of records, got {type(loaded).__name__}; "
            "one record per line is .jsonl"
        )
    return [Row(f"record {i + 1}", r) for i, r in enumerate(loaded)]


@contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """The `datasets` module with its progress bars off for the block (restored after)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _read_with_datasets(source: str, builder: str, path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV or Parquet file via `datasets`, with a throwaway cache folder."""
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(prefix="steerscope-data-") as cache:
        try:
            table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache)
            return table.to_list()
        except Exception as error:  # a malformed file: pyarrow / pandas errors of many types
            raise InputError(
                f"{source}: could not read as {builder.upper()} ({_first_line(error)})"
            ) from None


def _read_folder(source: str, path: Path) -> RawSource:
    """A folder saved by `datasets.Dataset.save_to_disk` (or a one-split `DatasetDict`)."""
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise InputError(
            f"{source}: a folder must be saved by datasets (save_to_disk: state.json or dataset_dict.json inside)"
        )
    with _quiet_datasets() as datasets:
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as error:
            raise InputError(f"{source}: could not load the saved data set ({_first_line(error)})") from None
        table = _one_split(source, loaded, lambda split: f"give the split's folder, e.g. {path / split}")
        rows = table.to_list()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return RawSource(
        source, digest.hexdigest(), "folder", [Row(f"record {i + 1}", r) for i, r in enumerate(rows)]
    )


def _one_split(source: str, loaded: Any, example: Callable[[str], str]) -> Any:
    """A `Dataset` as is; the only split of a `DatasetDict`; else an error listing the splits
    with `example(split)` showing how to choose one."""
    if not hasattr(loaded, "keys"):
        return loaded
    splits = list(loaded.keys())
    if len(splits) != 1:
        raise InputError(f"{source}: holds the splits {', '.join(splits)}; choose one ({example(splits[0])})")
    return loaded[splits[0]]


def parse_hub(source: str) -> tuple[str, str | None, str | None]:
    """(name, config, split) of `hf:NAME`, `hf:NAME:SPLIT` or `hf:NAME:CONFIG:SPLIT`."""
    parts = source.removeprefix(HUB_PREFIX).split(":")
    if not parts[0] or len(parts) > 3 or not all(parts):
        raise InputError(f"{source}: a hub source is hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return parts[0], None, parts[1] if len(parts) == 2 else None


def _offline() -> bool:
    flags = {os.environ.get(name, "").lower() for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    return bool(flags & {"1", "true", "yes", "on"})


def _read_hub(source: str) -> RawSource:
    """Rows of a Hugging Face hub data set through `datasets` (its own cache serves later runs)."""
    name, config, split = parse_hub(source)
    with _quiet_datasets() as datasets:
        try:
            loaded = datasets.load_dataset(name, config, split=split)
        except (ConnectionError, OSError) as error:
            why = "the hub is set offline (HF_HUB_OFFLINE)" if _offline() else _first_line(error)
            raise InputError(
                f"{source}: needs network access to the Hugging Face hub or a local copy "
                f"(save_to_disk folder or .jsonl); {why}"
            ) from None
        except Exception as error:  # unknown name, config or split
            raise InputError(
                f"{source}: could not load from the Hugging Face hub ({_first_line(error)})"
            ) from None
        table = _one_split(source, loaded, lambda first: f"e.g. hf:{name}:{first}")
        rows = table.to_list()
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return RawSource(source, digest, "records", [Row(f"record {i + 1}", r) for i, r in enumerate(rows)])


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
