"""`DataSuite`: the data an experiment asks a model about, chosen by the model.

A pretrained model gets the natural-language sets (`steerscope.data.tom`, `.facts`, `.arithmetic`,
`.generic`); a model organism gets the synthetic world it was trained on, in its own vocabulary,
with evaluation items it never saw. Experiments call `suite_for(model)` and use only the fields
below, so one experiment runs unchanged on Gemma 3 270M and on an organism.

The knowledge prompts take a `kind` that says which source the prompt pushes toward:
"context", "memory" or "none" (neutral). On natural data the push comes from few-shot
demonstrations (SpARE's setup); an organism was trained with a cue in the prompt instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from steerscope.data.arithmetic import Problem
from steerscope.data.facts import Fact
from steerscope.data.tom import TomItem

#: The config attribute an organism carries: the name of the world it was trained on.
ORGANISM_ATTRIBUTE = "steerscope_organism"


@dataclass(frozen=True)
class DataSuite:
    """Data sources for one kind of model; a field is None when the model was not built for it.

    - `generic_texts()`: documents of plain text the model was not trained on (`generic_windows`
      splits their windows between "fisher" and "eval"), cut into windows of `generic_window`
      tokens by default (an organism never saw a document longer than a few dozen tokens);
    - `tom_items(split, n, seed)`: ToM items; "fisher" scores parameters, "eval" is held out;
    - `facts`: the fact table; `candidate_facts(n, seed)`: the facts to test for memorisation;
    - `closed_book_prompt(fact, seed)`, `knowledge_prompt(fact, kind, conflict, substitute, seed)`,
      `substitute(fact, seed)`: knowledge-conflict prompts (see the module docstring for `kind`);
    - `arithmetic_problems(n, split, seed, steps)` and `arithmetic_prompt(problem, style)`.
    """

    name: str
    generic_texts: Callable[[], list[str]] | None = None
    generic_window: int = 128
    tom_items: Callable[[str, int, int], list[TomItem]] | None = None
    facts: tuple[Fact, ...] = ()
    candidate_facts: Callable[[int, int], list[Fact]] | None = None
    closed_book_prompt: Callable[[Fact, int], str] | None = None
    knowledge_prompt: Callable[[Fact, str, bool, str | None, int], str] | None = None
    substitute: Callable[[Fact, int], str] | None = None
    arithmetic_problems: Callable[[int, str, int, Sequence[int]], list[Problem]] | None = None
    arithmetic_prompt: Callable[[Problem, str], str] | None = None

    def need(self, field: str) -> Any:
        """The field's value, or a clear error saying which models provide it."""
        value = getattr(self, field)
        if value is None or value == ():
            raise ValueError(
                f"the {self.name} data suite has no {field}: this model was not built for that "
                f"experiment; use a pretrained model or the matching organism (steerscope list organisms)"
            )
        return value


def natural_suite(demos: int = 3) -> DataSuite:
    """The natural-language sets, with `demos` few-shot demonstrations in knowledge prompts."""
    from steerscope.data import arithmetic, facts, tom
    from steerscope.data.generic import generic_documents

    def candidate_facts(n: int, seed: int) -> list[Fact]:
        return random.Random(f"candidates/{seed}").sample(list(facts.FACTS), min(n, len(facts.FACTS)))

    def closed_book(fact: Fact, seed: int) -> str:
        return facts.closed_book_prompt(fact, facts.demo_facts(fact, demos, seed))

    def knowledge(fact: Fact, kind: str, conflict: bool, substitute: str | None, seed: int) -> str:
        shown = facts.demonstrations(fact, kind, demos, seed)
        return facts.context_prompt(fact, shown, conflict, substitute)

    return DataSuite(
        name="natural",
        generic_texts=lambda: [text for _, text in generic_documents("offline")],
        tom_items=lambda split, n, seed: tom.tom_mixture(split, n, seed),
        facts=facts.FACTS,
        candidate_facts=candidate_facts,
        closed_book_prompt=closed_book,
        knowledge_prompt=knowledge,
        substitute=lambda fact, seed: facts.substitute(fact, seed),
        arithmetic_problems=arithmetic.arithmetic_problems,
        arithmetic_prompt=arithmetic.few_shot_prompt,
    )


def suite_for(model: Any, demos: int = 3) -> DataSuite:
    """The organism's world if `model` is an organism, else the natural sets."""
    from steerscope.model import as_model

    world = getattr(as_model(model).hf.config, ORGANISM_ATTRIBUTE, None)
    if world is None:
        return natural_suite(demos)
    from steerscope.organisms import world_suite

    return world_suite(world)
