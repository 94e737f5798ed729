"""Multi-step arithmetic word problems written for steerscope, for efficiency steering.

Graded difficulty (1, 2 or 3 arithmetic operations: buying, sharing, remaining amounts), exact
integer answers, deterministic by seed. Each problem has three written solutions (brief, standard,
thorough) ending with "The answer is N."; the brief and thorough ones also serve as
demonstrations for the brief / thorough prompt variants. The train / held-out split is a fixed
function of the question text, so no question can be in both splits, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

from steerscope.errors import InputError

Style = Literal["brief", "standard", "thorough"]
STYLES = ("brief", "standard", "thorough")
Split = Literal["train", "heldout"]
SPLITS = ("train", "heldout")

INSTRUCTIONS: dict[str, str] = {
    "standard": "Solve each problem step by step.",
    "brief": "Solve each problem. Be brief: write only the calculation and the answer.",
    "thorough": "Solve each problem. Explain every step carefully in full sentences before the answer.",
}

NAMES = (("Tom", "he"), ("Sara", "she"), ("Ben", "he"), ("Mia", "she"), ("Leo", "he"), ("Ana", "she"))
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "cards")
THINGS = ("a book", "lunch", "a toy", "a ticket")


@dataclass(frozen=True)
class Problem:
    """One word problem: its template `kind`, number of operations, parameters, the final number
    and written solutions by style (none for a user's problems: `kind` "user", `steps` 0)."""

    kind: str
    steps: int
    params: dict[str, int | str] = field(hash=False)
    question: str
    answer: int | float
    solutions: dict[str, str] = field(hash=False, repr=False)

    def solution(self, style: Style = "standard") -> str:
        if style not in STYLES:
            raise InputError(f"unknown style {style!r}; valid: {', '.join(STYLES)}")
        if style not in self.solutions:
            raise InputError(f"this problem has no written {style} solution: {self.question!r}")
        return self.solutions[style]


def _problem(
    kind: str, steps: int, params: dict, question: str, answer: int, brief: str, standard: str, thorough: str
) -> Problem:
    end = f" The answer is {answer}."
    return Problem(
        kind,
        steps,
        params,
        question,
        answer,
        {"brief": brief + end, "standard": standard + end, "thorough": thorough + end},
    )


def _buy_more(name: str, he: str, item: str, a: int, b: int) -> Problem:
    n = a + b
    return _problem(
        "buy_more",
        1,
        dict(name=name, item=item, a=a, b=b),
        f"{name} has {a} {item}. {he.capitalize()} buys {b} more. How many {item} does {name} have now?",
        n,
        f"{a} + {b} = {n}.",
        f"{name} has {a} {item} and buys {b} more, so {a} + {b} = {n}.",
        f"First, {name} starts with {a} {item}. Then {he} buys {b} more {item}. To find how many "
        f"{he} has now, we add the two amounts together: {a} + {b} = {n}. So {name} now has {n} {item}.",
    )


def _spend(name: str, he: str, thing: str, a: int, b: int) -> Problem:
    n = a - b
    return _problem(
        "spend",
        1,
        dict(name=name, thing=thing, a=a, b=b),
        f"{name} had {a} dollars and spent {b} dollars on {thing}. How many dollars does {name} have left?",
        n,
        f"{a} - {b} = {n}.",
        f"{name} had {a} dollars and spent {b}, so {a} - {b} = {n}.",
        f"First, {name} had {a} dollars at the start. Then {he} spent {b} dollars on {thing}. To find "
        f"what is left, we subtract the amount spent from the starting amount: {a} - {b} = {n}. "
        f"So {name} has {n} dollars left.",
    )


def _boxes(item: str, a: int, b: int) -> Problem:
    n = a * b
    return _problem(
        "boxes",
        1,
        dict(item=item, a=a, b=b),
        f"A box holds {a} {item}. How many {item} are in {b} boxes?",
        n,
        f"{a} x {b} = {n}.",
        f"Each box holds {a} {item}, so {b} boxes hold {a} x {b} = {n}.",
        f"First, we know that one box holds {a} {item}. There are {b} boxes, and every box holds the "
        f"same number. To find the total, we multiply the number in one box by the number of boxes: "
        f"{a} x {b} = {n}. So there are {n} {item} in {b} boxes.",
    )


def _buy_change(name: str, he: str, item: str, count: int, price: int, bill: int) -> Problem:
    cost = count * price
    n = bill - cost
    return _problem(
        "buy_change",
        2,
        dict(name=name, item=item, count=count, price=price, bill=bill),
        f"{name} buys {count} {item} at {price} dollars each and pays with a {bill}-dollar bill. "
        f"How much change does {name} get?",
        n,
        f"{count} x {price} = {cost}. {bill} - {cost} = {n}.",
        f"The {item} cost {count} x {price} = {cost} dollars, so the change is {bill} - {cost} = {n}.",
        f"First, we find the total cost. {name} buys {count} {item} and each costs {price} dollars, so "
        f"the cost is {count} x {price} = {cost} dollars. Next, {he} pays with a {bill}-dollar bill. "
        f"The change is the money paid minus the cost: {bill} - {cost} = {n}. So {name} gets {n} dollars back.",
    )


def _share_eat(item: str, total: int, friends: int, eaten: int) -> Problem:
    each = total // friends
    n = each - eaten
    return _problem(
        "share_eat",
        2,
        dict(item=item, total=total, friends=friends, eaten=eaten),
        f"{total} {item} are shared equally among {friends} friends. Each friend gives away {eaten} of them. "
        f"How many {item} does each friend have left?",
        n,
        f"{total} / {friends} = {each}. {each} - {eaten} = {n}.",
        f"Each friend gets {total} / {friends} = {each} {item}, and after giving away {eaten} has "
        f"{each} - {eaten} = {n}.",
        f"First, we share the {item} equally. There are {total} {item} and {friends} friends, so each "
        f"friend gets {total} / {friends} = {each} {item}. Next, each friend gives away {eaten} of them. "
        f"We subtract: {each} - {eaten} = {n}. So each friend has {n} {item} left.",
    )


def _give_buy(name: str, he: str, item: str, a: int, b: int, c: int) -> Problem:
    left = a - b
    n = left + c
    return _problem(
        "give_buy",
        2,
        dict(name=name, item=item, a=a, b=b, c=c),
        f"{name} had {a} {item}, gave {b} to a friend and then bought {c} more. "
        f"How many {item} does {name} have now?",
        n,
        f"{a} - {b} = {left}. {left} + {c} = {n}.",
        f"After giving {b} away {name} has {a} - {b} = {left}, and after buying {c} more, {left} + {c} = {n}.",
        f"First, {name} had {a} {item}. Then {he} gave {b} to a friend, so {he} had {a} - {b} = {left} "
        f"{item} left. After that, {he} bought {c} more {item}. We add them: {left} + {c} = {n}. "
        f"So {name} has {n} {item} now.",
    )


def _two_items(name: str, he: str, n1: int, p1: int, n2: int, p2: int) -> Problem:
    c1, c2 = n1 * p1, n2 * p2
    n = c1 + c2
    return _problem(
        "two_items",
        3,
        dict(name=name, n1=n1, p1=p1, n2=n2, p2=p2),
        f"{name} buys {n1} pens at {p1} dollars each and {n2} notebooks at {p2} dollars each. "
        f"How many dollars does {name} spend in total?",
        n,
        f"{n1} x {p1} = {c1}. {n2} x {p2} = {c2}. {c1} + {c2} = {n}.",
        f"The pens cost {n1} x {p1} = {c1}, the notebooks cost {n2} x {p2} = {c2}, "
        f"so the total is {c1} + {c2} = {n}.",
        f"First, we find the cost of the pens. {name} buys {n1} pens at {p1} dollars each, so the pens "
        f"cost {n1} x {p1} = {c1} dollars. Next, we find the cost of the notebooks. {he.capitalize()} buys "
        f"{n2} notebooks at {p2} dollars each, so they cost {n2} x {p2} = {c2} dollars. Finally, we add the "
        f"two costs: {c1} + {c2} = {n}. So {name} spends {n} dollars in total.",
    )


def _sell_pack(total: int, sold: int, boxes: int, added: int) -> Problem:
    rest = total - sold
    each = rest // boxes
    n = each + added
    return _problem(
        "sell_pack",
        3,
        dict(total=total, sold=sold, boxes=boxes, added=added),
        f"A farmer has {total} eggs. She sells {sold} of them and packs the rest equally into {boxes} boxes. "
        f"Then she adds {added} more eggs to each box. How many eggs are in each box?",
        n,
        f"{total} - {sold} = {rest}. {rest} / {boxes} = {each}. {each} + {added} = {n}.",
        f"After selling, {total} - {sold} = {rest} eggs are left; each box gets {rest} / {boxes} = {each}, "
        f"and with {added} more, {each} + {added} = {n}.",
        f"First, the farmer sells {sold} of her {total} eggs, so {total} - {sold} = {rest} eggs are left. "
        f"Next, she packs these {rest} eggs equally into {boxes} boxes, so each box gets "
        f"{rest} / {boxes} = {each} eggs. Then she adds {added} more eggs to each box. We add: "
        f"{each} + {added} = {n}. So each box has {n} eggs.",
    )


def _save_share(name: str, he: str, thing: str, weekly: int, weeks: int, spent: int) -> Problem:
    saved = weekly * weeks
    rest = saved - spent
    n = rest // 2
    return _problem(
        "save_share",
        3,
        dict(name=name, thing=thing, weekly=weekly, weeks=weeks, spent=spent),
        f"{name} saves {weekly} dollars a week for {weeks} weeks, spends {spent} dollars on {thing}, "
        f"and gives half of the rest to a sister. How many dollars does {name} give to the sister?",
        n,
        f"{weekly} x {weeks} = {saved}. {saved} - {spent} = {rest}. {rest} / 2 = {n}.",
        f"{name} saves {weekly} x {weeks} = {saved}, has {saved} - {spent} = {rest} after spending, "
        f"and half of that is {rest} / 2 = {n}.",
        f"First, we find how much {name} saves. {he.capitalize()} saves {weekly} dollars a week for "
        f"{weeks} weeks, so {weekly} x {weeks} = {saved} dollars. Next, {he} spends {spent} dollars on "
        f"{thing}, so {saved} - {spent} = {rest} dollars are left. Then {he} gives half of the rest to a "
        f"sister. Half of {rest} is {rest} / 2 = {n}. So the sister gets {n} dollars.",
    )


def _draw(rng: random.Random, steps: int) -> Problem:
    """One random problem with `steps` operations; every intermediate value is a positive integer."""
    name, he = rng.choice(NAMES)
    item, thing = rng.choice(ITEMS), rng.choice(THINGS)
    r = rng.randint
    if steps == 1:
        kind = rng.choice(("buy_more", "spend", "boxes"))
        if kind == "buy_more":
            return _buy_more(name, he, item, r(2, 30), r(2, 30))
        if kind == "spend":
            b = r(2, 30)
            return _spend(name, he, thing, b + r(1, 40), b)
        return _boxes(item, r(2, 9), r(2, 9))
    if steps == 2:
        kind = rng.choice(("buy_change", "share_eat", "give_buy"))
        if kind == "buy_change":
            count, price = r(2, 6), r(2, 9)
            bill = next(b for b in (10, 20, 50, 100) if b > count * price)
            return _buy_change(name, he, item, count, price, bill)
        if kind == "share_eat":
            friends, each = r(2, 6), r(3, 10)
            return _share_eat(item, friends * each, friends, r(1, each - 1))
        b = r(2, 15)
        return _give_buy(name, he, item, b + r(1, 20), b, r(2, 20))
    if steps == 3:
        kind = rng.choice(("two_items", "sell_pack", "save_share"))
        if kind == "two_items":
            return _two_items(name, he, r(2, 6), r(2, 5), r(2, 4), r(3, 9))
        if kind == "sell_pack":
            boxes, each, sold = r(2, 5), r(2, 8), r(2, 12)
            return _sell_pack(boxes * each + sold, sold, boxes, r(1, 5))
        weekly, weeks = r(3, 10), r(2, 6)
        saved = weekly * weeks
        spent = rng.choice([s for s in range(2, saved - 1) if (saved - s) % 2 == 0])
        return _save_share(name, he, thing, weekly, weeks, spent)
    raise InputError(f"steps must be 1, 2 or 3; got {steps}")


#: Hand-picked demonstrations (one per difficulty); kept out of both splits.
DEMONSTRATIONS: tuple[Problem, ...] = (
    _buy_more("Nora", "she", "shells", 7, 5),
    _buy_change("Sam", "he", "pencils", 3, 4, 20),
    _sell_pack(26, 6, 4, 2),
)
_DEMO_QUESTIONS = {d.question for d in DEMONSTRATIONS}


def split_of(question: str) -> Split:
    """The split a question belongs to: a fixed hash of its text (about 1 in 4 held out)."""
    digest = int(hashlib.sha256(question.encode()).hexdigest(), 16)
    return "heldout" if digest % 4 == 0 else "train"


def arithmetic_problems(
    n: int, split: Split = "train", seed: int = 0, steps: Sequence[int] = (1, 2, 3)
) -> list[Problem]:
    """`n` distinct problems of `split`, cycling through the difficulties in `steps`."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return distinct_problems(_draw, random.Random(f"arithmetic-{seed}"), n, split, steps, _DEMO_QUESTIONS)


def distinct_problems(
    draw: Callable[[random.Random, int], Problem],
    rng: random.Random,
    n: int,
    split: Split,
    steps: Sequence[int],
    exclude: Collection[str] = (),
) -> list[Problem]:
    """`n` distinct problems of `split` from `draw(rng, steps)`, cycling through `steps`, none of
    whose questions is in `exclude`; `MAX_MISSES` draws in a row that give nothing new mean the
    problems of a step are used up (so a count far beyond them fails in seconds, not hours)."""
    problems: list[Problem] = []
    seen = set(exclude)
    misses = 0
    for _ in range(200 * n + 1000):
        problem = draw(rng, steps[len(problems) % len(steps)])
        if problem.question in seen or split_of(problem.question) != split:
            misses += 1
            if misses > MAX_MISSES:
                break
            continue
        misses = 0
        seen.add(problem.question)
        problems.append(problem)
        if len(problems) == n:
            return problems
    raise InputError(
        f"could not draw {n} distinct {split} problems with steps {list(steps)} (drew {len(problems)}); "
        "ask for fewer or more kinds of steps"
    )


#: Draws in a row without a new problem after which `distinct_problems` gives up.
MAX_MISSES = 20_000


def few_shot_prompt(problem: Problem | str, style: Style = "standard") -> str:
    """Instruction, the demonstrations solved in `style`, then the question and "Answer:"."""
    if style not in STYLES:
        raise InputError(f"unknown style {style!r}; valid: {', '.join(STYLES)}")
    question = problem.question if isinstance(problem, Problem) else problem
    shots = "".join(f"Question: {d.question}\nAnswer: {d.solution(style)}\n\n" for d in DEMONSTRATIONS)
    return f"{INSTRUCTIONS[style]}\n\n{shots}Question: {question}\nAnswer:"


_NUMBER_TEXT = r"-?\d[\d,]*(?:\.\d+)?"
_FINAL = re.compile(rf"answer is\s*:?\s*\$?\s*({_NUMBER_TEXT})", re.IGNORECASE)
_NUMBER = re.compile(_NUMBER_TEXT)


def extract_answer(text: str) -> int | float | None:
    """The final number of a solution: the last "The answer is N" if any, else the last number;
    commas dropped, an int unless it has a fractional part (so 72, 72.0 and 72.00 compare equal)."""
    found = _FINAL.findall(text) or _NUMBER.findall(text)
    if not found:
        return None
    digits = found[-1].replace(",", "")
    try:
        number = float(digits) if "." in digits else int(digits)
    except ValueError:
        return None
    return int(number) if isinstance(number, float) and number.is_integer() else number
