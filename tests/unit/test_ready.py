"""_ready.parse: every readiness spec is parsed, or refused with one-line InvalidSpec (never checked here)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostconsole import _ready
from hostconsole.errors import InvalidSpec

fuzz = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("text", [None, "none", "NONE", " None "], ids=repr)
def test_none_means_no_check(text):
    assert _ready.parse(text) is _ready.NONE


@pytest.mark.parametrize("text, port", [
    ("port:8000", 8000), ("PORT:1", 1), ("port:65535", 65535), ("port: 80 ", 80), ("  port:0443", 443),
])
def test_port_forms(text, port):
    r = _ready.parse(text)
    assert isinstance(r, _ready.PortReady) and r.kind == "port" and r.port == port and r.text == text.strip()


@pytest.mark.parametrize("text, url, port", [
    ("http://127.0.0.1:8000/health", "http://127.0.0.1:8000/health", 8000),
    ("http://localhost/", "http://localhost/", 80),
    ("https://localhost/", "https://localhost/", 443),
    ("HTTP://[::1]:9000/x?y=1", "HTTP://[::1]:9000/x?y=1", 9000),
    ("http://0.0.0.0:81", "http://0.0.0.0:81", 81),
    ("http://example.com:8080/", "http://example.com:8080/", None),  # not ours to own: no port
])
def test_http_forms(text, url, port):
    r = _ready.parse(text)
    assert isinstance(r, _ready.HttpReady) and r.kind == "http" and r.url == url and r.port == port


@pytest.mark.parametrize("text, pattern", [
    ("log:ready", "ready"), ("log:^Listening on \\d+$", "^Listening on \\d+$"), ("LOG:a:b", "a:b"),
    ("log: spaced", " spaced"),
])
def test_log_forms(text, pattern):
    r = _ready.parse(text)
    assert isinstance(r, _ready.LogReady) and r.kind == "log" and r.regex.pattern == pattern


@pytest.mark.parametrize("text, command", [
    ("cmd:true", "true"), ("cmd:curl -sf http://x/ | grep ok", "curl -sf http://x/ | grep ok"), ("CMD: ls", " ls"),
])
def test_cmd_forms(text, command):
    r = _ready.parse(text)
    assert isinstance(r, _ready.CmdReady) and r.kind == "cmd" and r.command == command


def test_a_ready_spec_object_passes_through():
    r = _ready.parse("port:8000")
    assert _ready.parse(r) is r


def test_ready_specs_are_equal_by_kind_and_text():
    assert _ready.parse("port:8000") == _ready.parse("port:8000")
    assert hash(_ready.parse("log:x")) == hash(_ready.parse("log:x"))
    assert _ready.parse("port:8000") != _ready.parse("port: 8000")
    assert _ready.parse("port:8000") != "port:8000"


@pytest.mark.parametrize("text, words", [
    ("port:abc", "1 to 65535"), ("port:0", "1 to 65535"), ("port:70000", "1 to 65535"), ("port:65536", "1 to 65535"),
    ("port:²", "1 to 65535"), ("port:٣", "1 to 65535"), ("port:-1", "1 to 65535"), ("port:", "1 to 65535"),
    ("port:80.0", "1 to 65535"), ("port:8 0", "1 to 65535"),
    ("log:(", "regular expression"), ("log:[", "regular expression"), ("log:*", "regular expression"),
    ("log:", "needs a regular expression"), ("log:   ", "needs a regular expression"),
    ("cmd:", "needs a shell command"), ("cmd:   ", "needs a shell command"),
    ("http://", "no host"), ("https://", "no host"), ("http:", "no host"), ("http:/path", "no host"),
    ("http://[::1", "IPv6"), ("http://host:99999/", "port"), ("http://host:abc/", "port"),
    ("http://a\u2100b/", "NFKC"),
    ("tcp:80", "use port:N"), ("8000", "use port:N"), ("port", "use port:N"), ("log", "use port:N"),
    ("", "use port:N"), ("   ", "use port:N"), ("nothing", "use port:N"), ("none:", "use port:N"),
    ("ftp://localhost/", "use port:N"),
], ids=repr)
def test_a_malformed_ready_spec_is_refused(text, words):
    with pytest.raises(InvalidSpec) as ei:
        _ready.parse(text)
    msg = str(ei.value)
    assert words in msg and "\n" not in msg and msg.startswith("malformed ready check")


@pytest.mark.parametrize("value", [8000, 0, 1.5, True, b"port:8000", ["port:8000"], {"port": 8000}, object()],
                         ids=repr)
def test_a_ready_spec_that_is_not_a_string_is_refused(value):
    with pytest.raises(InvalidSpec, match="must be a string"):
        _ready.parse(value)


def parse_or_invalid(text):
    try:
        r = _ready.parse(text)
    except InvalidSpec as e:
        assert "\n" not in str(e)
        return None
    assert isinstance(r, _ready.ReadySpec)
    # The text is the whole of its identity: parsing it again gives the same check (the wire form).
    assert _ready.parse(r.text) == r and r.kind in ("none", "port", "http", "log", "cmd")
    return r


@fuzz
@given(st.text(max_size=30))
def test_any_text_parses_or_is_invalid_spec(text):
    parse_or_invalid(text)


@fuzz
@given(st.sampled_from(["port:", "PORT:", "http://", "https://", "http:", "log:", "cmd:", "none", "tcp:", ""]),
       st.text(max_size=30))
def test_any_text_after_a_known_prefix_parses_or_is_invalid_spec(prefix, rest):
    parse_or_invalid(prefix + rest)


@fuzz
@given(st.sampled_from(["http://", "https://"]),
       st.text(st.sampled_from("[]:@/?#%.1aZ\u2100\uff03 \t"), max_size=16))
def test_urls_built_from_awkward_characters_parse_or_are_invalid_spec(prefix, rest):
    parse_or_invalid(prefix + rest)


@fuzz
@given(st.integers(-10 ** 6, 10 ** 6))
def test_a_port_number_is_accepted_exactly_from_1_to_65535(n):
    r = parse_or_invalid(f"port:{n}")
    assert (r is not None) == (1 <= n <= 65535)
    if r is not None:
        assert r.port == n


@pytest.mark.parametrize("text", [
    "port:" + "1" * 5000,
    "log:a{4294967296}",
    "log:a{1,4294967296}",
    "log:a{" + "1" * 5000 + "}",
    "log:" + "(" * 1000 + ")" * 1000,
], ids=["port-5000-digits", "log-repeat-overflow", "log-repeat-range-overflow", "log-repeat-5000-digits",
        "log-nested-1000"])
def test_pathological_port_and_log_specs_are_invalid_spec(text):
    with pytest.raises(InvalidSpec):
        _ready.parse(text)


@pytest.mark.parametrize("text", ["http://127.0.0.1:0/", "https://localhost:0/health"])
def test_an_http_url_with_port_0_is_refused(text):
    with pytest.raises(InvalidSpec):
        _ready.parse(text)
