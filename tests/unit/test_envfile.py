"""parse_env_file: the dotenv subset hostconsole reads (``--env-file``), on tmp_path files."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostconsole.errors import InvalidSpec
from hostconsole.spec import ENV_FILE_MAX, parse_env_file

fuzz = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture
def envfile(tmp_path):
    """write(text or bytes) -> parsed dict; refused(text or bytes) -> the one-line message."""

    class EnvFile:
        path = tmp_path / "test.env"

        def write(self, content):
            if isinstance(content, str):
                self.path.write_bytes(content.encode())
            else:
                self.path.write_bytes(content)
            return str(self.path)

        def parse(self, content):
            return parse_env_file(self.write(content))

        def refused(self, content):
            with pytest.raises(InvalidSpec) as ei:
                self.parse(content)
            msg = str(ei.value)
            assert msg.strip() and "\n" not in msg and "\r" not in msg, msg
            assert str(self.path) in msg
            return msg

    return EnvFile()


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("\n\n   \n", {}),
    ("A=1\n", {"A": "1"}),
    ("A=1", {"A": "1"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("A=\n", {"A": ""}),
    ("  A = 1  \n", {"A": "1"}),
    ("A==1\n", {"A": "=1"}),
    ("A=a=b\n", {"A": "a=b"}),
    ("_under_9=x\n", {"_under_9": "x"}),
    ("A=1\nA=2\n", {"A": "2"}),
], ids=repr)
def test_plain_lines_are_name_equals_value(envfile, text, expected):
    assert envfile.parse(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("# a comment\nA=1\n", {"A": "1"}),
    ("   # indented comment\nA=1\n", {"A": "1"}),
    ("A=1 # trailing comment\n", {"A": "1"}),
    ("A=1\t# tab before the comment\n", {"A": "1"}),
    ("A=1#not-a-comment\n", {"A": "1#not-a-comment"}),
    ("A=#not-a-comment\n", {"A": "#not-a-comment"}),
    ('A="x # inside quotes"\n', {"A": "x # inside quotes"}),
    ('A="x" # after quotes\n', {"A": "x"}),
    ("A='x' # after quotes\n", {"A": "x"}),
], ids=repr)
def test_comments_are_whole_lines_or_after_whitespace(envfile, text, expected):
    assert envfile.parse(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("export A=1\n", {"A": "1"}),
    ("export    A=1\n", {"A": "1"}),
    ("  export A=1\n", {"A": "1"}),
    ("export_A=1\n", {"export_A": "1"}),
    ("exported=1\n", {"exported": "1"}),
], ids=repr)
def test_export_is_allowed_before_a_name(envfile, text, expected):
    assert envfile.parse(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("A='single quoted'\n", "single quoted"),
    ("A='  kept spaces  '\n", "  kept spaces  "),
    ("A='no \\n escapes'\n", "no \\n escapes"),
    ("A='$HOME ${HOME}'\n", "$HOME ${HOME}"),
    ('A="double quoted"\n', "double quoted"),
    ('A="a\\nb\\tc\\rd"\n', "a\nb\tc\rd"),
    ('A="quote \\" inside"\n', 'quote " inside'),
    ('A="backslash \\\\"\n', "backslash \\"),
    ('A="dollar \\$X"\n', "dollar $X"),
    ('A="unknown \\q escape"\n', "unknown \\q escape"),
    ('A=""\n', ""),
    ("A=''\n", ""),
    ('A="single \' inside"\n', "single ' inside"),
    ("A='double \" inside'\n", 'double " inside'),
    ('A=a"b\n', 'a"b'),
    ("A=$HOME\n", "$HOME"),
], ids=repr)
def test_quotes_single_are_literal_double_take_escapes_and_nothing_is_interpolated(envfile, text, expected):
    assert envfile.parse(text) == {"A": expected}


@pytest.mark.parametrize("text, words", [
    ("A\n", "line 1: expected NAME=VALUE"),
    ("A=1\nB\n", "line 2: expected NAME=VALUE"),
    ("=1\n", "expected NAME=VALUE"),
    ("1A=1\n", "expected NAME=VALUE"),
    ("A-B=1\n", "expected NAME=VALUE"),
    ("A B=1\n", "expected NAME=VALUE"),
    ("A.B=1\n", "expected NAME=VALUE"),
    ("export\n", "expected NAME=VALUE"),
    ("export A\n", "expected NAME=VALUE"),
    ("A:1\n", "expected NAME=VALUE"),
    ('A="unterminated\n', "unterminated"),
    ("A='unterminated\n", "unterminated"),
    ('A="escaped end\\"\n', "unterminated"),
    ('A="x" trailing\n', "after the closing quote"),
    ("A='x'y\n", "after the closing quote"),
    ("A=a\0b\n", "NUL"),
    ('A="a\0b"\n', "NUL"),
    ("HOSTCONSOLE_HOST=x\n", "set by the host"),
    ("export HOSTCONSOLE_PROVIDER=x\n", "set by the host"),
    ("# ok\n\nA=1\nHOSTCONSOLE_X=1\n", "line 4"),
], ids=repr)
def test_a_bad_env_file_line_is_refused_with_its_number(envfile, text, words):
    assert words in envfile.refused(text)


def test_a_missing_env_file_is_refused(tmp_path):
    with pytest.raises(InvalidSpec, match="does not exist"):
        parse_env_file(str(tmp_path / "nope.env"))


def test_a_directory_is_not_an_env_file(tmp_path):
    with pytest.raises(InvalidSpec, match="cannot be read"):
        parse_env_file(str(tmp_path))


def test_a_non_utf8_env_file_is_refused(envfile):
    assert "not UTF-8" in envfile.refused(b"A=\xff\xfe\n")


def test_an_oversized_env_file_is_refused(envfile):
    assert "larger than" in envfile.refused(b"A=1\n" + b"#" * ENV_FILE_MAX)


def test_an_env_file_just_under_the_cap_is_read(envfile):
    body = b"A=1\n"
    assert envfile.parse(body + b"#" * (ENV_FILE_MAX - len(body))) == {"A": "1"}


def test_a_long_bad_line_is_cut_in_the_message(envfile):
    msg = envfile.refused("x" * 500 + "\n")
    assert "x" * 61 not in msg


@fuzz
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True).filter(
           lambda k: not k.startswith("HOSTCONSOLE_")),
       st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\r\n\x0b\x0c\x1c\x1d\x1e"
                                                                               "\x85\u2028\u2029"),
               max_size=20),
       max_size=5))
def test_a_double_quoted_escaped_value_reads_back_as_written(envfile, env):
    def quote(v):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'

    text = "".join(f"{k}={quote(v)}\n" for k, v in env.items())
    assert envfile.parse(text) == env


# --- divergences from the dotenv format the docstring promises (python-dotenv / compose) ------

@pytest.mark.parametrize("ch", ["\x0c", "\x0b", "\x1c", "\x85", "\u2028"], ids=repr)
def test_only_newlines_end_an_env_file_line(envfile, ch):
    assert envfile.parse(f"A=x{ch}y\nB=2\n") == {"A": f"x{ch}y", "B": "2"}


def test_export_may_be_followed_by_a_tab(envfile):
    assert envfile.parse("export\tA=1\n") == {"A": "1"}


def test_a_utf8_bom_is_ignored(envfile):
    assert envfile.parse(b"\xef\xbb\xbfA=1\n") == {"A": "1"}
