"""ProviderSpec.build: what user input is refused (one-line InvalidSpec) and what it makes.

Pure: resolving an executable looks at the file system (``shutil.which``), nothing is run.
"""

from __future__ import annotations

import os
import re
import signal
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostconsole import _ready
from hostconsole.errors import ExecutableNotFound, HostconsoleError, InvalidSpec
from hostconsole.spec import NAME_RE, OPTIONS, ProviderSpec, check_name, check_seconds, parse_signal

PY = sys.executable
fuzz = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def refused(name="web", command=(PY,), *, exc=InvalidSpec, **kw) -> str:
    """Build, expect ``exc``; return its message after checking it is one non-empty line."""
    with pytest.raises(exc) as ei:
        ProviderSpec.build(name, list(command) if isinstance(command, tuple) else command, **kw)
    msg = str(ei.value)
    assert isinstance(ei.value, HostconsoleError)
    assert msg.strip() and "\n" not in msg and "\r" not in msg, msg
    return msg


def build(name="web", command=(PY,), **kw) -> ProviderSpec:
    return ProviderSpec.build(name, list(command) if isinstance(command, tuple) else command, **kw)


def test_invalid_spec_is_a_hostconsole_error_and_a_value_error():
    assert issubclass(InvalidSpec, HostconsoleError)
    assert issubclass(InvalidSpec, ValueError)
    assert issubclass(ExecutableNotFound, InvalidSpec)


# --- names ----------------------------------------------------------------------------------

BAD_NAMES = ["", "-web", ".web", "_web", "web app", "web/app", "a" * 65, "wéb", "web\n", "web:1", "web\0",
             "ｗｅｂ", None, 5, b"web", ["web"], True]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_name_outside_the_name_rule_is_refused(name):
    assert "name" in refused(name=name)


@pytest.mark.parametrize("name", ["a", "A", "0", "a" * 64, "web-1.2_x", "1web", "Z.z-_"])
def test_a_name_inside_the_name_rule_is_accepted(name):
    assert build(name=name).name == name


@fuzz
@given(st.text(max_size=70))
def test_check_name_accepts_exactly_the_name_rule(text):
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text) is not None
    if ok:
        assert check_name(text) == text
    else:
        with pytest.raises(InvalidSpec):
            check_name(text)


@fuzz
@given(st.from_regex(NAME_RE.pattern.replace(r"\Z", ""), fullmatch=True))
def test_every_name_the_rule_generates_is_accepted(name):
    assert check_name(name) == name


# --- commands -------------------------------------------------------------------------------

@pytest.mark.parametrize("command, words", [
    ("", "missing command"),
    ("   ", "missing command"),
    ('echo "unbalanced', "cannot split"),
    ("echo 'unbalanced", "cannot split"),
    ([], "missing command"),
    ([""], "missing command"),
    ([PY, 5], "string"),
    ([PY, None], "string"),
    ([PY, b"x"], "string"),
    ([PY, "a\0b"], "NUL"),
    (None, "command must be"),
    (5, "command must be"),
    (b"echo hi", "command must be"),
    ({"argv": [PY]}, "command must be"),
], ids=repr)
def test_a_malformed_command_is_refused(command, words):
    assert words in refused(command=command)


def test_shell_true_with_an_argv_list_is_refused():
    assert "shell=True" in refused(command=[PY, "-c", "pass"], shell=True)


@pytest.mark.parametrize("script", ["", "   ", " \n\t"])
def test_shell_true_with_an_empty_script_is_refused(script):
    assert "empty" in refused(command=script, shell=True)


@pytest.mark.parametrize("shell", ["yes", 1, None, "True"], ids=repr)
def test_shell_must_be_a_bool(shell):
    assert "shell" in refused(command="echo hi", shell=shell)


def test_a_missing_executable_path_is_refused(tmp_path):
    msg = refused(command=[str(tmp_path / "nope")], exc=ExecutableNotFound)
    assert "does not exist" in msg


def test_an_executable_not_on_path_is_refused():
    assert "not found on PATH" in refused(command="no-such-program-hostconsole-xyz --flag", exc=ExecutableNotFound)


def test_a_directory_is_not_an_executable(tmp_path):
    assert "not an executable" in refused(command=[str(tmp_path)], exc=ExecutableNotFound)


def test_a_file_without_exec_permission_is_not_an_executable(tmp_path):
    f = tmp_path / "prog"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o644)
    if os.access(f, os.X_OK):  # root may execute anything with an x bit only; 0o644 has none
        pytest.skip("this user can execute files without an x bit")
    assert "not an executable" in refused(command=[str(f)], exc=ExecutableNotFound)


def test_a_relative_executable_is_found_against_the_spec_cwd(tmp_path):
    (tmp_path / "bin").mkdir()
    prog = tmp_path / "bin" / "prog"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    s = build(command=["./bin/prog", "x"], cwd=str(tmp_path))
    assert s.argv == ("./bin/prog", "x")
    refused(command=["./bin/prog"], cwd=str(tmp_path / "bin"), exc=ExecutableNotFound)


def test_the_path_in_env_is_where_the_executable_is_looked_for(tmp_path):
    prog = tmp_path / "only-here-prog"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    refused(command="only-here-prog", exc=ExecutableNotFound)
    assert build(command="only-here-prog", env={"PATH": str(tmp_path)}).argv == ("only-here-prog",)


def test_a_string_command_is_split_like_a_shell_line():
    assert build(command=f"{PY} -c 'print(1)' \"a b\"").argv == (PY, "-c", "print(1)", "a b")


def test_a_shell_command_runs_its_script_with_a_resolved_shell():
    s = build(command="echo one\necho two", shell=True)
    assert s.shell and os.path.isabs(s.argv[0]) and os.path.basename(s.argv[0]) in ("bash", "sh")
    assert s.argv[1:] == ("-c", "echo one\necho two")
    assert s.script == "echo one\necho two" and s.command_line() == "echo one\necho two"


@pytest.mark.parametrize("command, shell", [(f"{PY} a\0b", False), ("echo a\0b", True)], ids=["split", "shell"])
def test_a_nul_byte_in_a_string_command_is_refused(command, shell):
    refused(command=command, shell=shell)


# --- requires -------------------------------------------------------------------------------

@pytest.mark.parametrize("requires, words", [
    ("web", "itself"),
    (["db", "web"], "itself"),
    ("db,web", "itself"),
    ("bad name", "dependency name"),
    (["db", "bad/name"], "dependency name"),
    (5, "requires must be"),
    (1.5, "requires must be"),
    (True, "requires must be"),
    (b"db", "requires must be"),
    ({"db": True}, "requires must be"),
    ([None], "dependency name"),
    ([5], "dependency name"),
    ([["db"]], "dependency name"),
], ids=repr)
def test_bad_requires_are_refused(requires, words):
    assert words in refused(name="web", requires=requires)


@pytest.mark.parametrize("requires, expected", [
    (None, ()),
    ([], ()),
    ("", ()),
    ("db", ("db",)),
    ("a,b", ("a", "b")),
    (" a , b ,", ("a", "b")),
    (["a,b", "c"], ("a", "b", "c")),
    (("c", "a"), ("c", "a")),
    (["a", "a", "b,a"], ("a", "b")),
    (iter(["x", "y"]), ("x", "y")),
], ids=repr)
def test_requires_accepts_comma_lists_and_lists_and_dedupes_in_order(requires, expected):
    assert build(requires=requires).requires == expected


# --- timeouts -------------------------------------------------------------------------------

BAD_SECONDS = [-1, -0.001, float("nan"), float("inf"), float("-inf"), "soon", "", "1e999", True, False, None,
               [], {}, 10 ** 400, 1j]


@pytest.mark.parametrize("key", ["ready_timeout", "stop_timeout"])
@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_a_timeout_that_is_not_a_non_negative_finite_number_is_refused(key, value):
    assert "timeout" in refused(**{key: value})


@pytest.mark.parametrize("value, expected", [(0, 0.0), (0.0, 0.0), (2, 2.0), ("1.5", 1.5), (" 3 ", 3.0), (1e9, 1e9)])
def test_a_timeout_may_be_any_non_negative_number(value, expected):
    s = build(ready_timeout=value, stop_timeout=value)
    assert s.ready_timeout == expected and s.stop_timeout == expected
    assert isinstance(s.stop_timeout, float)


@fuzz
@given(st.one_of(st.floats(), st.integers(), st.text(max_size=10), st.booleans(), st.none()))
def test_check_seconds_gives_a_finite_non_negative_float_or_invalid_spec(value):
    try:
        v = check_seconds("stop timeout", value)
    except InvalidSpec as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(v, float) and v >= 0 and v == v and v != float("inf")
        assert not isinstance(value, bool)


# --- signals --------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", ["NOPE", "SIGNOPE", "SIG", "", "  ", 999, "999", 0, "0", -1, 15.0, None, True,
                                 "²", "SIG_DFL", ["TERM"], b"TERM"], ids=repr)
def test_an_unknown_stop_signal_is_refused(sig):
    assert "unknown signal" in refused(stop_signal=sig)


@pytest.mark.parametrize("sig, expected", [
    ("TERM", signal.SIGTERM), ("term", signal.SIGTERM), ("SIGTERM", signal.SIGTERM), ("sigterm", signal.SIGTERM),
    ("15", signal.SIGTERM), (15, signal.SIGTERM), (" int ", signal.SIGINT), (signal.SIGHUP, signal.SIGHUP),
    ("usr1", signal.SIGUSR1), ("KILL", signal.SIGKILL), ("2", signal.SIGINT),
], ids=repr)
def test_a_stop_signal_may_be_named_or_numbered(sig, expected):
    assert build(stop_signal=sig).stop_signal == int(expected)
    assert parse_signal(sig) == int(expected)


def test_a_stop_signal_of_thousands_of_digits_is_invalid_spec():
    with pytest.raises(InvalidSpec):
        parse_signal("1" * 5000)


# --- restart policy and oneshot ---------------------------------------------------------------

@pytest.mark.parametrize("policy", ["sometimes", "Always", "on_failure", "", None, 1, True, ["no"]], ids=repr)
def test_an_unknown_restart_policy_is_refused(policy):
    assert "restart policy" in refused(restart=policy)


@pytest.mark.parametrize("policy", ["no", "on-failure", "always"])
def test_each_restart_policy_is_accepted(policy):
    assert build(restart=policy).restart == policy


def test_a_oneshot_cannot_restart_always():
    assert "oneshot" in refused(oneshot=True, restart="always")


def test_a_oneshot_may_restart_on_failure():
    s = build(oneshot=True, restart="on-failure")
    assert s.oneshot and s.restart == "on-failure" and s.kind == "oneshot"


@pytest.mark.parametrize("oneshot", ["yes", 1, None], ids=repr)
def test_oneshot_must_be_a_bool(oneshot):
    assert "oneshot" in refused(oneshot=oneshot)


def test_an_unknown_option_is_refused_and_the_known_ones_named():
    msg = refused(colour="red")
    assert "'colour'" in msg and "stop_timeout" in msg


# --- ready ----------------------------------------------------------------------------------

def test_a_malformed_ready_check_is_refused():
    assert "ready check" in refused(ready="port:abc")


def test_the_ready_check_is_parsed():
    assert build(ready="port:8000").ready == _ready.parse("port:8000")


# --- cwd ------------------------------------------------------------------------------------

def test_a_missing_working_directory_is_refused(tmp_path):
    assert "does not exist" in refused(cwd=str(tmp_path / "nope"))


def test_a_file_is_not_a_working_directory(tmp_path):
    (tmp_path / "f").write_text("")
    assert "does not exist" in refused(cwd=str(tmp_path / "f"))


@pytest.mark.parametrize("cwd", [5, b"/tmp", "", "/tmp/a\0b", ["/tmp"]], ids=repr)
def test_a_cwd_that_is_not_a_path_string_is_refused(cwd):
    assert "cwd" in refused(cwd=cwd)


@pytest.mark.parametrize("base", [5, b"/tmp", ""], ids=repr)
def test_a_base_dir_that_is_not_a_path_string_is_refused(base):
    assert "base directory" in refused(base_dir=base)


def test_a_relative_cwd_is_taken_against_base_dir(tmp_path):
    (tmp_path / "web").mkdir()
    assert build(cwd="web", base_dir=str(tmp_path)).cwd == str(tmp_path / "web")
    assert build(cwd="web/..", base_dir=tmp_path).cwd == str(tmp_path)


def test_without_base_dir_a_relative_cwd_is_taken_against_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "web").mkdir()
    monkeypatch.chdir(tmp_path)
    assert build(cwd="web").cwd == str(tmp_path / "web")
    assert build().cwd == str(tmp_path)


def test_an_absolute_cwd_ignores_base_dir(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert build(cwd=str(tmp_path / "b"), base_dir=str(tmp_path / "a")).cwd == str(tmp_path / "b")


def test_a_cwd_may_start_with_a_tilde(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build(cwd="~/proj").cwd == str(tmp_path / "proj")


def test_a_cwd_may_be_a_path_object(tmp_path):
    assert build(cwd=tmp_path).cwd == str(tmp_path)


# --- env ------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, words", [
    ({"": "x"}, "name"),
    ({"A=B": "x"}, "name"),
    ({"A\0": "x"}, "name"),
    ({5: "x"}, "name"),
    ({"A": 5}, "string"),
    ({"A": None}, "string"),
    ({"A": b"x"}, "string"),
    ({"A": "a\0b"}, "NUL"),
    ({"HOSTCONSOLE_HOST": "x"}, "set by the host"),
    ({"HOSTCONSOLE_ANYTHING": "x"}, "set by the host"),
    (["HOSTCONSOLE_PROVIDER=x"], "set by the host"),
    (["A"], "NAME=VALUE"),
    (["=x"], "NAME=VALUE"),
    ([5], "NAME=VALUE"),
    (["A=1", None], "NAME=VALUE"),
    ("A=1", "mapping"),
    (5, "mapping"),
], ids=repr)
def test_bad_env_is_refused(env, words):
    assert words in refused(env=env)


def test_env_may_be_given_as_a_list_of_k_equals_v():
    s = build(env=["A=1", "B=x=y", "C="])
    assert s.env_dict == {"A": "1", "B": "x=y", "C": ""}


def test_env_is_kept_sorted_so_order_does_not_make_a_different_spec():
    a = build(env={"B": "2", "A": "1"})
    b = build(env=["A=1", "B=2"])
    assert a.env == (("A", "1"), ("B", "2")) and a == b


def test_the_later_of_two_list_entries_wins():
    assert build(env=["A=1", "A=2"]).env_dict == {"A": "2"}


# --- env_file through build (the parser itself: test_envfile.py) -----------------------------

def test_a_missing_env_file_is_refused(tmp_path):
    assert "does not exist" in refused(env_file=str(tmp_path / "nope.env"))


@pytest.mark.parametrize("env_file", [5, b"x.env", ""], ids=repr)
def test_an_env_file_that_is_not_a_path_string_is_refused(env_file):
    assert "env_file" in refused(env_file=env_file)


def test_a_relative_env_file_is_taken_against_base_dir(tmp_path):
    (tmp_path / ".env").write_text("A=1\n")
    s = build(env_file=".env", base_dir=str(tmp_path))
    assert s.env_file == str(tmp_path / ".env") and s.env_dict == {"A": "1"}


def test_a_relative_env_file_is_taken_against_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("A=1\n")
    monkeypatch.chdir(tmp_path)
    assert build(env_file=".env").env_file == str(tmp_path / ".env")


def test_env_file_values_lose_to_env(tmp_path):
    (tmp_path / ".env").write_text("A=file\nB=file\n")
    s = build(env_file=str(tmp_path / ".env"), env={"A": "flag"})
    assert s.env_dict == {"A": "flag", "B": "file"}


def test_a_bad_env_file_line_is_refused_through_build(tmp_path):
    (tmp_path / ".env").write_text("A=1\nnot a line\n")
    assert "line 2" in refused(env_file=str(tmp_path / ".env"))


# --- the good case ----------------------------------------------------------------------------

def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = build(name="web", command=(PY, "-m", "http.server"))
    assert s.name == "web" and s.argv == (PY, "-m", "http.server") and not s.shell
    assert s.env == () and s.env_file is None and s.cwd == str(tmp_path)
    assert s.requires == () and s.ready == _ready.NONE and s.ready_timeout == 30.0
    assert s.stop_signal == int(signal.SIGTERM) and s.stop_timeout == 5.0
    assert s.restart == "no" and s.oneshot is False and s.kind == "provider"
    assert s.script is None and s.command_line() == f"{PY} -m http.server"


def test_every_option_is_a_keyword_build_accepts(tmp_path):
    keys = {o.key for o in OPTIONS}
    assert keys == {"requires", "ready", "ready_timeout", "stop_signal", "stop_timeout", "restart", "oneshot",
                    "cwd", "env", "env_file"}
    (tmp_path / ".env").write_text("E=1\n")
    s = build(name="app", requires="db", ready="log:up", ready_timeout=1, stop_signal="INT", stop_timeout=2,
              restart="on-failure", oneshot=True, cwd=str(tmp_path), env={"A": "1"}, env_file=".env",
              base_dir=str(tmp_path))
    assert (s.requires, s.ready.text, s.ready_timeout, s.stop_signal, s.stop_timeout, s.restart, s.oneshot) == (
        ("db",), "log:up", 1.0, int(signal.SIGINT), 2.0, "on-failure", True)
    assert s.env_dict == {"A": "1", "E": "1"}


def test_each_option_has_a_flag_and_help():
    for o in OPTIONS:
        assert o.flag == "--" + o.key.replace("_", "-") and o.help and o.kind in ("value", "flag", "list")


# --- messages that quote the user's value (found by tests/test_fuzz_inputs.py) -------------


def _deep(n):
    v = []
    for _ in range(n):
        v = [v]
    return v


@pytest.mark.parametrize("value", [10 ** 5000, -10 ** 5000, _deep(50000)], ids=["huge", "negative huge", "deep"])
def test_a_value_whose_repr_fails_is_still_quoted_in_one_line(value):
    from hostconsole.errors import shown

    text = shown(value)
    assert text and "\n" not in text and len(text) < 100
    assert "invalid provider name" in refused(name=value)
    assert "timeout" in refused(stop_timeout=value)


def test_a_line_break_in_a_path_or_a_name_keeps_the_message_on_one_line(tmp_path):
    assert "env file" in refused(env_file=str(tmp_path / "new\nline.env"))
    assert "environment variable" in refused(env={"A\nB": 1})
    assert "set by the host" in refused(env={"HOSTCONSOLE_\nX": "1"})


def test_a_command_longer_than_one_kernel_argument_is_refused_before_it_is_split():
    from hostconsole.spec import MAX_COMMAND_BYTES

    assert "longer than" in refused(command="a" * (MAX_COMMAND_BYTES + 1))  # (shlex would take seconds)
    assert "longer than" in refused(command="é" * (MAX_COMMAND_BYTES // 2 + 1), shell=True)
