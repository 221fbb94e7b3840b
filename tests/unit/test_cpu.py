"""CpuSampler: CPU % from ProcStat readings, with a fake clock and a fake "now" in start-time units."""

from __future__ import annotations

import pytest

from hostconsole import _proc
from hostconsole._proc import CpuSampler, ProcId, ProcStat

UNIT = _proc.stamp_to_seconds(1)  # seconds per unit of ProcId.start (a clock tick on Linux)


def stamp(seconds: float) -> int:
    """Seconds since boot, in the units of ProcId.start and now_stamp()."""
    return round(seconds / UNIT)


def P(pid: int, cpu: float, start_s: float = 100.0) -> ProcStat:  # noqa: N802
    return ProcStat(pid, 1, pid, pid, stamp(start_s), "S", cpu)


class Clock:
    def __init__(self):
        self.t = 500.0

    def __call__(self):
        return self.t


@pytest.fixture
def boot_time(monkeypatch):
    """Set what _proc.now_stamp() returns, in seconds since boot (default: 110 s)."""
    now = {"s": 110.0}
    monkeypatch.setattr(_proc, "now_stamp", lambda: stamp(now["s"]))
    return now


@pytest.fixture
def sampler(boot_time):
    clock = Clock()
    s = CpuSampler(clock)
    s.clock = clock
    return s


def test_a_first_look_gives_the_lifetime_average(sampler):
    # Started at 100 s, now 110 s: 2.5 CPU seconds in 10 s of life is 25 %.
    p = P(7, 2.5)
    assert sampler.percent([p]) == {p.ident: 25.0}


def test_a_first_look_at_a_busy_multithreaded_process_can_exceed_100(sampler):
    p = P(7, 30.0)
    assert sampler.percent([p]) == {p.ident: 300.0}


@pytest.mark.parametrize("start_s", [110.0, 111.0], ids=["born-this-tick", "clock-behind"])
def test_a_first_look_at_a_process_of_no_age_is_zero(sampler, start_s):
    p = P(7, 0.5, start_s=start_s)
    assert sampler.percent([p]) == {p.ident: 0.0}


def test_a_later_look_gives_the_usage_over_the_interval(sampler, boot_time):
    sampler.percent([P(7, 2.5)])
    sampler.clock.t += 1.0
    boot_time["s"] += 1.0  # the lifetime average (3.0 / 11 s) would be 27.3 %, not what we want
    assert sampler.percent([P(7, 3.0)]) == {ProcId(7, stamp(100.0)): 50.0}
    sampler.clock.t += 2.0
    assert sampler.percent([P(7, 3.0)]) == {ProcId(7, stamp(100.0)): 0.0}


def test_readings_closer_than_min_interval_keep_the_earlier_base(sampler):
    ident = P(7, 0).ident
    assert sampler.percent([P(7, 2.5)]) == {ident: 25.0}
    sampler.clock.t += CpuSampler.MIN_INTERVAL / 2
    # Too soon to measure: the last figure again, and the base stays where it was.
    assert sampler.percent([P(7, 2.6)]) == {ident: 25.0}
    sampler.clock.t += CpuSampler.MIN_INTERVAL  # 1.5 intervals after the base
    assert sampler.percent([P(7, 2.5 + 0.15)]) == {ident: 50.0}


def test_a_reading_exactly_min_interval_later_is_measured_and_becomes_the_base(sampler):
    ident = P(7, 0).ident
    sampler.clock.t = 0.0
    sampler.percent([P(7, 2.5)])
    sampler.clock.t = CpuSampler.MIN_INTERVAL
    assert sampler.percent([P(7, 2.6)]) == {ident: 50.0}
    # The base moved to that reading: half an interval on, the figure is kept, not re-measured
    # against the first reading (which would give 33.3).
    sampler.clock.t = CpuSampler.MIN_INTERVAL * 1.5
    assert sampler.percent([P(7, 2.6)]) == {ident: 50.0}


def test_a_burst_of_readings_does_not_move_the_base(sampler):
    ident = P(7, 0).ident
    sampler.percent([P(7, 2.5)])
    for i in range(1, 5):
        sampler.clock.t += CpuSampler.MIN_INTERVAL / 8
        assert sampler.percent([P(7, 2.5 + i)]) == {ident: 25.0}
    sampler.clock.t = 500.0 + 0.5  # one measured reading over the whole half second
    assert sampler.percent([P(7, 2.5 + 0.25)]) == {ident: 50.0}


def test_cpu_time_that_went_backwards_reads_as_zero(sampler):
    sampler.percent([P(7, 2.5)])
    sampler.clock.t += 1.0
    assert sampler.percent([P(7, 1.0)]) == {P(7, 0).ident: 0.0}


def test_the_result_is_rounded_to_one_decimal(sampler):
    sampler.percent([P(7, 0.0)])
    sampler.clock.t += 3.0
    assert sampler.percent([P(7, 1.0)]) == {P(7, 0).ident: 33.3}


def test_processes_are_measured_separately(sampler):
    a, b = P(1, 1.0), P(2, 5.0)
    assert sampler.percent([a, b]) == {a.ident: 10.0, b.ident: 50.0}
    sampler.clock.t += 1.0
    assert sampler.percent([P(1, 1.25), P(2, 5.0)]) == {a.ident: 25.0, b.ident: 0.0}


def test_a_recycled_pid_is_a_new_process(sampler, boot_time):
    old = P(7, 2.5, start_s=100.0)
    sampler.percent([old])
    sampler.clock.t += 1.0
    new = P(7, 0.5, start_s=105.0)  # same pid, later start: not the process measured before
    assert sampler.percent([new]) == {new.ident: 10.0}  # its own lifetime: 0.5 s in 5 s


def test_an_empty_reading_is_empty(sampler):
    assert sampler.percent([]) == {}


def test_forget_all_but_forgets_the_others(sampler, boot_time):
    a, b = P(1, 1.0), P(2, 1.0)
    sampler.percent([a, b])
    sampler.forget_all_but([a.ident])
    sampler.clock.t += 1.0
    boot_time["s"] += 10.0  # 20 s of life
    out = sampler.percent([P(1, 1.5), P(2, 1.5)])
    assert out[a.ident] == 50.0  # still measured over the interval
    assert out[b.ident] == 7.5  # forgotten: judged over its life again (1.5 s in 20 s)
