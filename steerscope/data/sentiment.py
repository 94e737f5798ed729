"""A sentiment contrast set written for steerscope: the same sentence with a positive or a
negative evaluation, over many subjects and wordings; deterministic by seed."""

from __future__ import annotations

import random

from steerscope.errors import InputError

SUBJECTS = (
    "the film",
    "the concert",
    "the hotel",
    "the meal",
    "the book",
    "the trip",
    "the new phone",
    "the lecture",
    "the game last night",
    "the museum",
    "the coffee here",
    "the play",
    "the apartment",
    "the weekend",
    "the interview",
    "the service",
)
FRAMES = (
    "Honestly, {subject} was {word}.",
    "I have to say that {subject} was {word}.",
    "Everyone agreed that {subject} was {word}.",
    "My review in one line: {subject} was {word}.",
)
EVALUATIONS = (
    ("wonderful", "awful"),
    ("delightful", "dreadful"),
    ("excellent", "terrible"),
    ("fantastic", "horrible"),
    ("lovely", "miserable"),
    ("brilliant", "disappointing"),
)
NEUTRAL_PROMPTS = (
    "I spent the afternoon at the new restaurant downtown, and the food was",
    "My first week at the new job has been",
    "When I think about the trip we took last summer, I feel",
)


def n_distinct_pairs() -> int:
    """The largest `n` `sentiment_pairs` can draw."""
    return len(SUBJECTS) * len(FRAMES) * len(EVALUATIONS)


def sentiment_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` distinct (positive, negative) sentences differing only in the evaluative word."""
    combos = [(s, f, e) for s in SUBJECTS for f in FRAMES for e in EVALUATIONS]
    if n > len(combos):
        raise InputError(f"at most {len(combos)} distinct pairs, asked for {n}")
    rng = random.Random(seed)
    rng.shuffle(combos)
    pairs = []
    for subject, frame, (good, bad) in combos[:n]:
        sentence = frame.format(subject=subject, word="{word}")
        pairs.append((_capitalise(sentence.format(word=good)), _capitalise(sentence.format(word=bad))))
    return pairs


def _capitalise(text: str) -> str:
    return text[0].upper() + text[1:]
