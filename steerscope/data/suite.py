"""`DataSuite`: the data an experiment asks a model about, one provider per data kind.

A pretrained model's default suite holds the natural-language sets steerscope writes itself, a
model organism's the synthetic world it was trained on (`steerscope.data.defaults`). A user's data
of a kind replaces that kind's records while keeping the model's way of asking: the few-shot
prompts of a pretrained model, the cue prompts of an organism (`with_user`). Experiments use only
the providers below, so one experiment runs unchanged on Gemma 3 270M, on an organism and on a
user's files.

Knowledge prompts take a `push` ("context", "memory" or "none") toward one source: few-shot
demonstrations on natural data (SpARE's setup), a cue line on an organism.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steerscope.data.arithmetic import Problem, Style
from steerscope.data.conflicts import (
    choose_demonstrations,
    cue_closed_book,
    cue_context_prompt,
    few_shot_closed_book,
    few_shot_context_prompt,
)
from steerscope.data.facts import split_facts
from steerscope.data.generic import count_windows, generic_windows
from steerscope.data.records import Conflict, ContrastPair
from steerscope.data.user_data import UserData, content_fraction, held_out_shares, split_by_hash
from steerscope.errors import InputError

#: (split, n, seed) -> ToM items (`steerscope.data.tom.TomItem` or `TomStory`)
TomItems = Callable[[str, int, int], list[Any]]
#: split ("" for a source without splits) -> how many records a provider can give, None when it
#: has no known limit (its draw says when it runs short)
Available = Callable[[str], int | None]


def no_known_limit(split: str) -> None:
    """The `Available` of a generator whose limit is unknown or too large to matter."""
    return None


def _take(user: UserData, split: str | None, rows: list[Any], n: int | None) -> list[Any]:
    """`n` records of a user split (all for None), or an error saying how many it holds.

    A subset is the `n` records with the lowest content hash (salted, so a subset taken before a
    split does not lean toward one split), in source order: it does not depend on how the file is
    sorted, and adding records never reshuffles it.
    """
    if n is None or n == len(rows):
        return rows
    if n > len(rows):
        where = f"the {split} split holds" if split else "holds"
        raise InputError(f"{user.source}: {where} {len(rows)} {user.kind} records, {n} are needed")
    chosen = set(sorted(rows, key=lambda row: content_fraction(row, salt="subset"))[:n])
    return [row for row in rows if row in chosen]


def _split(user: UserData, splits: Mapping[str, list[Any]], name: str) -> list[Any]:
    """The records of split `name`, or an error naming the kind's splits."""
    if name not in splits:
        raise InputError(f"{user.kind} has the splits {', '.join(splits)}, not {name!r}")
    return splits[name]


@dataclass(frozen=True)
class TomData:
    """ToM items by split: "fisher" scores parameters, "eval" is held out."""

    items: TomItems
    source: str
    available: Available = no_known_limit

    def with_user(self, user: UserData) -> TomData:
        """The user's stories, split by content hash."""
        splits = user.splits()
        return TomData(
            lambda split, n, seed: _take(user, split, _split(user, splits, split), n),
            user.source,
            lambda split: len(_split(user, splits, split)),
        )


@dataclass(frozen=True)
class TextData:
    """Documents of plain text (perplexity, generic Fisher, SAE training), cut into windows of
    `window` tokens by default (an organism never saw a document longer than a few dozen tokens)."""

    texts: Callable[[], list[str]]
    window: int = 128
    source: str = "steerscope"

    def with_user(self, user: UserData) -> TextData:
        """The user's texts, cut with this model's default window."""
        texts = list(user.records)
        return TextData(lambda: texts, self.window, user.source)

    def available(self, tokenizer: Any, split: str, window: int | None = None, bos: bool = False) -> int:
        """How many windows `windows(tokenizer, n, window, split=split, bos=bos)` can give."""
        return count_windows(tokenizer, self.texts(), window or self.window, split, bos)

    def windows(
        self,
        tokenizer: Any,
        n: int,
        window: int | None = None,
        seed: int = 0,
        split: str = "fisher",
        bos: bool = False,
    ) -> list[list[int]]:
        """`n` windows (`window` tokens, default the suite's) of the split "fisher" or "eval"."""
        try:
            return generic_windows(
                tokenizer, n, window or self.window, seed, split=split, bos=bos, texts=self.texts()
            )
        except ValueError as error:
            raise InputError(f"{self.source}: {error}; give more text or ask for fewer windows") from None


@dataclass(frozen=True)
class ConflictData:
    """Knowledge-conflict records and the prompts a model is asked with.

    `candidates(n, seed)`: the records to test for memorisation (all for n None). Prompts are
    few-shot with `demos_for(record, k, seed)` demonstrations, or, with `cues` (push -> cue line),
    an organism's cue prompts without demonstrations. `split(records, held_out, seed)` gives
    (train, held-out) lists. `trained(n, seed)`, on an organism whose training asked some facts
    with a context, draws those instead (an organism's candidates never were): where a mechanism
    planted by training exists (`steerscope.organisms.planted`); None for natural and user data.
    """

    candidates: Callable[[int | None, int], list[Conflict]]
    demos_for: Callable[[Conflict, int, int], list[Conflict]] | None = None
    cues: Mapping[str, str] | None = None
    split: Callable[[Sequence[Conflict], float, int], tuple[list[Conflict], list[Conflict]]] = split_facts
    source: str = "steerscope"
    available: Available = no_known_limit
    trained: Callable[[int | None, int], list[Conflict]] | None = None

    def closed_book_prompt(self, record: Conflict, demos: int = 3, seed: int = 0) -> str:
        """The question without a context, after closed-book demonstrations (none with cues)."""
        if self.cues is not None:
            return cue_closed_book(record)
        return few_shot_closed_book(record, self._demos(record, demos, seed))

    def knowledge_prompt(
        self, record: Conflict, push: str, conflict: bool, demos: int = 3, seed: int = 0
    ) -> str:
        """The question with its conflicting (`sub_context`) or agreeing context, pushed toward
        `push` by demonstrations or by a cue."""
        if self.cues is not None:
            if push not in self.cues:
                raise InputError(f"kind must be one of {tuple(self.cues)}, got {push!r}")
            return cue_context_prompt(record, self.cues[push], conflict)
        return few_shot_context_prompt(record, self._demos(record, demos, seed), push, conflict)

    def _demos(self, record: Conflict, demos: int, seed: int) -> list[Conflict]:
        if self.demos_for is None:
            raise InputError("this conflict data has neither demonstrations nor cues")
        return self.demos_for(record, demos, seed) if demos else []

    def with_user(self, user: UserData) -> ConflictData:
        """The user's records asked this model's way; few-shot demonstrations come from the
        other records of the same source (as SpARE draws them from NQ-Swap itself)."""
        records = list(user.records)

        def candidates(n: int | None, seed: int) -> list[Conflict]:
            return _take(user, None, records, n)

        def split(chosen: Sequence[Conflict], held_out: float, seed: int) -> tuple[list, list]:
            parts = split_by_hash(chosen, held_out_shares(held_out))
            return parts["train"], parts["held_out"]

        def demos_for(record: Conflict, k: int, seed: int) -> list[Conflict]:
            return choose_demonstrations(record, records, k, seed)

        return ConflictData(
            candidates,
            None if self.cues is not None else demos_for,
            self.cues,
            split,
            user.source,
            lambda split: len(records),
        )


#: (n, split, seed, steps) -> problems of that split
ProblemDraw = Callable[[int, str, int, Sequence[int]], list[Problem]]


@dataclass(frozen=True)
class ProblemData:
    """Word problems by split ("train" builds the direction, "heldout" evaluates) and the prompt
    `prompt(problem, style)` the model solves them after."""

    problems: ProblemDraw
    prompt: Callable[[Problem, Style], str]
    source: str = "steerscope"
    available: Available = no_known_limit

    def with_user(self, user: UserData) -> ProblemData:
        """The user's problems (no written solutions), asked with this model's prompt."""
        splits = user.splits()
        return ProblemData(
            lambda n, split, seed, steps: _take(user, split, _split(user, splits, split), n),
            self.prompt,
            user.source,
            lambda split: len(_split(user, splits, split)),
        )


@dataclass(frozen=True)
class PairData:
    """Contrast pairs: `pairs(n_train, n_heldout, seed)` -> (train, held-out), and `prompts` to
    generate from with the vector."""

    pairs: Callable[[int, int, int], tuple[list[ContrastPair], list[ContrastPair]]]
    prompts: tuple[str, ...]
    source: str = "steerscope"
    available: Available = no_known_limit

    def with_user(self, user: UserData) -> PairData:
        """The user's pairs split by content hash; generation prompts stay this suite's."""
        splits = user.splits()

        def pairs(n_train: int, n_heldout: int, seed: int) -> tuple[list, list]:
            train = _take(user, "train", splits["train"], n_train)
            return train, _take(user, "heldout", splits["heldout"], n_heldout)

        return PairData(pairs, self.prompts, user.source, lambda split: len(_split(user, splits, split)))


@dataclass(frozen=True)
class DataSuite:
    """One provider per data kind; None when the model's world has no data of that kind."""

    name: str
    tom: TomData | None = None
    conflicts: ConflictData | None = None
    problems: ProblemData | None = None
    text: TextData | None = None
    pairs: PairData | None = None

    def need(self, kind: str) -> Any:
        """The provider of `kind`, or a clear error saying how to get one."""
        if kind not in {f.name for f in dataclasses.fields(self)} - {"name"}:
            raise InputError(f"unknown data kind {kind!r}")
        value = getattr(self, kind)
        if value is None:
            raise InputError(
                f"the {self.name} data suite has no {kind} data: give your own (--data {kind}=FILE, "
                f"checked by `steerscope data check FILE --kind {kind}`), or use a pretrained model or the "
                "organism built for this experiment (`steerscope list` names them)"
            )
        return value
