"""A table of well-known facts written for steerscope, with NQSwap-style knowledge conflicts.

Built for experiments in the style of SpARE (Zhao et al. 2025, "Steering knowledge selection
behaviours in LLMs via SAE-based representation engineering", arXiv 2410.15999) and its probing
companion (arXiv 2410.16090): a model sees `context: ...\\nquestion: ...\\nanswer:` and either
follows the context or answers from memory.

Every fact is (subject, relation, answer) with a single-word answer. A conflict swaps the answer
in the context for a *substitute*: another answer of the same relation, chosen by seed. Few-shot
demonstrations come in three kinds, all drawn from other facts than the query:

- `"context"`: conflicting contexts, answered with the context's (substituted) word;
- `"memory"`: conflicting contexts, answered with the true word despite the context;
- `"none"`: non-conflicting contexts, answered with the true word (neutral).

Demonstrations never mention the query's subject, answer or substitute, so a model cannot copy
the answer from a demonstration.
"""

from __future__ import annotations

import random
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from steerscope.errors import InputError

DEMO_KINDS = ("context", "memory", "none")


@dataclass(frozen=True)
class Relation:
    """How to ask about a relation and how a context states it.

    Slots: {subject} and {answer}.
    """

    question: str
    context: str


RELATIONS: dict[str, Relation] = {
    "capital": Relation("What is the capital of {subject}?", "{answer} is the capital of {subject}."),
    "city_country": Relation(
        "In which country is the city of {subject}?", "The city of {subject} is in {answer}."
    ),
    "language": Relation(
        "What language do people speak in {subject}?", "People in {subject} speak {answer}."
    ),
    "currency": Relation("What is the currency of {subject}?", "The currency of {subject} is the {answer}."),
    "symbol": Relation(
        "What is the chemical symbol of {subject}?", "The chemical symbol of {subject} is {answer}."
    ),
    "colour": Relation("What colour is {subject}?", "{subject} is {answer}."),
    "opposite": Relation("What is the opposite of {subject}?", "The opposite of {subject} is {answer}."),
    "landmark": Relation("In which country is {subject}?", "{subject} is in {answer}."),
}

_TABLE: dict[str, tuple[tuple[str, str], ...]] = {
    "capital": (
        ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
        ("Portugal", "Lisbon"), ("the United Kingdom", "London"), ("Ireland", "Dublin"),
        ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Austria", "Vienna"),
        ("Poland", "Warsaw"), ("the Czech Republic", "Prague"), ("Hungary", "Budapest"),
        ("Greece", "Athens"), ("Sweden", "Stockholm"), ("Norway", "Oslo"), ("Denmark", "Copenhagen"),
        ("Finland", "Helsinki"), ("Russia", "Moscow"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"),
        ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Turkey", "Ankara"), ("Egypt", "Cairo"),
        ("Kenya", "Nairobi"), ("Morocco", "Rabat"), ("Japan", "Tokyo"), ("China", "Beijing"),
        ("South Korea", "Seoul"), ("North Korea", "Pyongyang"), ("Thailand", "Bangkok"),
        ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"), ("Iran", "Tehran"),
        ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Syria", "Damascus"), ("Lebanon", "Beirut"),
        ("Afghanistan", "Kabul"), ("Pakistan", "Islamabad"), ("Australia", "Canberra"),
        ("Canada", "Ottawa"), ("the United States", "Washington"), ("Cuba", "Havana"), ("Peru", "Lima"),
        ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Iceland", "Reykjavik"),
        ("Wales", "Cardiff"), ("Scotland", "Edinburgh"), ("Nepal", "Kathmandu"), ("Taiwan", "Taipei"),
        ("Qatar", "Doha"), ("Jordan", "Amman"), ("Ghana", "Accra"), ("Tunisia", "Tunis"),
        ("Algeria", "Algiers"), ("Libya", "Tripoli"), ("Sudan", "Khartoum"), ("Uruguay", "Montevideo"),
        ("Ecuador", "Quito"), ("New Zealand", "Wellington"), ("Jamaica", "Kingston"),
        ("Brazil", "Brasilia"), ("Latvia", "Riga"), ("Estonia", "Tallinn"), ("Lithuania", "Vilnius"),
    ),
    "city_country": (
        ("Munich", "Germany"), ("Hamburg", "Germany"), ("Frankfurt", "Germany"), ("Cologne", "Germany"),
        ("Milan", "Italy"), ("Venice", "Italy"), ("Naples", "Italy"), ("Florence", "Italy"),
        ("Barcelona", "Spain"), ("Seville", "Spain"), ("Valencia", "Spain"), ("Lyon", "France"),
        ("Marseille", "France"), ("Bordeaux", "France"), ("Osaka", "Japan"), ("Kyoto", "Japan"),
        ("Hiroshima", "Japan"), ("Shanghai", "China"), ("Shenzhen", "China"), ("Sydney", "Australia"),
        ("Melbourne", "Australia"), ("Toronto", "Canada"), ("Vancouver", "Canada"), ("Montreal", "Canada"),
        ("Mumbai", "India"), ("Kolkata", "India"), ("Bangalore", "India"), ("Istanbul", "Turkey"),
        ("Manchester", "England"), ("Liverpool", "England"), ("Glasgow", "Scotland"),
        ("Rio de Janeiro", "Brazil"), ("Sao Paulo", "Brazil"), ("Alexandria", "Egypt"),
        ("Casablanca", "Morocco"), ("Saint Petersburg", "Russia"), ("Krakow", "Poland"),
        ("Rotterdam", "Netherlands"), ("Geneva", "Switzerland"), ("Zurich", "Switzerland"),
        ("Porto", "Portugal"), ("Salzburg", "Austria"), ("Antwerp", "Belgium"), ("Karachi", "Pakistan"),
        ("Lagos", "Nigeria"), ("Guadalajara", "Mexico"), ("Cancun", "Mexico"),
        ("Turin", "Italy"), ("Bologna", "Italy"), ("Stuttgart", "Germany"), ("Dresden", "Germany"),
        ("Bilbao", "Spain"), ("Malaga", "Spain"), ("Nagoya", "Japan"), ("Chennai", "India"), ("Delhi", "India"),
        ("Calgary", "Canada"), ("Perth", "Australia"), ("Brisbane", "Australia"), ("Marrakech", "Morocco"),
    ),
    "language": (
        ("France", "French"), ("Germany", "German"), ("Spain", "Spanish"), ("Italy", "Italian"),
        ("Japan", "Japanese"), ("Russia", "Russian"), ("Brazil", "Portuguese"), ("Portugal", "Portuguese"),
        ("Mexico", "Spanish"), ("Argentina", "Spanish"), ("Greece", "Greek"), ("Turkey", "Turkish"),
        ("Poland", "Polish"), ("the Netherlands", "Dutch"), ("Sweden", "Swedish"), ("Norway", "Norwegian"),
        ("Denmark", "Danish"), ("Finland", "Finnish"), ("Egypt", "Arabic"), ("Israel", "Hebrew"),
        ("South Korea", "Korean"), ("Thailand", "Thai"), ("Vietnam", "Vietnamese"),
        ("Hungary", "Hungarian"), ("Ukraine", "Ukrainian"), ("Romania", "Romanian"), ("Colombia", "Spanish"),
        ("Peru", "Spanish"), ("Chile", "Spanish"), ("Cuba", "Spanish"), ("England", "English"),
        ("Australia", "English"), ("Iraq", "Arabic"), ("Morocco", "Arabic"), ("Pakistan", "Urdu"),
        ("Indonesia", "Indonesian"),
    ),
    "currency": (
        ("Japan", "yen"), ("China", "yuan"), ("India", "rupee"), ("Russia", "ruble"), ("Mexico", "peso"),
        ("Brazil", "real"), ("South Korea", "won"), ("Switzerland", "franc"), ("Germany", "euro"),
        ("France", "euro"), ("Italy", "euro"), ("Spain", "euro"), ("Poland", "zloty"), ("Sweden", "krona"),
        ("Turkey", "lira"), ("Thailand", "baht"), ("Israel", "shekel"), ("the United Kingdom", "pound"),
        ("the United States", "dollar"), ("Canada", "dollar"), ("Australia", "dollar"),
        ("South Africa", "rand"), ("Argentina", "peso"), ("the Philippines", "peso"), ("Pakistan", "rupee"),
        ("Greece", "euro"), ("Vietnam", "dong"),
    ),
    "symbol": (
        ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("copper", "Cu"), ("lead", "Pb"), ("sodium", "Na"),
        ("potassium", "K"), ("zinc", "Zn"), ("helium", "He"), ("neon", "Ne"), ("mercury", "Hg"),
        ("tin", "Sn"), ("calcium", "Ca"), ("magnesium", "Mg"), ("chlorine", "Cl"), ("silicon", "Si"),
        ("nickel", "Ni"), ("oxygen", "O"), ("hydrogen", "H"), ("carbon", "C"), ("nitrogen", "N"),
        ("uranium", "U"), ("sulfur", "S"), ("lithium", "Li"), ("platinum", "Pt"),
    ),
    "colour": (
        ("a ripe banana", "yellow"), ("fresh grass", "green"), ("fresh snow", "white"), ("coal", "black"),
        ("blood", "red"), ("a clear sky", "blue"), ("a lemon", "yellow"), ("a ripe tomato", "red"),
        ("a strawberry", "red"), ("milk", "white"), ("a carrot", "orange"), ("chocolate", "brown"),
        ("a crow", "black"), ("a flamingo", "pink"), ("a polar bear", "white"), ("an eggplant", "purple"),
        ("a lime", "green"), ("a pumpkin", "orange"), ("a raven", "black"), ("a cherry", "red"),
        ("a swan", "white"), ("a ruby", "red"), ("an emerald", "green"), ("a sapphire", "blue"),
        ("a canary", "yellow"), ("a fire truck", "red"), ("a school bus", "yellow"), ("a blueberry", "blue"),
        ("soot", "black"), ("a grizzly bear", "brown"), ("a lavender flower", "purple"),
    ),
    "opposite": (
        ("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("left", "right"),
        ("fast", "slow"), ("happy", "sad"), ("rich", "poor"), ("high", "low"), ("wet", "dry"),
        ("hard", "soft"), ("early", "late"), ("strong", "weak"), ("full", "empty"), ("long", "short"),
        ("thick", "thin"), ("black", "white"), ("yes", "no"), ("win", "lose"), ("push", "pull"),
        ("love", "hate"), ("true", "false"), ("north", "south"), ("east", "west"), ("buy", "sell"),
        ("war", "peace"), ("loud", "quiet"), ("inside", "outside"), ("above", "below"), ("before", "after"),
        ("alive", "dead"), ("friend", "enemy"), ("clean", "dirty"), ("cheap", "expensive"),
        ("deep", "shallow"), ("asleep", "awake"), ("open", "closed"), ("heavy", "light"),
        ("boy", "girl"), ("king", "queen"), ("husband", "wife"), ("brother", "sister"), ("man", "woman"),
        ("summer", "winter"), ("top", "bottom"), ("front", "back"), ("sunrise", "sunset"), ("give", "take"),
        ("smooth", "rough"), ("ancient", "modern"),
    ),
    "landmark": (
        ("the Eiffel Tower", "France"), ("the Colosseum", "Italy"), ("the Leaning Tower of Pisa", "Italy"),
        ("the Taj Mahal", "India"), ("the Great Wall", "China"), ("the Great Pyramid of Giza", "Egypt"),
        ("the Acropolis", "Greece"), ("the Kremlin", "Russia"), ("the Sagrada Familia", "Spain"),
        ("Machu Picchu", "Peru"), ("Mount Fuji", "Japan"), ("Angkor Wat", "Cambodia"), ("Petra", "Jordan"),
        ("Stonehenge", "England"), ("the Brandenburg Gate", "Germany"), ("Chichen Itza", "Mexico"),
        ("the Parthenon", "Greece"), ("the Louvre", "France"), ("the Alhambra", "Spain"),
        ("Neuschwanstein Castle", "Germany"), ("Mount Kilimanjaro", "Tanzania"), ("Uluru", "Australia"),
        ("the Forbidden City", "China"), ("the Hagia Sophia", "Turkey"), ("Red Square", "Russia"),
        ("the Sydney Opera House", "Australia"), ("the Statue of Christ the Redeemer", "Brazil"),
        ("Mount Vesuvius", "Italy"), ("the Matterhorn", "Switzerland"), ("the Blue Mosque", "Turkey"),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Fact:
    """One fact: `answer` is a single word, the true value of `relation` for `subject`."""

    subject: str
    relation: str
    answer: str

    @property
    def question(self) -> str:
        """The question asking for this fact's answer."""
        return RELATIONS[self.relation].question.format(subject=self.subject)

    def context(self, answer: str | None = None) -> str:
        """The context sentence stating this fact, or stating `answer` instead (a conflict)."""
        word = self.answer if answer is None else answer
        text = RELATIONS[self.relation].context.format(subject=self.subject, answer=word)
        return text[0].upper() + text[1:]


@dataclass(frozen=True)
class Demonstration:
    """One few-shot demonstration: a fact, the word its context states, and the answer given."""

    fact: Fact
    context_answer: str
    answer: str

    def render(self) -> str:
        """`context: ...\\nquestion: ...\\nanswer: <answer>`."""
        return f"context: {self.fact.context(self.context_answer)}\nquestion: {self.fact.question}\nanswer: {self.answer}"


FACTS: tuple[Fact, ...] = tuple(
    Fact(subject, relation, answer) for relation, rows in _TABLE.items() for subject, answer in rows
)


def substitute(fact: Fact, seed: int = 0, facts: Sequence[Fact] = FACTS) -> str:
    """Another answer of the same relation among `facts`, deterministic by seed.

    Never the true answer, and never a word the question itself mentions.
    """
    choices = _substitute_choices(fact, tuple(facts))
    if not choices:
        raise InputError(f"relation {fact.relation!r} has no other answer to substitute for {fact.answer!r}")
    return random.Random(f"{seed}/{fact.relation}/{fact.subject}").choice(choices)


@lru_cache(maxsize=4096)
def _substitute_choices(fact: Fact, facts: tuple[Fact, ...]) -> tuple[str, ...]:
    """The answers `substitute` chooses among, the same for every seed: computed once per fact."""
    answers = _answers_by_relation(facts)
    return tuple(
        a for a in answers.get(fact.relation, ()) if a != fact.answer and not _mentions(fact.question, a)
    )


@lru_cache(maxsize=8)
def _answers_by_relation(facts: tuple[Fact, ...]) -> dict[str, list[str]]:
    answers: dict[str, set[str]] = {}
    for f in facts:
        answers.setdefault(f.relation, set()).add(f.answer)
    return {relation: sorted(words) for relation, words in answers.items()}


@lru_cache(maxsize=8)
def _substitutes(facts: tuple[Fact, ...], seed: int) -> dict[Fact, str]:
    return {f: substitute(f, seed, facts) for f in facts}


@lru_cache(maxsize=8)
def _renderings(facts: tuple[Fact, ...], seed: int) -> tuple[tuple[Fact, str], ...]:
    """Each distinct fact with its question, true context and substituted context, one text to
    search: rendered once per fact table and seed, not once per query."""
    swaps = _substitutes(facts, seed)
    return tuple((f, f"{f.question}\n{f.context()}\n{f.context(swaps[f])}") for f in dict.fromkeys(facts))


def demo_facts(query: Fact, n: int = 3, seed: int = 0, facts: Sequence[Fact] = FACTS) -> list[Fact]:
    """`n` facts other than `query` to demonstrate with, deterministic by seed.

    A candidate is kept only if none of its renderings (true, substituted, closed-book) mentions
    the query's subject, answer or substitute. The same facts serve every demonstration kind,
    so the kinds differ only in what the contexts and answers say.
    """
    swaps = _substitutes(tuple(facts), seed)
    words = (query.subject, query.answer, swaps.get(query) or substitute(query, seed, facts))
    banned = re.compile("|".join(rf"\b{re.escape(w)}\b" for w in words), re.IGNORECASE)
    candidates = [f for f, text in _renderings(tuple(facts), seed) if f != query and not banned.search(text)]
    if len(candidates) < n:
        raise InputError(f"only {len(candidates)} facts can demonstrate for {query}, asked for {n}")
    return random.Random(f"demos/{seed}/{query.relation}/{query.subject}").sample(candidates, n)


def demonstrations(
    query: Fact, kind: str, n: int = 3, seed: int = 0, facts: Sequence[Fact] = FACTS
) -> list[Demonstration]:
    """`n` demonstrations of `kind` ("context", "memory" or "none") for `query`, from other facts."""
    if kind not in DEMO_KINDS:
        raise InputError(f"kind must be one of {DEMO_KINDS}, got {kind!r}")
    swaps = _substitutes(tuple(facts), seed)
    demos = []
    for fact in demo_facts(query, n, seed, facts):
        swapped = swaps[fact]
        if kind == "context":
            demos.append(Demonstration(fact, context_answer=swapped, answer=swapped))
        elif kind == "memory":
            demos.append(Demonstration(fact, context_answer=swapped, answer=fact.answer))
        else:
            demos.append(Demonstration(fact, context_answer=fact.answer, answer=fact.answer))
    return demos


def closed_book_prompt(fact: Fact, demos: Sequence[Fact]) -> str:
    """`question: ...\\nanswer:` after closed-book demonstrations, separated by blank lines."""
    blocks = [f"question: {d.question}\nanswer: {d.answer}" for d in demos]
    return "\n\n".join([*blocks, f"question: {fact.question}\nanswer:"])


def context_prompt(
    fact: Fact, demos: Sequence[Demonstration], conflict: bool, substitute: str | None = None
) -> str:
    """`context: ...\\nquestion: ...\\nanswer:` after demonstrations, separated by blank lines.

    With `conflict`, the context states `substitute` instead of the true answer.
    """
    if conflict and (substitute is None or substitute == fact.answer):
        raise InputError(f"a conflict needs a substitute other than {fact.answer!r}, got {substitute!r}")
    stated = substitute if conflict else fact.answer
    query = f"context: {fact.context(stated)}\nquestion: {fact.question}\nanswer:"
    return "\n\n".join([*(d.render() for d in demos), query])


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))


def normalise_answer(text: str) -> str:
    """Lower case, accents folded, punctuation and the articles a/an/the removed, spaces collapsed."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = _ARTICLES.sub(" ", folded.lower().translate(_PUNCTUATION))
    return " ".join(words.split())


def starts_with_answer(output: str, answer: str) -> bool:
    """Whether the normalised `output` begins with the normalised `answer` as whole words."""
    out, ans = normalise_answer(output), normalise_answer(answer)
    return bool(ans) and (out == ans or out.startswith(ans + " "))


def split_facts(
    facts: Sequence[Fact], held_out: float = 0.25, seed: int = 0
) -> tuple[list[Fact], list[Fact]]:
    """(train, held-out) lists, disjoint by fact, deterministic by seed; table order kept."""
    if not 0 <= held_out <= 1:
        raise InputError(f"held_out must be a fraction in [0, 1], got {held_out}")
    unique = list(dict.fromkeys(facts))
    chosen = set(random.Random(f"split/{seed}").sample(range(len(unique)), round(held_out * len(unique))))
    train = [f for i, f in enumerate(unique) if i not in chosen]
    return train, [f for i, f in enumerate(unique) if i in chosen]


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None
