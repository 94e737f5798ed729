"""How spare scores an edit: exact-match rates, the rate a direction steers up, behaviour
transitions, and the issue-14 bars a setting and its random-feature control are held to."""

from __future__ import annotations

from typing import Any

# the issue-14 bars: SpARE's gain toward its source (context: any, memory: at least 0.10) while
# the random-feature control moves neither exact-match rate by 0.05 or more
MIN_GAIN = {"context": 1e-6, "memory": 0.10}
MAX_CONTROL_MOVE = 0.05


def exact_match_rates(answers: dict) -> dict[str, float]:
    n = len(answers["hit_c"])
    return {"em_c": sum(answers["hit_c"]) / n, "em_m": sum(answers["hit_m"]) / n}


def transitions(before: list, after: list) -> dict[str, int]:
    pairs = list(zip(before, after, strict=True))
    return {
        "C_to_M": sum(b == "C" and a == "M" for b, a in pairs),
        "M_to_C": sum(b == "M" and a == "C" for b, a in pairs),
        "C_kept": sum(b == "C" and a == "C" for b, a in pairs),
        "M_kept": sum(b == "M" and a == "M" for b, a in pairs),
    }


def target_key(direction: str) -> str:
    """The exact-match rate a direction steers up: em_c toward context, em_m toward memory."""
    return "em_c" if direction == "context" else "em_m"


def target_score(row: dict[str, Any]) -> float:
    """What a setting is chosen for: EM with the answer of the source it steers toward."""
    return row[target_key(row["direction"])]


def control_move(row: dict[str, Any], no_edit: dict[str, float]) -> float:
    """The random-feature control's largest change of either exact-match rate against no edit."""
    return max(abs(row["random_em_c"] - no_edit["em_c"]), abs(row["random_em_m"] - no_edit["em_m"]))


def gain(row: dict[str, Any], no_edit: dict[str, float]) -> float:
    """A setting's change of exact match toward the source it steers to, against no edit."""
    return target_score(row) - no_edit[target_key(row["direction"])]


def meets_bars(row: dict[str, Any], no_edit: dict[str, float]) -> bool:
    """SpARE moves answers toward its source by the issue's bar and its random control does not."""
    return (
        gain(row, no_edit) >= MIN_GAIN[row["direction"]] - 1e-9
        and control_move(row, no_edit) < MAX_CONTROL_MOVE
    )
