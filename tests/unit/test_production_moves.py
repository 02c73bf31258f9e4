"""The production stack is the replay of the recorded moves (trading.regime.registry):
promotions put a version on top once, rollbacks take the top off, a restore (undoing an
out-of-band move) changes nothing."""

from __future__ import annotations

from trading.regime.registry import Move, replay


def move(kind: str, version: int, from_version: int | None) -> Move:
    return Move(0, kind, version, from_version, "test", "", "passed", "")


def test_five_mixed_moves_leave_the_right_production_and_previous() -> None:
    moves = [move("force", 1, None), move("promote", 2, 1), move("promote", 3, 2),
             move("rollback", 2, 3), move("promote", 4, 2)]  # fmt: skip
    assert replay([], moves) == [1, 2, 4]  # production 4, previous 2
    assert replay([], [*moves, move("rollback", 2, 4)]) == [1, 2]
    assert replay([], [*moves, move("rollback", 2, 4), move("rollback", 1, 2)]) == [1]


def test_a_version_promoted_again_moves_to_the_top_once() -> None:
    moves = [move("promote", 1, None), move("promote", 2, 1), move("promote", 1, 2)]
    assert replay([], moves) == [2, 1]


def test_a_restore_changes_nothing_and_a_legacy_base_is_kept() -> None:
    assert replay([5, 6], [move("restore", 6, 9)]) == [5, 6]
    assert replay([5, 6], [move("promote", 7, 6), move("rollback", 6, 7)]) == [5, 6]


def test_a_rollback_to_a_version_not_below_the_top_puts_it_on_top() -> None:
    # a stack the moves do not explain (edited tags): the rollback's target still wins
    assert replay([1, 2, 3], [move("rollback", 1, 3)]) == [2, 1]
    assert replay([2, 3], [move("rollback", 5, 3)]) == [2, 5]
