"""Theory-of-Mind stories written for steerscope: unexpected transfer and unexpected contents,
each as a false-belief story and a true-belief control, deterministic by seed.

Built for experiments in the style of Wu et al. 2025, "How large language models encode
theory-of-mind: a study on sparse parameter patterns" (arXiv 2504.04238): score parameters on
one set of stories, then evaluate on stories the scoring never saw. Two disjoint template sets
make that possible: "fisher" (for scoring) and "eval" (for evaluation) share no sentence wording.

Every story stops right before a one-word answer. `correct` is the continuation consistent with
the protagonist's belief (what the question asks for) and `foil` is the other location or
content named in the story:

- false belief: `correct` is the belief (the original place, or the label), `foil` is reality.
- true belief: the protagonist saw the move or looked inside, so `correct` is reality and `foil`
  is the outdated alternative.

`reversed` swaps which of the two words is the original and which is the new one, so a model
cannot score well by preferring one word of a pair. Every answer word is a single Gemma 3 token
with a leading space, and no two answer words share their first token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations

from steerscope.errors import InputError

KINDS = ("unexpected_transfer", "unexpected_contents")
TEMPLATE_SETS = ("fisher", "eval")

NAMES = (
    "Anna", "Ben", "Chloe", "David", "Fatima", "Hiroshi", "Priya", "Kwame", "Sofia", "Mateo",
    "Aisha", "Liam", "Mei", "Omar", "Ingrid", "Raj", "Zara", "Tomas", "Yuki", "Nia",
    "Carlos", "Elena", "Jamal", "Leila", "Oliver", "Amara", "Sven", "Rosa", "Kenji", "Maya",
    "Ivan", "Noor", "Diego", "Hana", "Samuel", "Ling", "Emeka", "Grace", "Ahmed", "Lucia",
    "Arjun", "Freya", "Kofi", "Ines", "Malik", "Sara",
)  # fmt: skip
PLACES = (
    "kitchen", "garden", "classroom", "office", "bedroom", "garage", "library", "attic",
    "hallway", "bakery", "workshop", "studio", "cabin", "basement",
)  # fmt: skip

# Unexpected transfer: a small object moved between two containers big enough for any of them.
OBJECTS = (
    "ball", "book", "key", "ring", "toy", "hat", "scarf", "phone", "wallet", "watch",
    "pen", "apple", "doll", "letter", "ticket", "map", "sock", "spoon", "cup", "glove",
    "candle", "brush", "coin", "necklace", "camera", "notebook", "whistle", "bracelet",
)  # fmt: skip
CONTAINERS = (
    "basket", "box", "drawer", "cupboard", "bag", "suitcase", "bucket", "backpack",
    "cabinet", "chest", "closet", "crate", "wardrobe", "trunk", "locker", "sack",
)  # fmt: skip

# Unexpected contents: a closed container whose label names one content and which holds another.
PACKAGES = ("box", "tin", "jar", "bag", "carton", "packet", "crate")
CONTENTS = (
    "chocolate", "pencils", "buttons", "cookies", "coins", "rice", "sugar", "tea", "crayons",
    "marbles", "sand", "nails", "beads", "stamps", "shells", "candy", "flour", "salt", "pasta",
    "raisins", "seeds", "batteries", "cereal", "coffee", "crackers", "grapes", "screws",
    "feathers", "ribbons", "socks",
)  # fmt: skip


@dataclass(frozen=True)
class StoryTemplate:
    """One story skeleton: a setup, a false-belief middle, a true-belief middle, a question.

    Slots: {p} protagonist, {m} the other person, {place}; transfer adds {obj}, {a} (original
    container), {b} (new container); contents adds {package}, {label}, {actual}.
    """

    setup: str
    false_middle: str
    true_middle: str
    question: str

    def render(self, false_belief: bool, **slots: str) -> str:
        middle = self.false_middle if false_belief else self.true_middle
        return " ".join((self.setup, middle, self.question)).format(**slots)


TEMPLATES: dict[tuple[str, str], tuple[StoryTemplate, ...]] = {
    ("unexpected_transfer", "fisher"): (
        StoryTemplate(
            "{p} and {m} are in the {place}. {p} puts the {obj} in the {a}.",
            "{p} goes outside. While {p} is gone, {m} moves the {obj} from the {a} to the {b}. "
            "Later {p} returns to the {place}.",
            "{p} stays and watches {m} move the {obj} from the {a} to the {b}. "
            "Later {p} goes outside for a while and returns to the {place}.",
            "{p} will look for the {obj} in the",
        ),
        StoryTemplate(
            "In the {place}, {p} hides the {obj} inside the {a}.",
            "Then {p} leaves for lunch. {m} finds the {obj} and, without telling anyone, moves it "
            "to the {b}. After lunch {p} comes back.",
            "Then {m} moves the {obj} to the {b} while {p} is watching. "
            "{p} leaves for lunch and comes back later.",
            "To get the {obj}, {p} goes straight to the",
        ),
        StoryTemplate(
            "{p} keeps the {obj} in the {a} in the {place}.",
            "One morning, while {p} is out shopping, {m} tidies up and puts the {obj} in the {b}. "
            "In the evening {p} gets home and needs the {obj}.",
            "One morning {m} tidies up and puts the {obj} in the {b}, with {p} helping. "
            "In the evening {p} needs the {obj}.",
            "{p} expects to find the {obj} in the",
        ),
    ),
    ("unexpected_transfer", "eval"): (
        StoryTemplate(
            "{m} and {p} spend the afternoon in the {place}. {p} drops the {obj} into the {a}.",
            "When {p} steps out to answer a phone call, {m} shifts the {obj} into the {b}. "
            "A few minutes later, {p} walks back in.",
            "{m} shifts the {obj} into the {b} right in front of {p}. "
            "After a short phone call outside, {p} walks back in.",
            "{p} thinks the {obj} is in the",
        ),
        StoryTemplate(
            "The {obj} belongs to {p}, who always stores it in the {a} in the {place}.",
            "Today, while {p} is away at work, {m} moves it to the {b}. Nobody mentions this to {p}.",
            "Today {m} moves it to the {b}, and {p}, standing nearby, notices.",
            "When {p} wants the {obj}, {p} first searches the",
        ),
        StoryTemplate(
            "{p} sets the {obj} down in the {a} and heads out of the {place} for a walk.",
            "During the walk, {m} comes in and transfers the {obj} to the {b}. "
            "Then {p} is back from the walk.",
            "Through the window, {p} can see {m} come in and transfer the {obj} to the {b}. "
            "Then {p} is back from the walk.",
            "{p} believes the {obj} is inside the",
        ),
    ),
    ("unexpected_contents", "fisher"): (
        StoryTemplate(
            'In the {place}, {p} finds a {package} with a label that says "{label}".',
            "{m} had emptied it earlier and filled it with {actual}. "
            "{p} has not looked inside the {package}.",
            "{m} had emptied it earlier and filled it with {actual}. "
            "{p} opens the {package} and looks inside.",
            "{p} thinks the {package} is full of",
        ),
        StoryTemplate(
            'There is a closed {package} on the table in the {place}. The word "{label}" is '
            "printed on its side.",
            "But the {package} actually holds {actual}, which {m} put there. "
            "{p} picks up the {package} but does not open it.",
            "But the {package} actually holds {actual}, which {m} put there. "
            "{p} unseals the {package} and sees what is inside.",
            "{p} believes the {package} contains",
        ),
        StoryTemplate(
            'While they are in the {place}, {m} gives {p} a {package} labelled "{label}".',
            "Secretly, {m} has filled it with {actual} as a joke. {p} has not opened the {package} yet.",
            "As a joke, {m} has filled it with {actual}, and {p} peeks inside right away.",
            "{p} expects the {package} to be full of",
        ),
    ),
    ("unexpected_contents", "eval"): (
        StoryTemplate(
            'A {package} sits on a shelf in the {place}, and its label reads "{label}".',
            "Last week {m} swapped what was inside for {actual}. "
            "{p} was not there, and the {package} is still shut.",
            "Last week {m} swapped what was inside for {actual}, and {p} helped with the swap.",
            "If asked, {p} would say the {package} holds",
        ),
        StoryTemplate(
            '{p} is cleaning the {place} and comes across a {package} marked "{label}".',
            "Its real contents are {actual}; {m} reused it last month. {p} leaves it closed.",
            "Its real contents are {actual}; {m} reused it last month. {p} opens it up and peers in.",
            "In {p}'s opinion, the {package} is filled with",
        ),
        StoryTemplate(
            '{m} leaves a {package} for {p} in the {place}. On the front it says "{label}".',
            "Inside, though, there is nothing but {actual}. {p} has not opened it.",
            "Inside, though, there is nothing but {actual}, as {p} discovers on opening it.",
            "{p} now assumes the {package} is packed with",
        ),
    ),
}


@dataclass(frozen=True)
class TomItem:
    """One story and its two candidate continuations (single words with a leading space).

    `correct` follows the protagonist's belief; `foil` is the other word the story names.
    `template` indexes `TEMPLATES[(kind, template_set)]`.
    """

    story: str
    correct: str
    foil: str
    kind: str
    false_belief: bool
    template_set: str
    reversed: bool
    template: int

    @property
    def answers(self) -> tuple[str, ...]:
        """The accepted continuations (one here; a user's `TomStory` may accept several)."""
        return (self.correct,)

    @property
    def foils(self) -> tuple[str, ...]:
        return (self.foil,)

    @property
    def belief_answer(self) -> str:
        """The continuation consistent with what the protagonist believes (= `correct`)."""
        return self.correct

    @property
    def reality_answer(self) -> str:
        """The continuation consistent with the real state of the world."""
        return self.foil if self.false_belief else self.correct


def _answer_words(kind: str) -> tuple[str, ...]:
    return CONTAINERS if kind == "unexpected_transfer" else CONTENTS


def _radices(kind: str, template_set: str) -> tuple[int, ...]:
    """Sizes of the independent choices behind one base story (before belief and reversal)."""
    things = OBJECTS if kind == "unexpected_transfer" else PACKAGES
    n_pairs = len(_answer_words(kind)) * (len(_answer_words(kind)) - 1) // 2
    return (
        len(TEMPLATES[(kind, template_set)]),
        len(NAMES),
        len(NAMES) - 1,
        len(things),
        n_pairs,
        len(PLACES),
    )


def n_distinct(kind: str, template_set: str) -> int:
    """How many distinct base stories `tom_items` can draw for a kind and template set.

    Each base story also exists in four conditions (false/true belief x reversed or not).
    """
    _check(kind, template_set)
    total = 1
    for radix in _radices(kind, template_set):
        total *= radix
    return total


def tom_items(
    kind: str,
    template_set: str,
    n: int,
    seed: int = 0,
    *,
    false_belief: bool | None = None,
    reversed: bool | None = None,
) -> list[TomItem]:
    """`n` ToM items from distinct base stories, deterministic by seed.

    `false_belief` / `reversed` fix a condition; left as None, the conditions alternate so
    that false and true belief (and original and reversed) are as balanced as `n` allows.
    """
    _check(kind, template_set)
    capacity = n_distinct(kind, template_set)
    if not 0 <= n <= capacity:
        raise InputError(
            f"n must be between 0 and {capacity} distinct {kind} items ({template_set}), got {n}"
        )
    beliefs = (True, False) if false_belief is None else (false_belief,)
    reversals = (False, True) if reversed is None else (reversed,)
    conditions = [(fb, rev) for rev in reversals for fb in beliefs]
    # The seed string differs per kind and set, so fisher and eval items do not mirror each other.
    indices = random.Random(f"{kind}/{template_set}/{seed}").sample(range(capacity), n)
    return [
        _build(kind, template_set, index, *conditions[i % len(conditions)]) for i, index in enumerate(indices)
    ]


def mixture_capacity(template_set: str) -> int:
    """The largest `n` `tom_mixture` can draw: a quarter of it comes from each (kind, belief) cell."""
    return len(_CELLS) * min(n_distinct(kind, template_set) for kind, _ in _CELLS)


def tom_mixture(template_set: str, n: int, seed: int = 0) -> list[TomItem]:
    """`n` items over both kinds, balanced across kind and false/true belief, shuffled by seed."""
    if n < 0:
        raise InputError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    items: list[TomItem] = []
    for i, (kind, false_belief) in enumerate(_CELLS):
        size = n // len(_CELLS) + (i < n % len(_CELLS))
        items += tom_items(kind, template_set, size, rng.randrange(2**32), false_belief=false_belief)
    rng.shuffle(items)
    return items


#: The (kind, false belief) cells of `tom_mixture`, in the order that balances kind and belief as
#: well as any n allows.
_CELLS = (
    ("unexpected_transfer", True),
    ("unexpected_contents", False),
    ("unexpected_contents", True),
    ("unexpected_transfer", False),
)


def _check(kind: str, template_set: str) -> None:
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if template_set not in TEMPLATE_SETS:
        raise InputError(f"template_set must be one of {TEMPLATE_SETS}, got {template_set!r}")


def _build(kind: str, template_set: str, index: int, false_belief: bool, reversed: bool) -> TomItem:
    digits = []
    for radix in _radices(kind, template_set):
        index, digit = divmod(index, radix)
        digits.append(digit)
    t, p, m, thing, pair, place = digits
    m += m >= p  # the other person is never the protagonist
    words = _answer_words(kind)
    first, second = list(combinations(words, 2))[pair]
    original, new = (second, first) if reversed else (first, second)
    slots = {"p": NAMES[p], "m": NAMES[m], "place": PLACES[place]}
    if kind == "unexpected_transfer":
        slots |= {"obj": OBJECTS[thing], "a": original, "b": new}
    else:
        slots |= {"package": PACKAGES[thing], "label": original, "actual": new}
    story = TEMPLATES[(kind, template_set)][t].render(false_belief, **slots)
    belief, other = (original, new) if false_belief else (new, original)
    return TomItem(
        story=story,
        correct=" " + belief,
        foil=" " + other,
        kind=kind,
        false_belief=false_belief,
        template_set=template_set,
        reversed=reversed,
        template=t,
    )
