"""What "the same spec" means (equality, ``differences``) and the one JSON form (to_wire/from_wire)."""

from __future__ import annotations

import json
import math
import signal
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostconsole.errors import InvalidSpec
from hostconsole.spec import RESTART_POLICIES, ProviderSpec

PY = sys.executable
fuzz = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def build(name="web", command=(PY, "-c", "pass"), **kw) -> ProviderSpec:
    return ProviderSpec.build(name, list(command) if isinstance(command, tuple) else command, **kw)


# --- equality and differences ------------------------------------------------------------------

def test_equal_input_makes_equal_specs(tmp_path):
    (tmp_path / ".env").write_text("E=1\n")
    kw = dict(requires="db,cache", ready="log:^up$", ready_timeout=3, stop_signal="INT", stop_timeout="2",
              restart="on-failure", cwd=str(tmp_path), env={"B": "2", "A": "1"}, env_file=str(tmp_path / ".env"))
    a, b = build(**kw), build(**kw)
    assert a == b and hash(a) == hash(b) and a.differences(b) == []


def test_spellings_of_the_same_input_make_equal_specs():
    a = build(stop_signal="TERM", requires=["a", "b"], env={"A": "1"}, stop_timeout=5)
    b = build(stop_signal=15, requires="a, b", env=["A=1"], stop_timeout="5.0")
    assert a == b and a.differences(b) == []


@pytest.mark.parametrize("change, label", [
    (dict(command=(PY, "-c", "1")), "command"),
    (dict(command="echo hi", shell=True), "command"),
    (dict(ready="port:8000"), "--ready"),
    (dict(env={"A": "2"}), "--env"),
    (dict(stop_signal="INT"), "--stop-signal"),
    (dict(stop_timeout=9), "--stop-timeout"),
    (dict(ready_timeout=9), "--ready-timeout"),
    (dict(restart="always"), "--restart"),
    (dict(oneshot=True), "--oneshot"),
    (dict(requires="db"), "--requires"),
    (dict(cwd="/"), "--cwd"),
    (dict(name="other"), "name"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_different_spec_names_what_differs(change, label, tmp_path):
    base = dict(name="web", command=(PY, "-c", "pass"), env={"A": "1"}, cwd=str(tmp_path))
    a = build(**base)
    b = build(**{**base, **change})
    assert a != b
    assert a.differences(b) == [label] and b.differences(a) == [label]


def test_several_differences_are_all_named_once():
    a = build()
    b = build(command=(PY, "-c", "1"), ready="port:1", env={"X": "1"}, stop_signal="HUP")
    assert a.differences(b) == ["command", "--env", "--ready", "--stop-signal"]


def test_a_changed_env_file_whose_values_changed_is_named_as_env(tmp_path):
    (tmp_path / "a.env").write_text("A=1\n")
    (tmp_path / "b.env").write_text("A=2\n")
    a = build(env_file=str(tmp_path / "a.env"))
    b = build(env_file=str(tmp_path / "b.env"))
    assert a.differences(b) == ["--env"]


def test_a_moved_env_file_with_the_same_values_is_named_as_env_file(tmp_path):
    (tmp_path / "a.env").write_text("A=1\n")
    (tmp_path / "b.env").write_text("A=1\n")
    a = build(env_file=str(tmp_path / "a.env"))
    b = build(env_file=str(tmp_path / "b.env"))
    assert a.differences(b) == ["--env-file"]


# --- the wire form: valid specs -------------------------------------------------------------------

ALNUM = "abcxyzABCXYZ0189"
names = st.builds(lambda a, b: a + b, st.sampled_from(ALNUM), st.text(ALNUM + "._-", max_size=63))
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12)
paths = texts.map(lambda t: "/" + t)
env_keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0="), min_size=1,
                   max_size=10).filter(lambda k: not k.startswith("HOSTCONSOLE_"))
seconds = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False) | st.integers(0, 10 ** 6)
readies = st.one_of(
    st.sampled_from(["none", "port:8000", "http://127.0.0.1:8000/health", "https://localhost/", "log:^ready$",
                     "cmd:curl -sf localhost", "http://example.com:8080/x?y=1", "log:(?i)listening on \\d+"]),
    st.integers(1, 65535).map(lambda p: f"port:{p}"),
    st.from_regex(r"[a-z ]{1,10}", fullmatch=True).map(lambda r: "log:" + r).filter(lambda r: r.strip() != "log:"),
)


@st.composite
def wire_dicts(draw):
    name = draw(names)
    return {
        "name": name,
        "argv": draw(st.lists(texts, min_size=1, max_size=4).filter(lambda a: a[0] != "")),
        "shell": draw(st.booleans()),
        "env": draw(st.dictionaries(env_keys, texts, max_size=4)),
        "env_file": draw(st.none() | paths),
        "cwd": draw(paths),
        "requires": draw(st.lists(names.filter(lambda n: n != name), unique=True, max_size=4)),
        "ready": draw(readies),
        "ready_timeout": draw(seconds),
        "stop_signal": int(draw(st.sampled_from(sorted(signal.Signals)))),
        "stop_timeout": draw(seconds),
        # (A oneshot that restarts "always" is no valid spec: build and from_wire refuse it.)
        **draw(st.sampled_from([{"restart": r, "oneshot": o} for r in RESTART_POLICIES for o in (False, True)
                                if not (o and r == "always")])),
    }


@fuzz
@given(wire_dicts())
def test_from_wire_of_to_wire_is_the_same_spec(d):
    s = ProviderSpec.from_wire(d)
    w = s.to_wire()
    assert ProviderSpec.from_wire(w) == s
    # ... also once through JSON text, which is how the registry and the watchdog carry it.
    text = json.dumps(w, allow_nan=False)
    back = ProviderSpec.from_wire(json.loads(text))
    assert back == s and back.differences(s) == []
    assert back.to_wire() == w


@fuzz
@given(wire_dicts())
def test_the_wire_form_is_what_the_spec_says(d):
    s = ProviderSpec.from_wire(d)
    w = s.to_wire()
    assert w["name"] == d["name"] and w["argv"] == d["argv"] and w["env"] == d["env"]
    assert w["requires"] == d["requires"] and w["stop_signal"] == d["stop_signal"]
    assert w["restart"] == d["restart"] and w["ready_timeout"] == float(d["ready_timeout"])


def test_built_specs_survive_the_wire(tmp_path):
    (tmp_path / ".env").write_text("E='from file'\n")
    specs = [
        build(),
        build(command="echo hi; sleep 1", shell=True, oneshot=True, restart="on-failure"),
        build(requires="a,b", ready="http://127.0.0.1:8000/health", ready_timeout=0, stop_signal="QUIT",
              stop_timeout=0.25, restart="always", cwd=str(tmp_path), env=["A=1", "B=é ü"],
              env_file=str(tmp_path / ".env")),
        build(ready="log:started (pid \\d+)"),
        build(ready="cmd:test -e /tmp/x"),
    ]
    for s in specs:
        assert ProviderSpec.from_wire(json.loads(json.dumps(s.to_wire()))) == s


def test_from_wire_fills_in_the_defaults_of_a_minimal_dict():
    s = ProviderSpec.from_wire({"name": "web", "argv": ["x"]})
    assert (s.cwd, s.env, s.env_file, s.requires, s.ready.kind, s.ready_timeout, s.stop_signal, s.stop_timeout,
            s.restart, s.oneshot, s.shell) == ("/", (), None, (), "none", 30.0, int(signal.SIGTERM), 5.0, "no",
                                               False, False)


# --- the wire form: malformed input ---------------------------------------------------------------

def assert_refused(d):
    with pytest.raises(InvalidSpec) as ei:
        ProviderSpec.from_wire(d)
    msg = str(ei.value)
    assert msg.strip() and "\n" not in msg
    return msg


GOOD = {"name": "web", "argv": ["x"]}


@pytest.mark.parametrize("d", [None, 5, "web", [], ["web"], b"{}", 1.5, True], ids=repr)
def test_from_wire_of_a_non_object_is_refused(d):
    assert "object" in assert_refused(d)


@pytest.mark.parametrize("d, words", [
    ({}, "needs 'name'"),
    ({"name": "web"}, "needs 'argv'"),
    ({**GOOD, "name": "bad name"}, "provider name"),
    ({**GOOD, "name": None}, "provider name"),
    ({**GOOD, "argv": []}, "argv"),
    ({**GOOD, "argv": "x"}, "argv"),
    ({**GOOD, "argv": [1]}, "argv"),
    ({**GOOD, "argv": None}, "argv"),
    ({**GOOD, "env": ["A"]}, "NAME=VALUE"),
    ({**GOOD, "env": {"A": 1}}, "string"),
    ({**GOOD, "env": {"HOSTCONSOLE_HOST": "x"}}, "set by the host"),
    ({**GOOD, "env": 5}, "mapping"),
    ({**GOOD, "env": "A=1"}, "mapping"),
    ({**GOOD, "cwd": 5}, "cwd"),
    ({**GOOD, "cwd": ["/"]}, "cwd"),
    ({**GOOD, "env_file": 5}, "env_file"),
    ({**GOOD, "env_file": ""}, "env_file"),
    ({**GOOD, "shell": "yes"}, "booleans"),
    ({**GOOD, "oneshot": 1}, "booleans"),
    ({**GOOD, "restart": "sometimes"}, "restart policy"),
    ({**GOOD, "restart": None}, "restart policy"),
    ({**GOOD, "restart": ["no"]}, "restart policy"),
    ({**GOOD, "requires": "web"}, "itself"),
    ({**GOOD, "requires": ["a b"]}, "dependency name"),
    ({**GOOD, "requires": 5}, "requires must be"),
    ({**GOOD, "requires": {"a": 1}}, "requires must be"),
    ({**GOOD, "ready": "port:abc"}, "ready check"),
    ({**GOOD, "ready": 8000}, "ready check"),
    ({**GOOD, "ready_timeout": -1}, "ready timeout"),
    ({**GOOD, "ready_timeout": None}, "ready timeout"),
    ({**GOOD, "stop_timeout": "soon"}, "stop timeout"),
    ({**GOOD, "stop_timeout": True}, "stop timeout"),
    ({**GOOD, "stop_signal": 999}, "unknown signal"),
    ({**GOOD, "stop_signal": None}, "unknown signal"),
    ({**GOOD, "stop_signal": [15]}, "unknown signal"),
], ids=repr)
def test_from_wire_of_a_malformed_dict_is_refused(d, words):
    assert words in assert_refused(d)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                             max_size=3),
                           max_leaves=8)
WIRE_KEYS = ["name", "argv", "shell", "env", "env_file", "cwd", "requires", "ready", "ready_timeout", "stop_signal",
             "stop_timeout", "restart", "oneshot"]


def spec_or_invalid(d):
    try:
        s = ProviderSpec.from_wire(d)
    except InvalidSpec as e:
        assert "\n" not in str(e)
        return None
    assert isinstance(s, ProviderSpec)
    # Whatever it accepted is a spec that survives its own wire form.
    assert ProviderSpec.from_wire(s.to_wire()) == s
    return s


@fuzz
@given(json_values)
def test_from_wire_of_any_json_value_is_a_spec_or_invalid_spec(d):
    spec_or_invalid(d)


@fuzz
@given(st.dictionaries(st.sampled_from(WIRE_KEYS + ["extra"]), json_values, max_size=8))
def test_from_wire_of_any_dict_of_wire_keys_is_a_spec_or_invalid_spec(d):
    spec_or_invalid(d)


@fuzz
@given(wire_dicts(), st.sampled_from(WIRE_KEYS), json_values)
def test_from_wire_of_a_valid_dict_with_one_value_replaced_is_a_spec_or_invalid_spec(d, key, value):
    spec_or_invalid({**d, key: value})


@fuzz
@given(wire_dicts(), st.sampled_from(WIRE_KEYS))
def test_from_wire_of_a_valid_dict_missing_a_key_is_a_spec_or_invalid_spec(d, key):
    d = dict(d)
    del d[key]
    s = spec_or_invalid(d)
    if key in ("name", "argv"):
        assert s is None


@pytest.mark.parametrize("d", [
    {**GOOD, "stop_signal": "1" * 5000},
    {**GOOD, "ready": "port:" + "1" * 5000},
    {**GOOD, "ready": "log:a{4294967296}"},
    {**GOOD, "ready": "log:" + "(" * 1000 + ")" * 1000},
], ids=["signal-5000-digits", "port-5000-digits", "log-regex-overflow", "log-regex-nested-1000"])
def test_from_wire_never_raises_anything_but_invalid_spec_for_pathological_values(d):
    assert_refused(d)


def test_from_wire_refuses_a_nul_byte_in_argv():
    assert_refused({**GOOD, "argv": ["x", "a\0b"]})


def test_wire_timeouts_are_finite():
    for bad in (math.inf, math.nan, -0.5):
        assert_refused({**GOOD, "stop_timeout": bad})
        assert_refused({**GOOD, "ready_timeout": bad})
