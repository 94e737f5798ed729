"""Choosing a setting on dev items (steerscope.steering.choice): the grid's rows, the two rules,
and held-out rows with their paired change."""

from __future__ import annotations

from steerscope.steering.choice import fewest_within_tolerance, grid_rows, held_out_rows, highest, mark_chosen


def test_grid_rows_describe_measure_and_prefix_the_random_control_in_order():
    measured: list[str] = []

    def measure(setting: int) -> dict:
        measured.append(f"edit {setting}")
        return {"em": setting / 10}

    def control(setting: int) -> dict:
        measured.append(f"control {setting}")
        return {"em": 0.0}

    rows = grid_rows([1, 2], lambda s: {"alpha": s}, measure, control)
    assert rows == [{"alpha": 1, "em": 0.1, "random_em": 0.0}, {"alpha": 2, "em": 0.2, "random_em": 0.0}]
    assert measured == ["edit 1", "control 1", "edit 2", "control 2"]
    assert grid_rows([1], lambda s: {}, measure) == [{"em": 0.1}]


def test_highest_breaks_ties_toward_the_gentler_setting_then_the_first():
    rows = [
        {"score": 0.5, "alpha": 3},
        {"score": 0.7, "alpha": 5},
        {"score": 0.7, "alpha": 2},
        {"score": 0.7, "alpha": 2},
    ]
    assert highest(rows, lambda r: r["score"], lambda r: (r["alpha"],)) == 2
    assert highest(rows[:1], lambda r: r["score"], lambda r: (r["alpha"],)) == 0


def test_fewest_within_tolerance_needs_less_cost_and_near_accuracy():
    unsteered = {"accuracy": 0.9, "tokens": 40}
    rows = [
        {"accuracy": 0.89, "tokens": 30},
        {"accuracy": None, "tokens": 5},
        {"accuracy": 0.95, "tokens": 30},
    ]
    assert fewest_within_tolerance(unsteered, rows, 0.02, cost="tokens") == 0  # first of the tied lowest
    assert fewest_within_tolerance(unsteered, rows, 1.0, cost="tokens") == 1  # no accuracy counts as 0
    assert fewest_within_tolerance(unsteered, [{"accuracy": 0.9, "tokens": 40}], cost="tokens") is None
    assert mark_chosen(rows[:2], 1) == [{**rows[0], "chosen": False}, {**rows[1], "chosen": True}]
    assert mark_chosen(rows[:1], None) == [{**rows[0], "chosen": False}]


def test_held_out_rows_pair_each_setting_with_the_baseline():
    rows = held_out_rows(
        ["a", "bb"],
        lambda s: {"setting": s},
        lambda s: ({"n": len(s)}, [len(s)] * 2),
        [1, 1],
        lambda base, got: {"change": sum(got) - sum(base)},
    )
    assert rows == [{"setting": "a", "n": 1, "change": 0}, {"setting": "bb", "n": 2, "change": 2}]
