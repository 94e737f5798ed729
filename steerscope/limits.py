"""What the data and the model can give, checked against an experiment's settings before any
forward pass, the same way for every experiment.

Counts: `ExperimentConfig.RECORD_COUNTS` names the (kind, split)s each count setting draws from.
`fit_counts` checks a count against what each of them holds: the user's records before the model
loads (`user_holdings`), the model's own data and every kind's text windows (which need its
tokenizer) right after (`suite_holdings`). A count the caller set beyond what the data holds is
an `InputError`; a default or quick count is lowered to it, and results.json says so.

Lengths: `check_record_lengths` tokenises each of the user's records as the model will read it
(through the data suite's prompt template, with the tokens the experiment generates after it)
and refuses one beyond the model's positions, naming the file, the record and the field: a RoPE
model runs past its positions without an error, on positions it never learnt, and a very long
record exhausts memory only after the work before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from steerscope.anatomy import max_positions
from steerscope.context import with_user_data
from steerscope.data.arithmetic import STYLES
from steerscope.data.conflicts import PUSHES, demonstration
from steerscope.data.records import Conflict, ContrastPair, Record, TomStory
from steerscope.data.suite import DataSuite
from steerscope.data.user_data import UserData
from steerscope.errors import InputError
from steerscope.loading import load_config
from steerscope.organisms import ORGANISM_ATTRIBUTE, world_suite
from steerscope.registry import ExperimentConfig
from steerscope.settings import Generated, marked_settings

#: (how many, what they are: "tom records", where: "the eval split of my.jsonl")
Holding = tuple[int, str, str]
#: (count setting, kind, split) -> what that data holds, or None when it is not known here
Holdings = Callable[[str, str, str], Holding | None]
#: Conflict prompts are read with this many demonstrations unless the experiment sets `demos`.
DEFAULT_DEMOS = 3


def _where(source: str, split: str) -> str:
    return f"the {split} split of {source}" if split else source


def user_holdings(user: Mapping[str, UserData]) -> Holdings:
    """What the user's records hold, known before the model loads (text windows need its tokenizer)."""

    def held(field: str, kind: str, split: str) -> Holding | None:
        if kind not in user or kind == "text":
            return None
        data = user[kind]
        rows = data.splits()[split] if split else data.records
        return len(rows), f"{kind} records", _where(data.source, split)

    return held


def suite_holdings(suite: DataSuite, tokenizer: Any, config: ExperimentConfig) -> Holdings:
    """What the model's data suite holds (the user's kinds included): records per split where the
    provider knows its limit, text windows as the experiment cuts them for each count."""

    def held(field: str, kind: str, split: str) -> Holding | None:
        provider = getattr(suite, kind)
        if provider is None:
            return None
        where = _where(provider.source, split)
        if kind == "text":
            window, bos = config.text_window(field, provider.window)
            tokens = (window or provider.window) - bos
            return (
                provider.available(tokenizer, split, window, bos),
                f"text windows of {tokens} tokens",
                where,
            )
        count = provider.available(split)
        return None if count is None else (count, f"{kind} records", where)

    return held


def fit_counts(
    owner: str, config: ExperimentConfig, held: Holdings, explicit: set[str]
) -> tuple[ExperimentConfig, dict[str, dict[str, int]]]:
    """The config with its record counts fitted to what `held` says the data holds: a count the
    caller set (`explicit`) beyond it is an error; a default or quick count is lowered to it.
    Returns the config and {field: {"from": ..., "to": ...}} for every lowered count."""
    changes: dict[str, int] = {}
    lowered: dict[str, dict[str, int]] = {}
    for field, draws in config.RECORD_COUNTS.items():
        value = getattr(config, field)
        for kind, split in draws:
            holding = held(field, kind, split)
            if holding is None:
                continue
            count, what, where = holding
            if count == 0:
                why = " (records are split by a hash of their content)" if what.endswith("records") else ""
                raise InputError(f"{owner}: {where} holds no {what}{why}; give more data")
            current = changes.get(field, value)
            if current is None or current <= count:
                continue
            if field in explicit:
                raise InputError(f"{owner}: {field}={value} needs {value} {what}, but {where} holds {count}")
            changes[field] = count
            lowered[field] = {"from": value, "to": count}
    return (dataclasses.replace(config, **changes) if changes else config), lowered


def _read_texts(
    kind: str, record: Record, suite: DataSuite, demos: int, seed: int
) -> Iterator[tuple[str, str]]:
    """(the field that makes it long, a text the model reads) for every prompt `record` becomes."""
    if isinstance(record, TomStory):
        for continuation in (*record.answers, *record.foils):
            yield "story", record.story + continuation
    elif isinstance(record, Conflict):
        conflicts = suite.conflicts
        field = max(("question", "org_context", "sub_context"), key=lambda name: len(getattr(record, name)))
        pushes = tuple(conflicts.cues) if conflicts.cues is not None else PUSHES
        yield field, conflicts.closed_book_prompt(record, demos, seed)
        for push in pushes:
            for conflict in (True, False):
                yield field, conflicts.knowledge_prompt(record, push, conflict, demos, seed)
    elif isinstance(record, ContrastPair):
        for field in ("positive", "negative"):
            yield field, getattr(record, field) + (record.completion or "")
    elif kind == "problems":
        for style in STYLES:
            yield "question", suite.problems.prompt(record, style)


def _demonstration_allowance(records: Sequence[Record], suite: DataSuite, tokenizer: Any, demos: int) -> int:
    """At most how many tokens `demos` demonstrations add to a conflict prompt: the longest
    demonstration any record gives (any push), with its separator, `demos` times; 0 for an
    organism's cue prompts, which have none."""
    if suite.conflicts.cues is not None or demos == 0:
        return 0
    texts = [demonstration(record, push) for record in records for push in PUSHES]
    return demos * (max(len(ids) for ids in tokenizer(texts).input_ids) + 2)


def _longest(tokenizer: Any, read: list[tuple[str, str]]) -> tuple[int, str]:
    """(tokens, field) of the longest text in `read`."""
    lengths = [len(ids) for ids in tokenizer([text for _, text in read]).input_ids]
    longest = max(range(len(read)), key=lengths.__getitem__)
    return lengths[longest], read[longest][0]


def check_record_lengths(
    user: Mapping[str, UserData],
    suite: DataSuite,
    tokenizer: Any,
    positions: int | None,
    model: str,
    demos: int = DEFAULT_DEMOS,
    seed: int = 0,
    generated: int = 0,
) -> None:
    """Each of the user's records, read through `suite`'s prompts (`demos` demonstrations drawn
    with `seed`) with `generated` tokens after it, within the `positions` of `model`.

    A conflict prompt is first bounded by its question with the longest demonstrations any record
    gives; only a record whose bound does not fit is measured with its own demonstrations (drawing
    them scans every record, too slow to do for each record of NQ-Swap)."""
    if positions is None:
        return
    for kind, data in user.items():
        if kind == "text":  # cut into windows, whose size is a setting checked on its own
            continue
        allowance = (
            _demonstration_allowance(data.records, suite, tokenizer, demos) if kind == "conflicts" else 0
        )
        for location, record in zip(data.locations, data.records, strict=True):
            read = list(dict.fromkeys(_read_texts(kind, record, suite, 0 if allowance else demos, seed)))
            if not read:
                continue
            tokens, field = _longest(tokenizer, read)
            if allowance and tokens + allowance + generated > positions:
                tokens, field = _longest(tokenizer, list(_read_texts(kind, record, suite, demos, seed)))
            if tokens + generated > positions:
                plus = f" + {generated} generated" if generated else ""
                raise InputError(
                    f"{data.source} {location}: field '{field}' is too long: the model reads {tokens} tokens"
                    f"{plus} for it, beyond the {positions} positions of {model}; shorten it"
                )


def fit_to_model(
    owner: str, config: ExperimentConfig, context: Any, user: Mapping[str, UserData], explicit: set[str]
) -> ExperimentConfig:
    """`config` with its counts fitted to the loaded model's data suite, after the user's records
    are checked to fit its positions; a lowered count is added to the context's provenance."""
    model = context.model
    generated = max(
        (value for values in marked_settings(config, Generated).values() for value in values), default=0
    )
    check_record_lengths(
        user, context.data, model.tokenizer, model.anatomy.max_positions, model.source,
        getattr(config, "demos", DEFAULT_DEMOS), config.seed, generated,
    )  # fmt: skip
    config, lowered = fit_counts(
        owner, config, suite_holdings(context.data, model.tokenizer, config), explicit
    )
    if lowered:
        context.provenance.setdefault("settings_lowered_to_fit_data", {}).update(lowered)
    return config


def check_fits(user: UserData, source: str, tokenizer: Any) -> None:
    """`steerscope data check --model`: the user's records against the positions of the model
    `source` (read from its config, weights not loaded), through the prompts of the model's own
    data suite with `DEFAULT_DEMOS` demonstrations and nothing generated."""
    config = load_config(source)
    suite = with_user_data(world_suite(getattr(config, ORGANISM_ATTRIBUTE, None)), {user.kind: user})
    check_record_lengths({user.kind: user}, suite, tokenizer, max_positions(config), source)
