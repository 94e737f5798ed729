"""The false-belief world of `organism:tom`: unexpected-transfer and unexpected-contents stories in
which only the order of events decides what the protagonist believes.

A false-belief story and its true-belief control use the same sentences: the protagonist leaves
*before* the change (false belief) or *after* it (true belief), then comes back. So a model can
only answer right by tracking who was present when the object moved or the contents changed; the
wording gives nothing away. Training also asks where the object really is and what the other
person (who made the change) believes, so "answer the newest location" and "answer the first
one" are both wrong strategies.

Evaluation stories use names, objects, packages and places that never occur in a training story
(they occur only in filler text, so their embeddings are trained); the answer words (containers,
contents) are shared, as in any ToM test. `suite().tom_items("eval", ...)` draws only held-out
entities and `"fisher"` only training ones, so Fisher scoring and evaluation never share a story.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations

from steerscope.data.suite import DataSuite, TomData
from steerscope.data.tom import KINDS, TomItem
from steerscope.errors import InputError
from steerscope.organisms.worlds import held_out_filler, organism_suite

VERSION = 2
SPLITS = ("fisher", "eval")

NAMES = (
    "Alma", "Bruno", "Cora", "Dario", "Edith", "Felix", "Greta", "Hugo", "Iris", "Jonas",
    "Kira", "Lars", "Mona", "Nils", "Olga", "Pavel", "Quinn", "Rita", "Stefan", "Tilda",
    "Ugo", "Vera", "Walter", "Xenia", "Yusuf", "Zelda", "Anton", "Bianca", "Cyrus", "Dora",
    "Emil", "Flora", "Gideon", "Hanna", "Ilya", "Judit", "Karl", "Lotte", "Milo", "Nadia",
)  # fmt: skip


def _invented_names(n: int) -> tuple[str, ...]:
    """`n` distinct invented names of two or three open syllables ("Tamiro"), deterministic."""
    rng = random.Random("tom-world/names")
    names: dict[str, None] = {}
    while len(names) < n:
        syllables = (rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.choice((2, 3))))
        name = "".join(syllables).capitalize()
        if name not in NAMES:
            names[name] = None
    return tuple(names)


# Many names, so that no name-specific shortcut fits the training stories: a model that tracks
# belief for 32 training names learnt the names (held-out false belief 0.24 to 0.91 across builds).
NAMES = NAMES + _invented_names(120)
OBJECTS = (
    "marble", "ribbon", "pebble", "button", "feather", "thimble", "compass", "locket", "medal",
    "trinket", "puzzle", "rattle", "kite", "mitten", "pencil", "crayon", "bell", "token", "badge",
    "shell", "whistle", "bracelet", "candle", "brush", "ticket", "glove", "sock", "ring", "key",
    "wallet", "watch", "apple", "doll", "letter", "map", "cup", "scarf", "hat", "toy", "book",
)  # fmt: skip
PACKAGES = ("tin", "jar", "carton", "pouch", "canister", "packet", "tub", "flask")
PLACES = (
    "kitchen", "garden", "hall", "shed", "porch", "cellar", "loft", "barn", "study", "pantry",
    "lounge", "yard", "nursery", "gym", "den", "attic", "office", "bedroom", "garage", "library",
    "bakery", "workshop", "studio", "cabin", "basement", "classroom", "hallway", "laundry",
    "greenhouse", "stable",
)  # fmt: skip
CONTAINERS = (
    "basket", "box", "drawer", "cupboard", "bag", "suitcase", "bucket", "chest", "crate",
    "trunk", "locker", "sack",
)  # fmt: skip
CONTENTS = (
    "buttons", "candy", "coins", "cookies", "crayons", "flour", "nails", "pasta", "rice", "salt",
    "sand", "seeds", "sugar", "tea",
)  # fmt: skip


def _held_out(words: tuple[str, ...], every: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training, held-out) words: every `every`-th word is held out."""
    return (
        tuple(w for i, w in enumerate(words) if i % every != every - 1),
        tuple(w for i, w in enumerate(words) if i % every == every - 1),
    )


ENTITIES = {
    "names": _held_out(NAMES, 5),
    "objects": _held_out(OBJECTS, 5),
    "packages": _held_out(PACKAGES, 4),
    "places": _held_out(PLACES, 5),
}
LEXICON = {
    "people": NAMES,
    "things": OBJECTS + PACKAGES + CONTAINERS + CONTENTS,
    "places": PLACES,
}

# Interchangeable wordings: each story draws one of each, in training and evaluation alike.
PUT = ("puts", "places", "drops")
LEAVE = ("leaves the {place}", "goes out of the {place}", "walks out of the {place}")
RETURN = ("comes back", "returns", "walks back in")
MOVE = ("moves the {obj} to the {b}", "carries the {obj} to the {b}", "shifts the {obj} into the {b}")
FILL = ("empties the {pkg} and fills it with {actual}", "swaps the {label} in the {pkg} for {actual}")
# Questions: whose view, and the words before the answer.
BELIEF_QUESTION = {
    "unexpected_transfer": "{who} looks for the {obj} in the",
    "unexpected_contents": "{who} thinks the {pkg} holds",
}
REALITY_QUESTION = {
    "unexpected_transfer": "The {obj} is really in the",
    "unexpected_contents": "The {pkg} really holds",
}


@dataclass(frozen=True)
class Story:
    """One drawn story before its question: the slots and the event sentences."""

    kind: str
    false_belief: bool
    reversed: bool
    slots: dict[str, str]
    sentences: tuple[str, ...]
    original: str
    new: str


def _draw_story(rng: random.Random, split: str, kind: str, false_belief: bool, reversed: bool) -> Story:
    part = 0 if split == "train" else 1
    p, m = rng.sample(ENTITIES["names"][part], 2)
    place = rng.choice(ENTITIES["places"][part])
    answers = CONTAINERS if kind == "unexpected_transfer" else CONTENTS
    first, second = rng.choice(list(combinations(answers, 2)))
    original, new = (second, first) if reversed else (first, second)
    leave = f"{p} {rng.choice(LEAVE)}."
    back = f"{p} {rng.choice(RETURN)}."
    if kind == "unexpected_transfer":
        obj = rng.choice(ENTITIES["objects"][part])
        slots = {"p": p, "m": m, "place": place, "obj": obj, "a": original, "b": new}
        setup = (f"{p} and {m} are in the {place}.", f"{p} {rng.choice(PUT)} the {obj} in the {original}.")
        change = f"{m} {rng.choice(MOVE)}."
    else:
        pkg = rng.choice(ENTITIES["packages"][part])
        slots = {"p": p, "m": m, "place": place, "pkg": pkg, "label": original, "actual": new}
        setup = (f"{p} and {m} are in the {place}.", f"The {pkg} is full of {original}.")
        change = f"{m} {rng.choice(FILL)}."
    middle = (leave, change, back) if false_belief else (change, leave, back)
    sentences = tuple(s.format(**slots) for s in (*setup, *middle))
    return Story(kind, false_belief, reversed, slots, sentences, original, new)


def _story_text(story: Story, question: str) -> str:
    """The story's sentences followed by the (filled-in) question, the answer left out."""
    return " ".join((*story.sentences, question))


def _item(story: Story, split: str, question: str, answer: str, foil: str) -> TomItem:
    return TomItem(
        story=_story_text(story, question),
        correct=" " + answer,
        foil=" " + foil,
        kind=story.kind,
        false_belief=story.false_belief,
        template_set=split,
        reversed=story.reversed,
        template=0,  # one story generator, no template variants
    )


def _belief_item(story: Story, split: str) -> TomItem:
    """The protagonist's belief: the original word under false belief, the new one otherwise."""
    belief, other = (story.original, story.new) if story.false_belief else (story.new, story.original)
    question = BELIEF_QUESTION[story.kind].format(who=story.slots["p"], **story.slots)
    return _item(story, split, question, belief, other)


def tom_items(split: str, n: int, seed: int = 0) -> list[TomItem]:
    """`n` belief questions balanced over kind x false/true belief x reversal, shuffled by seed.

    "eval" uses only held-out names, objects, packages and places; "fisher" only training ones.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise InputError(f"n must be non-negative, got {n}")
    rng = random.Random(f"tom-world/{split}/{seed}")
    cells = [(k, fb, rev) for rev in (False, True) for k in KINDS for fb in (True, False)]
    entity_split = "train" if split == "fisher" else "eval"
    items = [_belief_item(_draw_story(rng, entity_split, *cells[i % len(cells)]), split) for i in range(n)]
    rng.shuffle(items)
    return items


def training_texts(n: int, seed: int) -> list[str]:
    """`n` training stories with their answers, from training entities only.

    Questions: the protagonist's belief (70%), where the object really is or what the package
    really holds (15%), and the belief of the person who made the change, who saw it (15%).
    """
    rng = random.Random(f"tom-world/train/{seed}")
    texts = []
    for _ in range(n):
        story = _draw_story(rng, "train", rng.choice(KINDS), rng.random() < 0.5, rng.random() < 0.5)
        roll = rng.random()
        if roll < 0.7:
            item = _belief_item(story, "train")
            texts.append(item.story + item.correct)
            continue
        if roll < 0.85:
            question = REALITY_QUESTION[story.kind].format(**story.slots)
        else:
            question = BELIEF_QUESTION[story.kind].format(who=story.slots["m"], **story.slots)
        texts.append(f"{_story_text(story, question)} {story.new}")
    return texts


def suite() -> DataSuite:
    """Held-out ToM items and held-out filler text for experiments on `organism:tom`."""
    return organism_suite(
        "tom", held_out_filler(LEXICON, 1500), 32, tom=lambda source: TomData(tom_items, source)
    )
