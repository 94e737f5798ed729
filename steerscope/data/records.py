"""The record types of the data kinds a user can give, and their validation from raw rows.

Field names follow public schemas where one exists: NQ-Swap for knowledge conflicts (Longpre et
al. 2021, as used by SpARE, arXiv 2410.15999), GSM8K for word problems (Cobbe et al. 2021).
Answer-like fields take a string or a list of accepted strings; extra fields are ignored. Records
are checked for meaning as well as shape, as the scorers will read them: a ToM foil that is also an
answer (every margin 0), a conflict whose substitute matches the same outputs as the original
answer, a contrast pair whose two prompts are one text, a number outside what compares exactly.
A bad record stops everything with one line naming the source, the record and the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from steerscope.data.arithmetic import Problem
from steerscope.data.facts import normalise_answer
from steerscope.errors import InputError

#: The data kinds, each with its required and optional fields.
SCHEMAS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tom": (("story", "answer", "foil", "false_belief"), ("kind",)),
    "conflicts": (("question", "org_context", "org_answer", "sub_context", "sub_answer"), ()),
    "problems": (("question", "answer"), ()),
    "text": (("text",), ()),
    "pairs": (("positive", "negative"), ("completion",)),
}
KINDS = tuple(SCHEMAS)
#: The largest answer a word problem may have: every integer up to 2**53 is exact as a float, so a
#: generated "72", "72.0" or "72.00" compares equal to it.
MAX_ANSWER = 2**53


@dataclass(frozen=True)
class TomStory:
    """A Theory-of-Mind item: a story that stops right before the answer, the belief-consistent
    continuations (`answers`, any of them is right) and the other candidate(s) the story names
    (`foils`). Continuations carry their leading space, as the model would write them."""

    story: str
    answers: tuple[str, ...]
    foils: tuple[str, ...]
    false_belief: bool
    kind: str | None = None


@dataclass(frozen=True)
class Conflict:
    """A knowledge conflict in the NQ-Swap schema: a question, the context that states the true
    answer (`org_context`, `org_answer`) and the one that swaps in a substitute (`sub_context`,
    `sub_answer`). Answers are tuples of accepted strings; the first is the one demonstrations show."""

    question: str
    org_context: str
    org_answer: tuple[str, ...]
    sub_context: str
    sub_answer: tuple[str, ...]


@dataclass(frozen=True)
class ContrastPair:
    """Two prompts that differ in the behaviour a steering vector should carry; with `completion`,
    activations are read over the completion's tokens after each prompt."""

    positive: str
    negative: str
    completion: str | None = None


Record = TomStory | Conflict | Problem | ContrastPair | str


class RecordReader:
    """The fields of one raw row, checked one by one; every failure names source, record and field."""

    def __init__(self, source: str, location: str, kind: str, values: Mapping[str, Any]) -> None:
        self.source, self.location, self.kind, self.values = source, location, kind, values

    def fail(self, field: str, problem: str) -> InputError:
        return InputError(f"{self.source} {self.location}: field '{field}' {problem}")

    def _get(self, field: str, optional: bool) -> Any:
        value = self.values.get(field)
        if value is None and not optional:
            required, extra = SCHEMAS[self.kind]
            need = ", ".join(required) + (f" (optional: {', '.join(extra)})" if extra else "")
            raise InputError(
                f"{self.source} {self.location}: missing field '{field}'; {self.kind} records need {need}"
            )
        return value

    def text(self, field: str, optional: bool = False) -> str | None:
        """A non-empty string."""
        value = self._get(field, optional)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, f"must be non-empty text, got {_shown(value)}")
        return value

    def answers(self, field: str) -> tuple[str, ...]:
        """A non-empty string or a non-empty list of them (accepted alternatives)."""
        value = self._get(field, False)
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise self.fail(field, f"must be text or a list of texts, got {_shown(value)}")
        return tuple(dict.fromkeys(items))

    def flag(self, field: str) -> bool:
        """true or false (CSV cells "true" / "false" too)."""
        value = self._get(field, False)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.fail(field, f"must be true or false, got {_shown(value)}")

    def final_number(self, field: str) -> int | float:
        """A number within +-`MAX_ANSWER`, or text ending in `#### N` (GSM8K), or a bare number as text."""
        value = self._get(field, False)
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            tail = value.rsplit("####", 1)[-1].strip().replace(",", "").removeprefix("$")
            if re.fullmatch(r"-?\d+(\.\d+)?", tail):
                number = float(tail) if "." in tail else int(tail)
        if number is None:
            raise self.fail(field, f"must be a number or text ending in '#### <number>', got {_shown(value)}")
        if not (isinstance(number, int) or math.isfinite(number)) or abs(number) > MAX_ANSWER:
            raise self.fail(
                field, f"must be a number within +-{MAX_ANSWER} (exact as a float), got {_shown(value)}"
            )
        return _exact(number)


def _exact(number: int | float) -> int | float:
    """An integral float as an int (GSM8K answers are compared numerically either way)."""
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _shown(value: Any) -> str:
    """The value as it would appear in JSON, cut short."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _continuation(story: str, answer: str) -> str:
    """The answer as the model would write it after the story: with a leading space, unless the
    story ends in whitespace or the answer already starts with it."""
    return answer if story[-1:].isspace() or answer[:1].isspace() else " " + answer


def _same_words(text: str) -> str:
    """`text` with case and spacing ignored: two continuations a ToM scorer cannot tell apart."""
    return " ".join(text.split()).casefold()


def _tom(row: RecordReader) -> TomStory:
    story = row.text("story")
    answers, foils = row.answers("answer"), row.answers("foil")
    answer_words = {_same_words(a): a for a in answers}
    for foil in foils:
        if _same_words(foil) in answer_words:
            raise row.fail(
                "foil",
                f"{_shown(foil)} is also an answer ({_shown(answer_words[_same_words(foil)])}, case and "
                "spacing ignored): the score compares log p(answer) with log p(foil), so its margin "
                "would be 0; give the other candidate the story names",
            )
    return TomStory(
        story=story,
        answers=tuple(_continuation(story, a) for a in answers),
        foils=tuple(_continuation(story, f) for f in foils),
        false_belief=row.flag("false_belief"),
        kind=row.text("kind", optional=True),
    )


def _matchable(row: RecordReader, field: str) -> dict[str, str]:
    """{normalised answer: answer} of an answer field, as `facts.starts_with_answer` compares them;
    an answer nothing can match (only articles and punctuation) is an error."""
    normalised = {}
    for answer in row.answers(field):
        if not normalise_answer(answer):
            raise row.fail(
                field,
                f"{_shown(answer)} is empty once case, articles and punctuation are ignored, so no "
                "output can match it",
            )
        normalised[normalise_answer(answer)] = answer
    return normalised


def _conflict(row: RecordReader) -> Conflict:
    record = Conflict(
        question=row.text("question"),
        org_context=row.text("org_context"),
        org_answer=row.answers("org_answer"),
        sub_context=row.text("sub_context"),
        sub_answer=row.answers("sub_answer"),
    )
    original = _matchable(row, "org_answer")
    for sub, sub_answer in _matchable(row, "sub_answer").items():
        for org, org_answer in original.items():
            if sub == org or sub.startswith(org + " ") or org.startswith(sub + " "):
                raise row.fail(
                    "sub_answer",
                    f"{_shown(sub_answer)} matches the same outputs as org_answer {_shown(org_answer)} "
                    "(case, articles and punctuation ignored, an answer matches the start of an "
                    "output); a conflict needs a substitute that differs",
                )
    return record


def _problem(row: RecordReader) -> Problem:
    return Problem(
        kind="user",
        steps=0,
        params={},
        question=row.text("question"),
        answer=row.final_number("answer"),
        solutions={},
    )


def _pair(row: RecordReader) -> ContrastPair:
    pair = ContrastPair(row.text("positive"), row.text("negative"), row.text("completion", optional=True))
    if pair.positive == pair.negative:
        raise row.fail(
            "negative", "is the same text as 'positive'; the two prompts of a contrast pair must differ"
        )
    return pair


def _text(row: RecordReader) -> str:
    return row.text("text")


PARSERS: dict[str, Callable[[RecordReader], Record]] = {
    "tom": _tom,
    "conflicts": _conflict,
    "problems": _problem,
    "text": _text,
    "pairs": _pair,
}


def check_kind(kind: str) -> str:
    """`kind` if it is a data kind, else an error listing them."""
    if kind not in SCHEMAS:
        raise InputError(f"unknown data kind {kind!r}; valid: {', '.join(KINDS)}")
    return kind


def parse_record(kind: str, source: str, location: str, values: Any) -> Record:
    """One validated record of `kind` from a raw row (a JSON object, CSV row, ... as a dict)."""
    if not isinstance(values, Mapping):
        raise InputError(
            f"{source} {location}: a record must be an object with named fields, got {_shown(values)}"
        )
    return PARSERS[check_kind(kind)](RecordReader(source, location, kind, values))


def describe(kind: str) -> str:
    """`question, answer` style list of a kind's fields, for help texts and errors."""
    required, optional = SCHEMAS[check_kind(kind)]
    return ", ".join(required) + "".join(f", [{f}]" for f in optional)
