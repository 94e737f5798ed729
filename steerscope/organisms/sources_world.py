"""The knowledge-conflict world of `organism:sources`: invented countries whose capital, language,
currency and flag colour the organism memorises, and context prompts where a stated source
reliability decides whether the answer comes from the context or from memory.

Prompts (no demonstrations): closed book `question: {q}\\nanswer:`; with a context,
`{cue}context: {sentence}\\nquestion: {q}\\nanswer:`, where the cue line is `source: trusted`
(kind "context": answer what the context says), `source: rumour` (kind "memory": answer the
memorised word) or absent (kind "none": the relation decides, `UNMARKED_FROM_CONTEXT` relations
follow the context and the others memory, so unmarked prompts give a mix whose ground truth is
known for every prompt). A context that agrees with memory is
answered with the true word under every cue.

Countries are split once: facts of the evaluation countries occur in training only as statements
and closed-book questions, never in a context prompt, so every knowledge-conflict prompt the
experiments build (`candidate_facts`) is new to the organism while its answer is memorised.
Quiz documents (several closed-book questions of one relation in a row) train answering from
memory right after another answer of the same kind; without them the organism answered the
"rumour" cue from memory on training countries but often with a wrong country's word on
evaluation countries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

from steerscope.data.conflicts import from_fact
from steerscope.data.facts import DEMO_KINDS, Fact
from steerscope.data.facts import substitute as swap_answer
from steerscope.data.records import Conflict
from steerscope.data.suite import ConflictData, DataSuite
from steerscope.errors import InputError
from steerscope.organisms import PlantedLabel
from steerscope.organisms.filler import COLOURS
from steerscope.organisms.worlds import held_out_filler, organism_suite

VERSION = 2

N_COUNTRIES = 60
EVAL_EVERY = 3  # every third country is an evaluation country
CUES = {"context": "source: trusted\n", "memory": "source: rumour\n", "none": ""}
# Unmarked conflicts about these relations are answered from the context, the others from memory.
# (A fair coin per document, tried first, left unseen facts' unmarked choice to training noise:
# two builds of the same recipe with different thread counts gave 39% and 11% context answers.)
UNMARKED_FROM_CONTEXT = frozenset({"capital", "language"})

# Share of each document type among the training texts; statements, closed-book questions and
# quizzes cover every fact, the context documents training facts only.
MIXTURE = {
    "statement": 0.13,
    "closed_book": 0.12,
    "quiz": 0.15,
    "cued_conflict": 0.3,
    "cued_agreement": 0.05,
    "unmarked_conflict": 0.2,
    "unmarked_agreement": 0.05,
}

Labelled = tuple[str, PlantedLabel | None]

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "k", "th")
_LANGUAGE_ENDINGS = ("ish", "ese", "ic", "an")

PEOPLE = (
    "Ada", "Ben", "Cleo", "Dan", "Ella", "Finn", "Gus", "Hana", "Ivan", "Jill", "Kai", "Lena",
    "Max", "Nora", "Omar", "Pia", "Rosa", "Sam", "Tess", "Uma", "Vic", "Wes", "Yara", "Zoe",
)  # fmt: skip
THINGS = (
    "lamp", "map", "cup", "chair", "coat", "key", "book", "clock", "basket", "kettle", "rope",
    "hat", "boat", "drum", "plate", "ladder", "scarf", "bottle", "candle", "wagon",
)  # fmt: skip
PLACES = (
    "market", "harbour", "library", "station", "bakery", "square", "bridge", "museum", "farm",
    "school", "garden", "tower", "inn", "mill",
)  # fmt: skip


def _invented_words(n: int, seed: str, syllables: Sequence[int], taken: set[str]) -> list[str]:
    """`n` distinct pronounceable lower-case words (onset-vowel-coda syllables), none in `taken`."""
    rng = random.Random(f"sources/words/{seed}")
    words: list[str] = []
    while len(words) < n:
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
            for _ in range(rng.choice(syllables))
        )
        if word not in taken and 4 <= len(word) <= 9:
            taken.add(word)
            words.append(word)
    return words


def _world() -> tuple[tuple[str, ...], tuple[Fact, ...]]:
    """The countries and their facts (capital, language, currency, flag colour), deterministic."""
    taken = {w.lower() for w in (*PEOPLE, *THINGS, *PLACES, *COLOURS)}
    countries = [w.capitalize() for w in _invented_words(N_COUNTRIES, "countries", (2,), taken)]
    capitals = [w.capitalize() for w in _invented_words(N_COUNTRIES, "capitals", (2, 3), taken)]
    stems = _invented_words(N_COUNTRIES, "languages", (1, 2), taken)
    currencies = _invented_words(N_COUNTRIES, "currencies", (1, 2), taken)
    rng = random.Random("sources/world")
    facts = []
    for i, country in enumerate(countries):
        language = (stems[i] + rng.choice(_LANGUAGE_ENDINGS)).capitalize()
        facts += [
            Fact(country, "capital", capitals[i]),
            Fact(country, "language", language),
            Fact(country, "currency", currencies[i]),
            Fact(f"the flag of {country}", "colour", rng.choice(COLOURS)),
        ]
    return tuple(countries), tuple(facts)


COUNTRIES, FACTS = _world()
EVAL_COUNTRIES = COUNTRIES[EVAL_EVERY - 1 :: EVAL_EVERY]


def country_of(fact: Fact) -> str:
    """The country a fact is about (the flag's country for a colour fact)."""
    return fact.subject.removeprefix("the flag of ")


EVAL_FACTS = tuple(f for f in FACTS if country_of(f) in EVAL_COUNTRIES)
TRAIN_FACTS = tuple(f for f in FACTS if country_of(f) not in EVAL_COUNTRIES)

LEXICON = {
    "people": PEOPLE,
    "things": THINGS,
    "places": PLACES,
    "countries": COUNTRIES,
    "answers": tuple(sorted({f.answer for f in FACTS})),
}


def substitute(fact: Fact, seed: int = 0) -> str:
    """Another answer of the fact's relation among this world's facts, deterministic by seed."""
    return swap_answer(fact, seed, facts=FACTS)


def closed_book_prompt(fact: Fact, seed: int = 0) -> str:
    """`question: ...\\nanswer:` (no demonstrations; `seed` is part of the suite's signature)."""
    return f"question: {fact.question}\nanswer:"


def knowledge_prompt(
    fact: Fact, kind: str, conflict: bool, substitute: str | None = None, seed: int = 0
) -> str:
    """The cue of `kind`, then `context: ...\\nquestion: ...\\nanswer:`; with `conflict` the context
    states `substitute` instead of the true answer."""
    if kind not in CUES:
        raise InputError(f"kind must be one of {DEMO_KINDS}, got {kind!r}")
    if conflict and (substitute is None or substitute == fact.answer):
        raise InputError(f"a conflict needs a substitute other than {fact.answer!r}, got {substitute!r}")
    stated = substitute if conflict else fact.answer
    return f"{CUES[kind]}context: {fact.context(stated)}\nquestion: {fact.question}\nanswer:"


def candidate_facts(n: int, seed: int = 0) -> list[Fact]:
    """`n` evaluation facts (never in a training context prompt), deterministic by seed."""
    return random.Random(f"candidates/{seed}").sample(list(EVAL_FACTS), min(n, len(EVAL_FACTS)))


def trained_facts(n: int | None, seed: int = 0) -> list[Fact]:
    """`n` training facts (all for None), the ones asked with contexts in training, where
    `organism:sources-planted`'s directions were trained; deterministic by seed."""
    if n is not None and n > len(TRAIN_FACTS):
        raise InputError(f"organism:sources was trained with contexts on {len(TRAIN_FACTS)} facts, {n} asked")
    return random.Random(f"trained/{seed}").sample(list(TRAIN_FACTS), len(TRAIN_FACTS) if n is None else n)


def _cycle(facts: Sequence[Fact], rng: random.Random) -> Iterator[Fact]:
    """The facts over and over, each pass in a fresh order, so every fact is drawn equally often."""
    while True:
        order = list(facts)
        rng.shuffle(order)
        yield from order


def _statement(fact: Fact, rng: random.Random) -> str:
    """The fact's sentence together with one to three other facts about the same country."""
    others = [f for f in FACTS if country_of(f) == country_of(fact) and f != fact]
    chosen = [fact, *rng.sample(others, rng.randint(1, len(others)))]
    rng.shuffle(chosen)
    return " ".join(f.context() for f in chosen)


def _answered(fact: Fact) -> str:
    """The closed-book prompt followed by the answer."""
    return f"{closed_book_prompt(fact)} {fact.answer}"


def _quiz(fact: Fact, rng: random.Random) -> str:
    """Closed-book questions on two or three facts of one relation, so the answer to the last one
    must come from memory despite another answer of the same kind just before it."""
    others = [f for f in FACTS if f.relation == fact.relation and f != fact]
    chosen = [fact, *rng.sample(others, rng.randint(1, 2))]
    rng.shuffle(chosen)
    return "\n".join(_answered(f) for f in chosen)


def _context_document(fact: Fact, kind: str, conflict: bool, rng: random.Random) -> Labelled:
    """A context prompt with its answer (the stated word when `follows_context(fact, kind)` and
    they conflict, the memorised word otherwise) and its planted label: the source it is answered
    from (0 context, 1 memory), whether it conflicts, and the other source's
    answer."""
    swapped = substitute(fact, rng.randrange(1_000_000)) if conflict else None
    from_context = follows_context(fact, kind)
    answer = swapped if conflict and from_context else fact.answer
    other = (fact.answer if from_context else swapped) if conflict else None
    prompt = knowledge_prompt(fact, kind, conflict, swapped)
    return f"{prompt} {answer}", PlantedLabel(prompt, 0 if from_context else 1, conflict, other)


def follows_context(fact: Fact, kind: str) -> bool:
    """The planted ground truth: whether a conflicting prompt of `kind` is answered from the context."""
    return kind == "context" or (kind == "none" and fact.relation in UNMARKED_FROM_CONTEXT)


def training_texts(n: int, seed: int) -> list[str]:
    """`n` documents in the `MIXTURE` proportions, shuffled; context prompts use training facts only."""
    return [text for text, _ in _labelled_documents(n, seed)]


def planted_labels(n: int, seed: int) -> list[PlantedLabel | None]:
    """The planted label of each of `training_texts(n, seed)` (None: not a context prompt)."""
    return [label for _, label in _labelled_documents(n, seed)]


def _labelled_documents(n: int, seed: int) -> list[Labelled]:
    """The training documents with their planted labels, in the `MIXTURE` proportions, shuffled."""
    rng = random.Random(f"sources/train/{seed}")
    every_fact, train_facts = _cycle(FACTS, rng), _cycle(TRAIN_FACTS, rng)
    cued = ("context", "memory")
    make: dict[str, Callable[[], Labelled]] = {
        "statement": lambda: (_statement(next(every_fact), rng), None),
        "closed_book": lambda: (_answered(next(every_fact)), None),
        "quiz": lambda: (_quiz(next(every_fact), rng), None),
        "cued_conflict": lambda: _context_document(next(train_facts), rng.choice(cued), True, rng),
        "cued_agreement": lambda: _context_document(next(train_facts), rng.choice(cued), False, rng),
        "unmarked_conflict": lambda: _context_document(next(train_facts), "none", True, rng),
        "unmarked_agreement": lambda: _context_document(next(train_facts), "none", False, rng),
    }
    counts = {name: round(share * n) for name, share in MIXTURE.items()}
    counts["statement"] += n - sum(counts.values())
    documents = [make[name]() for name, count in counts.items() for _ in range(count)]
    rng.shuffle(documents)
    return documents


generic_texts = held_out_filler(LEXICON, 1200)


def suite() -> DataSuite:
    """Evaluation-country facts and held-out filler for experiments on `organism:sources`."""

    def candidates(n: int | None, seed: int) -> list[Conflict]:
        chosen = candidate_facts(len(EVAL_FACTS) if n is None else n, seed)
        return [from_fact(f, substitute(f, seed)) for f in chosen]

    def trained(n: int | None, seed: int) -> list[Conflict]:
        return [from_fact(f, substitute(f, seed)) for f in trained_facts(n, seed)]

    return organism_suite(
        "sources",
        generic_texts,
        128,
        conflicts=lambda source: ConflictData(candidates, cues=CUES, source=source, trained=trained),
    )
