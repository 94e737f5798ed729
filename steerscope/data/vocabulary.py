"""Which words of a user's records a tokenizer cannot read: an organism's word-level tokenizer maps
every word outside its world to one unknown token, so such data would be read as noise."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from steerscope.data.records import Conflict, ContrastPair, Record, TomStory


def record_texts(record: Record) -> Iterable[str]:
    """Every piece of text of a record that the model will read."""
    if isinstance(record, str):
        yield record
    elif isinstance(record, TomStory):
        yield from (record.story, *record.answers, *record.foils)
    elif isinstance(record, Conflict):
        yield from (
            record.question,
            record.org_context,
            record.sub_context,
            *record.org_answer,
            *record.sub_answer,
        )
    elif isinstance(record, ContrastPair):
        yield from (record.positive, record.negative, *([record.completion] if record.completion else []))
    else:  # a word problem
        yield record.question


def unknown_words(tokenizer: Any, texts: Iterable[str]) -> list[str]:
    """The pieces of `texts` the tokenizer maps to its unknown token, first occurrence first."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    found: dict[str, None] = {}
    for text in texts:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
            if token == unk:
                found.setdefault(text[start:end].strip() or text[start:end], None)
    return list(found)
