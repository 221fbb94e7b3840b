"""The registry: the safe JSON reader, reading a host's entry, and the records' JSON round trip.

FIFOs and symlinks here are files made with os.mkfifo/os.symlink; no process is involved.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostconsole import registry
from hostconsole._proc import ProcId
from hostconsole.registry import (
    HOST_FILE, MAX_ENTRY_BYTES, VERSION, HostRecord, ProviderRecord, host_dirs, read, read_all, read_json,
    write_atomic,
)
from hostconsole.spec import ProviderSpec
from hostconsole.state import State

fuzz = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture
def host_dir(tmp_path):
    d = tmp_path / "hosts" / "h1"
    d.mkdir(parents=True)
    return d


def entry(**fields):
    return {"version": VERSION, "host": "h1", **fields}


def read_quietly(host_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read(host_dir)


def read_warns(host_dir, match):
    with pytest.warns(RuntimeWarning, match=match) as rec:
        out = read(host_dir)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    return out


# --- read_json --------------------------------------------------------------------------------

def test_read_json_reads_a_regular_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": [1, 2.5, "é", null]}')
    assert read_json(p) == {"a": [1, 2.5, "é", None]}


def test_read_json_of_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "nope.json")


def test_read_json_refuses_a_fifo_without_blocking(tmp_path):
    p = tmp_path / "x.json"
    os.mkfifo(p)
    with pytest.raises(ValueError, match="not a regular file"):
        read_json(p)


def test_read_json_refuses_a_directory(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        read_json(tmp_path)


def test_read_json_refuses_a_symlink_even_to_a_good_file(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "x.json"
    link.symlink_to(real)
    with pytest.raises(ValueError):
        read_json(link)
    assert read_json(real) == {}


def test_read_json_refuses_a_file_over_the_limit(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('"' + "x" * 20 + '"')
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        read_json(p, limit=10)
    assert read_json(p, limit=22) == "x" * 20


def test_read_json_turns_deep_nesting_into_value_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json(p)


@pytest.mark.parametrize("data", [b'{"host": "\xff\xfe"}', b"\xff\xfe\xfd", b"{", b"", b"{'a': 1}", b"nan x"],
                         ids=repr)
def test_read_json_refuses_malformed_or_non_utf8_text(tmp_path, data):
    p = tmp_path / "x.json"
    p.write_bytes(data)
    with pytest.raises(ValueError) as ei:
        read_json(p)
    assert type(ei.value) is ValueError


# --- read -------------------------------------------------------------------------------------

def test_read_of_a_host_without_an_entry_is_none_without_a_warning(host_dir):
    assert read_quietly(host_dir) is None


def test_read_skips_a_fifo_with_a_warning(host_dir):
    os.mkfifo(host_dir / HOST_FILE)
    assert read_warns(host_dir, "not a regular file") is None


def test_read_skips_a_symlink_with_a_warning(host_dir, tmp_path):
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps(entry()))
    (host_dir / HOST_FILE).symlink_to(planted)
    assert read_warns(host_dir, "unreadable") is None


def test_read_skips_an_oversized_entry_with_a_warning(host_dir):
    p = host_dir / HOST_FILE
    with open(p, "wb") as f:
        f.truncate(MAX_ENTRY_BYTES + 1)  # sparse: costs no disk
    assert read_warns(host_dir, "larger than") is None


def test_read_skips_a_deeply_nested_entry_with_a_warning(host_dir):
    (host_dir / HOST_FILE).write_bytes(b'{"host": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert read_warns(host_dir, "nested too deeply") is None


def test_read_skips_a_non_utf8_entry_with_a_warning(host_dir):
    (host_dir / HOST_FILE).write_bytes(b'{"version": 2, "host": "\xff"}')
    assert read_warns(host_dir, "unreadable") is None


def test_read_skips_a_truncated_entry_with_a_warning(host_dir):
    (host_dir / HOST_FILE).write_text(json.dumps(entry())[:-5])
    assert read_warns(host_dir, "unreadable") is None


@pytest.mark.parametrize("data", [[], "h1", 5, None, {"version": 2}, {"version": 2, "host": 5}], ids=repr)
def test_read_skips_an_entry_that_is_not_a_host_object_with_a_warning(host_dir, data):
    (host_dir / HOST_FILE).write_text(json.dumps(data))
    assert read_warns(host_dir, "malformed") is None


@pytest.mark.parametrize("version", [VERSION + 1, None, "2", 2.0, True], ids=repr)
def test_read_skips_an_entry_of_an_unknown_format_with_a_warning(host_dir, version):
    (host_dir / HOST_FILE).write_text(json.dumps({**entry(), "version": version}))
    assert read_warns(host_dir, "newer hostconsole") is None


def test_read_accepts_an_older_format(host_dir):
    (host_dir / HOST_FILE).write_text(json.dumps({**entry(), "version": 1}))
    assert read_quietly(host_dir).host_id == "h1"


# --- records: round trips --------------------------------------------------------------------------

def spec(name="web", **kw) -> ProviderSpec:
    return ProviderSpec.from_wire({"name": name, "argv": ["/usr/bin/env", "python3", "-m", "http.server"],
                                   "cwd": "/srv", **kw})


def full_host(host_dir) -> HostRecord:
    return HostRecord(
        host_id="h1", dir=host_dir, owner=ProcId(1234, 987654), watchdog=ProcId(1240, 987660), watchdog_alive=True,
        state_dir="/tmp/state", kind="kernel", owner_argv=("python", "-m", "ipykernel_launcher", "-f", "k.json"),
        started=1764522352.25, fence="cgroup",
        providers={
            "db": ProviderRecord("db", spec("db", ready="port:5433", stop_signal=2), State.RUNNING,
                                 main=ProcId(1300, 987700), started=1764522353.5,
                                 members=(ProcId(1300, 987700), ProcId(1301, 987701)), log="/tmp/state/logs/db.log"),
            "web": ProviderRecord("web", spec("web", requires=["db"], restart="on-failure", env={"A": "1"}),
                                  State.RESTARTING, restarts=3, exit_code=1, error="exited with status 1"),
            "mig": ProviderRecord("mig", spec("mig", oneshot=True), State.EXITED, exit_code=0),
            "old": ProviderRecord("old", None, State.FAILED, signal="SIGKILL"),
        },
    )


def test_a_host_record_round_trips_through_json(host_dir):
    rec = full_host(host_dir)
    data = json.loads(json.dumps(rec.to_json(), allow_nan=False))
    assert data["version"] == VERSION and data["host"] == "h1"
    assert HostRecord.from_json(host_dir, data) == rec


def test_a_host_record_round_trips_through_the_registry_file(host_dir):
    rec = full_host(host_dir)
    write_atomic(host_dir / HOST_FILE, rec.to_json())
    assert stat.S_IMODE(os.stat(host_dir / HOST_FILE).st_mode) == 0o600
    assert sorted(os.listdir(host_dir)) == [HOST_FILE]  # no temp file left
    assert read_quietly(host_dir) == rec


def test_an_empty_host_record_round_trips(host_dir):
    rec = HostRecord("h1", host_dir, owner=None)
    assert HostRecord.from_json(host_dir, json.loads(json.dumps(rec.to_json()))) == rec


def test_a_provider_record_without_a_spec_falls_back_to_the_defaults():
    p = ProviderRecord("old", None, State.STOPPED)
    assert (p.kind, p.requires, p.stop_signal, p.stop_timeout) == ("provider", (), 15, 5.0)
    q = ProviderRecord("mig", spec("mig", oneshot=True, requires="db", stop_signal="INT", stop_timeout=1),
                       State.EXITED)
    assert (q.kind, q.requires, q.stop_signal, q.stop_timeout) == ("oneshot", ("db",), 2, 1.0)


idents = st.builds(ProcId, st.integers(1, 2 ** 22), st.integers(0, 2 ** 62))
opt_text = st.none() | st.text(max_size=10)
specs = st.none() | st.sampled_from([spec(), spec(ready="log:ok", env={"K": "v"}), spec(oneshot=True, restart="no")])


@fuzz
@given(st.builds(
    ProviderRecord, name=st.just("web"), spec=specs, state=st.sampled_from(list(State)), main=st.none() | idents,
    restarts=st.integers(0, 10 ** 6), exit_code=st.none() | st.integers(-255, 255), signal=opt_text,
    started=st.none() | st.floats(0, 4e9, allow_nan=False), error=opt_text,
    members=st.lists(idents, max_size=4).map(tuple), log=opt_text))
def test_any_provider_record_round_trips_through_json(p):
    data = json.loads(json.dumps(p.to_json(), allow_nan=False))
    assert ProviderRecord.from_json("web", data) == p


def test_a_version_1_provider_kept_its_pid_at_the_top():
    p = ProviderRecord.from_json("web", {"state": "running", "pid": 42, "start": 7})
    assert p.main == ProcId(42, 7) and p.state is State.RUNNING


# --- records: garbage fields -----------------------------------------------------------------------

def test_a_provider_record_tolerates_garbage_fields():
    p = ProviderRecord.from_json("web", {
        "spec": {"name": "web"}, "state": "sleeping", "main": {"pid": "1", "start": 2}, "restarts": "3",
        "exit_code": 1.5, "signal": 9, "started": "yesterday", "error": ["x"], "log": {},
        "members": [[1], [1, 2, 3], ["a", 1], [0, 5], [-1, 2], [True, 1], "77", None, [3, 4]],
    })
    assert p == ProviderRecord("web", None, State.STOPPED, members=(ProcId(3, 4),))


@pytest.mark.parametrize("state", [None, 5, [], {}, ["running"], "RUNNING", ""], ids=repr)
def test_a_provider_record_with_an_unknown_state_is_stopped(state):
    assert ProviderRecord.from_json("web", {"state": state}).state is State.STOPPED


@pytest.mark.parametrize("spec_value", [5, "web", [], {}, {"name": "bad name", "argv": ["x"]},
                                        {"name": "web", "argv": ["x"], "stop_signal": "NOPE"}], ids=repr)
def test_a_provider_record_whose_spec_does_not_parse_has_no_spec(spec_value):
    p = ProviderRecord.from_json("web", {"state": "running", "spec": spec_value})
    assert p.spec is None and p.state is State.RUNNING


def test_a_host_record_tolerates_garbage_fields(host_dir):
    rec = HostRecord.from_json(host_dir, {
        "host": "h1", "owner": [1, 2], "watchdog": {"pid": 0, "start": 1}, "watchdog_alive": "yes",
        "state_dir": 5, "kind": None, "owner_argv": ["python", 5, None, "-c"], "started": True, "fence": [],
        "providers": {"ok": {"state": "running"}, "bad": 5, "worse": ["x"]},
    })
    assert rec == HostRecord("h1", host_dir, owner=None, owner_argv=("python", "-c"),
                             providers={"ok": ProviderRecord("ok", None, State.RUNNING)})


@pytest.mark.parametrize("providers", [None, 5, "x", [], [["web", {}]]], ids=repr)
def test_a_host_record_with_a_garbage_provider_table_has_none(host_dir, providers):
    assert HostRecord.from_json(host_dir, {"host": "h1", "providers": providers}).providers == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
PROVIDER_KEYS = ["spec", "state", "main", "restarts", "exit_code", "signal", "started", "error", "members", "log",
                 "pid", "start"]
HOST_KEYS = ["owner", "watchdog", "watchdog_alive", "state_dir", "kind", "owner_argv", "started", "fence",
             "providers", "version"]


@fuzz
@given(st.dictionaries(st.sampled_from(PROVIDER_KEYS), json_values, max_size=8))
def test_a_provider_record_from_any_json_does_not_raise(d):
    p = ProviderRecord.from_json("web", d)
    assert isinstance(p.state, State)
    assert all(isinstance(m, ProcId) and m.pid > 0 for m in p.members)


@fuzz
@given(st.dictionaries(st.sampled_from(HOST_KEYS), json_values, max_size=8),
       st.dictionaries(st.text(max_size=5), st.dictionaries(st.sampled_from(PROVIDER_KEYS), json_values, max_size=5),
                       max_size=3))
def test_read_of_any_json_host_entry_never_raises(tmp_path, d, providers):
    host = tmp_path / "h"
    host.mkdir(exist_ok=True)
    (host / HOST_FILE).write_text(json.dumps({**d, "host": "h", "providers": providers}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = read(host)
    assert rec is None or (rec.host_id == "h" and set(rec.providers) == set(providers))


@pytest.mark.parametrize("text", [
    '{"version": 2, "host": "h1", "started": 1' + "0" * 400 + "}",
    '{"version": 2, "host": "h1", "providers": {"p": {"state": "running", "started": 1' + "0" * 400 + "}}}",
    json.dumps(entry(providers={"p": {"state": "running", "spec": {"name": "p", "argv": ["x"],
                                                                    "stop_signal": "1" * 5000}}})),
    json.dumps(entry(providers={"p": {"state": "running", "spec": {"name": "p", "argv": ["x"],
                                                                    "ready": "log:a{4294967296}"}}})),
    json.dumps(entry(providers={"p": {"state": "running", "spec": {"name": "p", "argv": ["x"],
                                                                    "ready": "log:" + "(" * 1000 + ")" * 1000}}})),
], ids=["host-started-1e400", "provider-started-1e400", "spec-signal-5000-digits", "spec-regex-overflow",
        "spec-regex-nesting"])
def test_read_never_raises_for_a_garbage_field(host_dir, text):
    (host_dir / HOST_FILE).write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = read(host_dir)
    assert rec is None or rec.host_id == "h1"


# --- host_dirs and read_all -----------------------------------------------------------------------

def test_host_dirs_lists_real_directories_only(tmp_path):
    hosts = tmp_path / "hosts"
    for name in ("b", "a", ".hidden"):
        (hosts / name).mkdir(parents=True)
    (hosts / "file").write_text("")
    (hosts / "link").symlink_to(hosts / "a")
    assert host_dirs(tmp_path) == [hosts / "a", hosts / "b"]


def test_host_dirs_of_a_state_dir_without_hosts_is_empty(tmp_path):
    assert host_dirs(tmp_path) == [] and host_dirs(tmp_path / "missing") == []
    (tmp_path / "hosts").write_text("not a directory")
    assert host_dirs(tmp_path) == []


def test_read_all_skips_the_unreadable_and_reads_the_rest(tmp_path):
    hosts = tmp_path / "hosts"
    (hosts / "good").mkdir(parents=True)
    (hosts / "bad").mkdir()
    (hosts / "empty").mkdir()
    write_atomic(hosts / "good" / HOST_FILE, HostRecord("good", hosts / "good", owner=None).to_json())
    (hosts / "bad" / HOST_FILE).write_text("{")
    with pytest.warns(RuntimeWarning, match="bad"):
        recs = read_all(tmp_path)
    assert [r.host_id for r in recs] == ["good"] and recs[0].dir == Path(hosts / "good")


def test_write_atomic_replaces_the_whole_file(tmp_path):
    p = tmp_path / "x.json"
    write_atomic(p, {"a": "x" * 1000})
    write_atomic(p, {"b": 1})
    assert read_json(p) == {"b": 1} and sorted(os.listdir(tmp_path)) == ["x.json"]


def test_write_atomic_does_not_follow_a_planted_temp_symlink(tmp_path, monkeypatch):
    # The temp name is private (pid, thread, counter); even so it is opened with O_NOFOLLOW.
    target = tmp_path / "victim"
    target.write_text("untouched")
    monkeypatch.setattr(registry, "_seq", iter([0]))
    tmp = tmp_path / f".x.json.{os.getpid()}.{__import__('threading').get_ident()}.0.tmp"
    tmp.symlink_to(target)
    with pytest.raises(OSError):
        write_atomic(tmp_path / "x.json", {"a": 1})
    assert target.read_text() == "untouched"
