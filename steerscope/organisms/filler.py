"""Generic filler text for model organisms: short paragraphs of plain sentences over a world's words.

Two jobs: every word of a world (held-out names, objects and places included) appears in training
in ordinary sentences, so its embedding is trained even where the capability's own stories never
use it; and the organism gets a generic-text distribution for the "generic" side of contrasts
(Fisher on generic text, perplexity). Filler never contains a capability's question patterns.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from steerscope.errors import InputError

#: Words every filler paragraph may use besides the world's own.
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "grey")
ADJECTIVES = ("small", "large", "old", "new", "quiet", "busy", "warm", "cold", "clean", "bright")
WEATHER = ("sunny", "rainy", "windy", "cloudy", "snowy", "foggy")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_THING_SENTENCES = (
    "The {thing} is {colour}.",
    "There is a {adjective} {thing} on the table.",
    "Someone left a {thing} by the door.",
    "The {thing} was {adjective} and {colour}.",
    "A {colour} {thing} can be useful.",
    "Nobody needed the {thing} that day.",
)
_PERSON_SENTENCES = (
    "{person} likes {colour} things.",
    "{person} was born on a {day}.",
    "{person} has a {adjective} {thing}.",
    "{person} talks with {other} every {day}.",
    "{person} and {other} are old friends.",
    "{person} found a {colour} {thing}.",
    "{person} visits the {place} on {day}.",
    "{person} feels {adjective} today.",
)
_PLACE_SENTENCES = (
    "The {place} is {adjective}.",
    "It was {weather} near the {place}.",
    "The {place} has {colour} walls.",
    "On {day} the {place} was {adjective}.",
    "A {thing} lies in the corner of the {place}.",
)


def filler_texts(
    lexicon: Mapping[str, Sequence[str]], n: int, seed: str | int, sentences: int = 5
) -> list[str]:
    """`n` paragraphs of `sentences` sentences each, deterministic by `seed`.

    `lexicon` must have "people", "things" and "places" (each non-empty); every word of it is used
    with equal chance, so each one is seen about equally often.
    """
    missing = [key for key in ("people", "things", "places") if not lexicon.get(key)]
    if missing:
        raise InputError(f"lexicon needs non-empty {', '.join(missing)}; got keys {sorted(lexicon)}")
    if n < 0 or sentences < 1:
        raise InputError(f"need n >= 0 and sentences >= 1, got n={n}, sentences={sentences}")
    rng = random.Random(f"filler/{seed}")
    people, things, places = (tuple(lexicon[k]) for k in ("people", "things", "places"))
    templates = _THING_SENTENCES + _PERSON_SENTENCES + _PLACE_SENTENCES
    paragraphs = []
    for _ in range(n):
        lines = []
        for _ in range(sentences):
            person, other = rng.sample(people, 2) if len(people) > 1 else (people[0], people[0])
            slots = dict(
                person=person,
                other=other,
                thing=rng.choice(things),
                place=rng.choice(places),
                colour=rng.choice(COLOURS),
                adjective=rng.choice(ADJECTIVES),
                weather=rng.choice(WEATHER),
                day=rng.choice(DAYS),
            )
            lines.append(rng.choice(templates).format(**slots))
        paragraphs.append(" ".join(lines))
    return paragraphs
