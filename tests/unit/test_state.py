"""The state table: which moves check_move allows, and what a disallowed one does."""

from __future__ import annotations

import inspect
import itertools
import json
import warnings

import pytest

from hostconsole.state import ACTIVE, MOVES, TERMINAL, IllegalMove, State, check_move, strict

ALL = list(State)
ALLOWED = [(a, b) for a in ALL for b in ALL if b in MOVES[a]]
DISALLOWED = [(a, b) for a in ALL for b in ALL if b not in MOVES[a]]


def ids(pair):
    return f"{pair[0].value}->{pair[1].value}"


@pytest.fixture
def strict_mode(monkeypatch):
    monkeypatch.setenv("HOSTCONSOLE_STRICT_STATES", "1")


@pytest.fixture(params=[None, "", "0"], ids=["unset", "empty", "zero"])
def lenient_mode(request, monkeypatch):
    if request.param is None:
        monkeypatch.delenv("HOSTCONSOLE_STRICT_STATES", raising=False)
    else:
        monkeypatch.setenv("HOSTCONSOLE_STRICT_STATES", request.param)


def test_the_states_are_the_specs_words():
    assert [s.value for s in State] == ["starting", "running", "restarting", "stopping", "stopped", "exited", "failed"]
    assert str(State.RUNNING) == "running" and State.RUNNING == "running"
    assert json.dumps({"state": State.FAILED}) == '{"state": "failed"}'


def test_active_and_terminal_partition_the_states():
    assert ACTIVE | TERMINAL == set(State) and not ACTIVE & TERMINAL
    assert TERMINAL == {State.STOPPED, State.EXITED, State.FAILED}


def test_every_state_has_a_row_in_the_table():
    assert set(MOVES) == set(State)
    assert all(set(v) <= set(State) for v in MOVES.values())


@pytest.mark.parametrize("state", sorted(TERMINAL), ids=str)
def test_terminal_states_have_no_way_out(state):
    assert MOVES[state] == frozenset()


@pytest.mark.parametrize("state", sorted(ACTIVE), ids=str)
def test_every_active_state_has_a_way_out_and_no_move_stays_put(state):
    assert MOVES[state] and state not in MOVES[state]


@pytest.mark.parametrize("state", sorted(ACTIVE), ids=str)
def test_every_active_state_can_reach_a_terminal_state(state):
    seen, todo = set(), [state]
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(MOVES[s])
    assert seen & TERMINAL


@pytest.mark.parametrize("state", sorted(ACTIVE - {State.STOPPING}), ids=str)
def test_every_active_state_but_stopping_can_be_stopped(state):
    # A stop must always be possible: straight to STOPPED, or through STOPPING.
    assert State.STOPPING in MOVES[state] or State.STOPPED in MOVES[state]


def test_the_table_is_the_documented_one():
    S = State
    assert MOVES == {
        S.STARTING: {S.RUNNING, S.EXITED, S.FAILED, S.RESTARTING, S.STOPPING, S.STOPPED},
        S.RUNNING: {S.RESTARTING, S.EXITED, S.FAILED, S.STOPPING},
        S.RESTARTING: {S.STARTING, S.FAILED, S.STOPPED, S.STOPPING},
        S.STOPPING: {S.STOPPED, S.FAILED},
        S.STOPPED: set(), S.EXITED: set(), S.FAILED: set(),
    }


@pytest.mark.parametrize("move", ALLOWED, ids=ids)
def test_an_allowed_move_passes_check_move_in_strict_mode(move, strict_mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_move("web", *move)


@pytest.mark.parametrize("move", ALLOWED, ids=ids)
def test_an_allowed_move_passes_check_move_silently_in_lenient_mode(move, lenient_mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_move("web", *move)


@pytest.mark.parametrize("move", DISALLOWED, ids=ids)
def test_a_disallowed_move_raises_illegal_move_in_strict_mode(move, strict_mode):
    with pytest.raises(IllegalMove) as ei:
        check_move("web", *move)
    msg = str(ei.value)
    assert "'web'" in msg and f"from {move[0].value} to {move[1].value}" in msg
    assert isinstance(ei.value, AssertionError)


@pytest.mark.parametrize("move", DISALLOWED, ids=ids)
def test_a_disallowed_move_only_warns_in_lenient_mode(move, lenient_mode):
    with pytest.warns(RuntimeWarning, match=f"cannot move from {move[0].value} to {move[1].value}"):
        check_move("web", *move)


def test_strict_mode_follows_the_environment(monkeypatch):
    for value, expected in [("1", True), ("yes", True), ("0", False), ("", False)]:
        monkeypatch.setenv("HOSTCONSOLE_STRICT_STATES", value)
        assert strict() is expected
    monkeypatch.delenv("HOSTCONSOLE_STRICT_STATES")
    assert strict() is False


def test_the_lenient_warning_points_at_the_caller_of_the_caller(lenient_mode):
    # Provider.move calls check_move: stacklevel=3 names whoever called Provider.move.
    def move():
        check_move("web", State.STOPPED, State.RUNNING)

    with pytest.warns(RuntimeWarning) as rec:
        move(); line = inspect.currentframe().f_lineno  # noqa: E702 -- the line the warning must name
    assert (rec[0].filename, rec[0].lineno) == (__file__, line)


def test_there_are_as_many_allowed_and_disallowed_moves_as_pairs():
    assert len(ALLOWED) + len(DISALLOWED) == len(ALL) ** 2
    assert len(ALLOWED) == sum(len(v) for v in MOVES.values()) == 6 + 4 + 4 + 2
    assert set(itertools.product(ALL, ALL)) == set(ALLOWED) | set(DISALLOWED)
