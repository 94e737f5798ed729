"""A user's data of one kind: validated records, duplicates dropped and counted, split by a hash of
each record's content (so adding records never moves the others between splits)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerscope.data.records import ContrastPair, Record, check_kind, parse_record
from steerscope.data.sources import read_source
from steerscope.errors import InputError

#: Each kind's splits in hash order with their shares: a record goes to the first split whose
#: cumulative share exceeds its hash fraction, so a larger held-out share only moves records into it.
SPLITS: dict[str, tuple[tuple[str, float], ...]] = {
    "tom": (("fisher", 0.5), ("eval", 0.5)),
    "conflicts": (("held_out", 0.3), ("train", 0.7)),  # experiments pass their own held-out share
    "problems": (("heldout", 0.25), ("train", 0.75)),
    "pairs": (("heldout", 0.25), ("train", 0.75)),
}


def content_fraction(record: Record, salt: str = "") -> float:
    """A number in [0, 1) fixed by the record's content alone (and `salt`, so that uses of the
    hash, e.g. a split and a subset, are independent of each other)."""
    content = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else record
    digest = hashlib.sha256((salt + json.dumps(content, sort_keys=True, default=str)).encode()).hexdigest()
    return int(digest[:16], 16) / 2**64


def split_by_hash(records: Sequence[Record], shares: Sequence[tuple[str, float]]) -> dict[str, list[Record]]:
    """{split: records in source order}, each record placed by `content_fraction`."""
    out: dict[str, list[Record]] = {name: [] for name, _ in shares}
    for record in records:
        fraction, bound = content_fraction(record), 0.0
        for name, share in shares:
            bound += share
            if fraction < bound or name == shares[-1][0]:
                out[name].append(record)
                break
    return out


def held_out_shares(held_out: float) -> tuple[tuple[str, float], ...]:
    """Conflict split shares for a held-out fraction in [0, 1]."""
    if not 0 <= held_out <= 1:
        raise InputError(f"held_out must be a fraction in [0, 1], got {held_out}")
    return (("held_out", held_out), ("train", 1 - held_out))


@dataclass(frozen=True)
class UserData:
    """Records of one kind read from `source`; `sha256` covers the bytes read (`hashed` says which)."""

    kind: str
    source: str
    sha256: str
    hashed: str
    records: tuple[Record, ...]
    n_read: int
    duplicates: int
    locations: tuple[str, ...] = ()  # where each record was first found ("line 7"), for errors

    def splits(self, shares: Sequence[tuple[str, float]] | None = None) -> dict[str, list[Record]]:
        """The records by split (the kind's default shares, or `shares`); text has one split, "all"."""
        shares = shares or SPLITS.get(self.kind)
        return split_by_hash(self.records, shares) if shares else {"all": list(self.records)}

    def provenance(self) -> dict[str, Any]:
        """What results.json records about the source: where, its sha256, counts and split sizes."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "sha256_of": self.hashed,
            "records": len(self.records),
            "duplicates_dropped": self.duplicates,
            "splits": {name: len(rows) for name, rows in self.splits().items()},
        }


def read_user_data(kind: str, source: str) -> UserData:
    """Read, validate and deduplicate `source` as records of `kind`; any problem is an `InputError`."""
    check_kind(kind)
    raw = read_source(source)
    located: list[tuple[str, Record]] = []
    for row in raw.rows:
        if isinstance(row.values, str):  # a .txt paragraph
            if kind != "text":
                raise InputError(
                    f"{source}: a .txt file is plain text, which only the text kind takes; "
                    f"give {kind} records as .jsonl, .json, .csv, .parquet, a datasets folder or hf:NAME"
                )
            located.append((row.location, row.values))
        else:
            located.append((row.location, parse_record(kind, source, row.location, row.values)))
    if not located:
        raise InputError(f"{source}: no records")
    if kind == "pairs":
        _check_completions(source, located)
    first: dict[Record, str] = {}
    for location, record in located:
        first.setdefault(record, location)
    unique = tuple(first)
    return UserData(
        kind,
        source,
        raw.sha256,
        raw.hashed,
        unique,
        len(located),
        len(located) - len(unique),
        tuple(first.values()),
    )


def _check_completions(source: str, located: list[tuple[str, ContrastPair]]) -> None:
    """A vector is read either at the last prompt token or over completions: not a mix of both."""
    first_location, first = located[0]
    for location, pair in located:
        if (pair.completion is None) != (first.completion is None):
            has = "has" if pair.completion is not None else "lacks"
            other = "lacks" if pair.completion is not None else "has"
            raise InputError(
                f"{source} {location}: {has} a 'completion' while {first_location} {other} one; "
                "give a completion in every pair or in none"
            )
