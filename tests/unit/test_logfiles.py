"""Log files: rotation, reading back (tail, follow with an injected sleep), run headers and offsets."""

from __future__ import annotations

import os
import re
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostconsole import _logfiles
from hostconsole._logfiles import HEADER_PREFIX, follow, header, log_name, open_for_run, rotate, tail

fuzz = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HEADER_RE = re.compile(rb"--- hostconsole: 'web' run (\d+) started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC ---\n")


def lines(prefix: str, count: int, start: int = 0) -> str:
    return "".join(f"{prefix}{i:04d}\n" for i in range(start, start + count))


@pytest.fixture
def log(tmp_path):
    return tmp_path / "web.log"


# --- names and headers -----------------------------------------------------------------------

def test_a_log_is_named_after_its_provider():
    assert log_name("web-1.x_y") == "web-1.x_y.log"
    assert log_name("a/b c") == "a_b_c.log"


def test_a_header_names_the_provider_the_run_and_the_utc_time():
    assert header("web", 2, when=0) == b"--- hostconsole: 'web' run 2 started 1970-01-01 00:00:00 UTC ---\n"
    assert header("db", 13, when=86400 * 365 + 3661).startswith(HEADER_PREFIX + b"'db' run 13 started 1971-01-01 01:01:01")


def test_a_header_without_a_time_is_stamped_now():
    assert HEADER_RE.fullmatch(header("web", 3))


# --- open_for_run ------------------------------------------------------------------------------

def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_the_first_run_in_a_new_log_has_no_header_and_begins_at_zero(log):
    fd, offset = open_for_run(str(log), "web", 1)
    try:
        assert offset == 0 and read(log) == b""
        assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
        os.write(fd, b"hello\n")
    finally:
        os.close(fd)
    assert read(log) == b"hello\n"


def test_a_first_run_in_an_empty_log_gets_no_header(log):
    log.write_bytes(b"")
    fd, offset = open_for_run(str(log), "web", 1)
    os.close(fd)
    assert offset == 0 and read(log) == b""


def test_a_later_run_gets_a_header_even_after_a_silent_run(log):
    log.write_bytes(b"")
    fd, offset = open_for_run(str(log), "web", 4)
    os.close(fd)
    data = read(log)
    assert data.startswith(b"--- hostconsole: 'web' run 4 started ") and offset == len(data)


def test_a_run_after_output_gets_a_header_and_begins_after_it(log):
    log.write_bytes(b"run 1 said this\n")
    fd, offset = open_for_run(str(log), "web", 2)
    try:
        data = read(log)
        assert data.startswith(b"run 1 said this\n")
        assert HEADER_RE.fullmatch(data[len(b"run 1 said this\n"):]).group(1) == b"2"
        assert offset == len(data)
        os.write(fd, b"run 2\n")
    finally:
        os.close(fd)
    assert read(log)[offset:] == b"run 2\n"


def test_a_run_after_output_cut_mid_line_starts_its_header_on_a_new_line(log):
    log.write_bytes(b"died mid-li")
    fd, offset = open_for_run(str(log), "web", 2)
    os.close(fd)
    data = read(log)
    assert data.startswith(b"died mid-li\n" + HEADER_PREFIX)
    assert HEADER_RE.fullmatch(data[len(b"died mid-li\n"):]) and offset == len(data)


def test_the_run_fd_appends_wherever_it_is_seeked(log):
    log.write_bytes(b"old\n")
    fd, offset = open_for_run(str(log), "web", 2)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"new\n")
    finally:
        os.close(fd)
    data = read(log)
    assert data.startswith(b"old\n") and data.endswith(b"new\n") and data[offset:] == b"new\n"


def test_tail_from_a_runs_offset_shows_only_that_run(log):
    log.write_bytes(lines("one-", 5).encode())
    fd, offset = open_for_run(str(log), "web", 2)
    try:
        os.write(fd, lines("two-", 2).encode())
    finally:
        os.close(fd)
    assert tail(log, 10, start=offset) == lines("two-", 2)
    assert tail(log, 10).startswith(lines("one-", 5))


# --- rotate --------------------------------------------------------------------------------------

def test_rotate_keeps_at_most_cap_bytes_starting_at_a_whole_line_and_empties_the_log(log):
    content = lines("line-", 100)  # 10-byte lines
    log.write_text(content)
    rotate(str(log), 95)
    kept = read(str(log) + ".1").decode()
    assert read(log) == b"" and os.path.exists(log)
    assert len(kept) <= 95 and content.endswith(kept)
    assert content[len(content) - len(kept) - 1] == "\n"
    assert kept == lines("line-", 9, start=91)


def test_rotate_replaces_the_previous_rotated_log(log):
    (log.parent / "web.log.1").write_text("stale\n" * 100)
    log.write_text("a\nb\nc\n")
    rotate(str(log), 3)
    assert read(str(log) + ".1") == b"c\n"


def test_rotate_of_one_line_longer_than_the_cap_keeps_its_end(log):
    log.write_text("z" * 50 + "\n")
    rotate(str(log), 10)
    assert read(str(log) + ".1") == b"z" * 9 + b"\n"


def test_rotate_leaves_no_temp_file(log):
    log.write_text(lines("l", 50))
    rotate(str(log), 30)
    assert sorted(os.listdir(log.parent)) == ["web.log", "web.log.1"]


@fuzz
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=15),
                max_size=30),
       st.booleans(), st.integers(1, 200))
def test_rotate_never_keeps_more_than_cap_and_starts_at_a_line_when_one_starts_in_the_kept_span(
        tmp_path, texts, trailing_newline, cap):
    path = tmp_path / "f.log"
    content = "\n".join(texts).encode() + (b"\n" if trailing_newline and texts else b"")
    path.write_bytes(content)
    rotate(str(path), cap)
    kept = read(str(path) + ".1")
    assert read(path) == b""
    assert len(kept) <= cap and content.endswith(kept)
    size = len(content)
    starts = [p for p in range(max(1, size - cap), size) if content[p - 1:p] == b"\n"]
    if starts:  # a line begins in the last cap bytes: what is kept begins at a line
        cut = size - len(kept)
        assert cut == 0 or content[cut - 1:cut] == b"\n"


def test_rotate_keeps_a_whole_first_line_when_the_cut_falls_on_a_line_boundary(log):
    log.write_text("aa\nbb\ncc\n")
    rotate(str(log), 6)  # the last 6 bytes are exactly "bb\ncc\n"
    assert read(str(log) + ".1") == b"bb\ncc\n"


# --- tail ------------------------------------------------------------------------------------------

def test_tail_gives_the_last_n_lines(log):
    log.write_text(lines("l", 10))
    assert tail(log, 3) == lines("l", 3, start=7)
    assert tail(str(log), 1) == "l0009\n"


def test_tail_of_more_lines_than_there_are_gives_them_all(log):
    log.write_text(lines("l", 4))
    assert tail(log, 100) == lines("l", 4)


def test_tail_of_zero_lines_is_empty(log):
    log.write_text(lines("l", 4))
    assert tail(log, 0) == "" and tail(log, -3) == ""


def test_tail_of_a_missing_log_is_empty(tmp_path):
    assert tail(tmp_path / "nope.log", 10) == ""
    assert tail(tmp_path / "not-a-dir" / "x.log", 10) == ""


def test_tail_ends_an_unfinished_last_line(log):
    log.write_text("a\nb")
    assert tail(log, 1) == "b\n" and tail(log, 5) == "a\nb\n"


def test_tail_up_to_end_ignores_what_was_written_later(log):
    early = lines("early", 5)
    log.write_text(early + lines("late", 5))
    assert tail(log, 2, end=len(early)) == lines("early", 2, start=3)


def test_tail_from_start_does_not_reach_back_before_it(log):
    old = lines("old", 5)
    log.write_text(old + lines("new", 2))
    assert tail(log, 10, start=len(old)) == lines("new", 2)


def test_tail_makes_up_from_the_rotated_log(log):
    (log.parent / "web.log.1").write_text(lines("r", 5))
    log.write_text(lines("l", 2))
    assert tail(log, 4) == lines("r", 2, start=3) + lines("l", 2)
    assert tail(log, 2) == lines("l", 2)
    assert tail(log, 100) == lines("r", 5) + lines("l", 2)


def test_tail_from_start_does_not_read_the_rotated_log(log):
    (log.parent / "web.log.1").write_text(lines("r", 5))
    log.write_text(lines("l", 4))
    assert tail(log, 10, start=len(lines("l", 1))) == lines("l", 3, start=1)


def test_tail_from_a_start_beyond_a_rotated_log_reads_it_from_the_top(log):
    # The run began at byte 1000; the log was rotated since and now holds less than that.
    (log.parent / "web.log.1").write_text(lines("r", 3))
    log.write_text(lines("l", 2))
    assert tail(log, 2, start=1000) == lines("l", 2)
    assert tail(log, 5, start=1000) == lines("r", 3) + lines("l", 2)


def test_tail_of_a_large_log_reads_across_chunks(log):
    content = lines("line-", 5000)  # 50 kB: several read chunks
    log.write_text(content)
    assert tail(log, 3) == lines("line-", 3, start=4997)
    assert tail(log, 3000) == lines("line-", 3000, start=2000)
    assert tail(log, 6000) == content


def test_tail_replaces_bytes_that_are_not_utf8(log):
    log.write_bytes(b"ok\n\xff\xfe bad\n")
    assert tail(log, 2) == "ok\n\ufffd\ufffd bad\n"


line_texts = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=12),
                      max_size=25)


@fuzz
@given(line_texts, line_texts, st.integers(0, 60))
def test_tail_is_the_last_n_lines_of_the_rotated_log_then_the_log(tmp_path, old, new, n):
    path = tmp_path / "f.log"
    (tmp_path / "f.log.1").write_bytes("".join(t + "\n" for t in old).encode())
    path.write_bytes("".join(t + "\n" for t in new).encode())
    want = (old + new)[-n:] if n else []
    assert tail(path, n) == "".join(t + "\n" for t in want)


# --- follow -------------------------------------------------------------------------------------

class Sleeper:
    """An injected sleep that runs the next scripted change to the log instead of waiting."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)
        if len(self.calls) > 50:
            raise AssertionError("follow kept sleeping: nothing it was waiting for arrived")
        if self.steps:
            self.steps.pop(0)()


def append(path, text):
    def step():
        with open(path, "ab") as f:
            f.write(text.encode())
    return step


def test_follow_gives_the_last_lines_then_what_is_appended(log):
    log.write_text(lines("l", 5))
    sleep = Sleeper(append(log, "more\n"), append(log, "and more\n"))
    gen = follow(lambda: log, 2, poll=0.25, sleep=sleep)
    assert next(gen) == lines("l", 2, start=3)
    assert sleep.calls == []
    assert next(gen) == "more\n"
    assert next(gen) == "and more\n"
    assert sleep.calls == [0.25, 0.25]


def test_follow_of_an_empty_log_waits_for_its_first_output(log):
    log.write_text("")
    sleep = Sleeper(lambda: None, append(log, "first\n"))
    gen = follow(lambda: log, 10, poll=0.1, sleep=sleep)
    assert next(gen) == "first\n" and len(sleep.calls) == 2


def test_follow_gives_partial_lines_as_they_come(log):
    log.write_text("")
    sleep = Sleeper(append(log, "hal"), append(log, "f\n"))
    gen = follow(lambda: log, 10, sleep=sleep)
    assert [next(gen), next(gen)] == ["hal", "f\n"]


def test_follow_starts_over_when_the_log_is_truncated(log):
    log.write_text(lines("old", 20))

    def rotate_and_write():
        rotate(str(log), 10)
        append(log, "after\n")()

    sleep = Sleeper(rotate_and_write)
    gen = follow(lambda: log, 1, sleep=sleep)
    assert next(gen) == "old0019\n"
    assert next(gen) == "after\n"


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path):
    path = tmp_path / "later.log"
    where = {"path": None}

    def appear():
        path.write_text("hello\n")
        where["path"] = path

    sleep = Sleeper(lambda: None, appear)
    gen = follow(lambda: where["path"], 5, sleep=sleep)
    assert next(gen) == "hello\n"


def test_follow_does_not_repeat_the_tail_when_the_log_grows_during_it(log, monkeypatch):
    # What is written after follow measured the log comes once, as new output, not in the tail.
    log.write_text("a\nb\n")
    real_tail = _logfiles.tail

    def tail_then_write(path, n, end=None, start=0):
        out = real_tail(path, n, end=end, start=start)
        append(log, "c\n")()
        return out

    monkeypatch.setattr(_logfiles, "tail", tail_then_write)
    gen = follow(lambda: log, 5, sleep=Sleeper())
    assert next(gen) == "a\nb\n"
    assert next(gen) == "c\n"


def test_size_of_nothing_is_zero(tmp_path):
    assert _logfiles.size(None) == 0 and _logfiles.size(tmp_path / "missing") == 0
    (tmp_path / "f").write_bytes(b"12345")
    assert _logfiles.size(tmp_path / "f") == 5
