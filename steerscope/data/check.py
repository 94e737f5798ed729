"""`steerscope data check`: what a data source holds, as an experiment would read it, without running
anything: counts, duplicates, split sizes, the first records and, given a tokenizer, how many
answers take several tokens and which words it does not know."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from steerscope.data.records import Conflict, Record, TomStory
from steerscope.data.user_data import UserData
from steerscope.data.vocabulary import record_texts, unknown_words

SHOWN_RECORDS = 3
SHOWN_CHARACTERS = 240


def _compact(record: Record) -> str:
    content = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else {"text": record}
    if "solutions" in content:  # a word problem: only what the user gave
        content = {"question": content["question"], "answer": content["answer"]}
    text = json.dumps(content, ensure_ascii=False)
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + "..."


def answer_continuations(record: Record) -> dict[str, list[str]]:
    """The continuations a model is scored or matched on, by field, with the space it writes first."""
    if isinstance(record, TomStory):
        return {"answer": list(record.answers), "foil": list(record.foils)}
    if isinstance(record, Conflict):
        return {
            "org_answer": [" " + a for a in record.org_answer],
            "sub_answer": [" " + a for a in record.sub_answer],
        }
    if hasattr(record, "answer"):  # a word problem
        return {"answer": [f" {record.answer}"]}
    return {}


def several_tokens(tokenizer: Any, records: Iterable[Record]) -> dict[str, tuple[int, int]]:
    """{field: (continuations of several tokens, all continuations)}."""
    counts: dict[str, list[int]] = {}
    for record in records:
        for field, texts in answer_continuations(record).items():
            seen = counts.setdefault(field, [0, 0])
            for text in texts:
                seen[0] += len(tokenizer(text, add_special_tokens=False).input_ids) > 1
                seen[1] += 1
    return {field: (several, total) for field, (several, total) in counts.items()}


def report(user: UserData, tokenizer: Any = None, model_name: str | None = None) -> list[str]:
    """The lines `steerscope data check` prints."""
    splits = user.splits()
    lines = [
        f"{user.source}: {len(user.records)} {user.kind} records ({user.n_read} read, "
        f"{user.duplicates} duplicates dropped)",
        f"sha256 {user.sha256} (of the {user.hashed})",
        "splits (by content hash): " + ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()),
        f"first {min(SHOWN_RECORDS, len(user.records))} records:",
        *(f"  {_compact(r)}" for r in user.records[:SHOWN_RECORDS]),
    ]
    if tokenizer is None:
        return lines
    for field, (several, total) in several_tokens(tokenizer, user.records).items():
        lines.append(
            f"{field}: {several} of {total} tokenise to several tokens with {model_name}'s tokenizer"
        )
    missing = unknown_words(tokenizer, (t for r in user.records for t in record_texts(r)))
    if missing:
        shown = ", ".join(repr(w) for w in missing[:20])
        lines.append(f"unknown to {model_name}'s tokenizer ({len(missing)} words): {shown}")
    return lines
