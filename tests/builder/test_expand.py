"""Variable expansion as the Dockerfile reference specifies it."""
from __future__ import annotations

import pytest

from builder.errors import ExpansionError
from builder.expand import Lexer

ENV = {"v": "value", "empty": "", "path": "/usr/local/bin", "str": "foobarbaz", "sp": "a b"}


@pytest.mark.parametrize("word, out", [
    ("$v", "value"), ("${v}", "value"), ("${v}_x", "value_x"), ("$v_x", ""), ("$unset", ""),
    ("${v:-w}", "value"), ("${empty:-w}", "w"), ("${unset:-w}", "w"),
    ("${v-w}", "value"), ("${empty-w}", ""), ("${unset-w}", "w"),
    ("${v:+w}", "w"), ("${empty:+w}", ""), ("${unset:+w}", ""),
    ("${v+w}", "w"), ("${empty+w}", "w"), ("${unset+w}", ""),
    ("${unset:-$v}", "value"), ("${unset:-${v}x}", "valuex"), ("${unset:-a b}", "a b"),
    (r"\$v", "$v"), (r"\${v}", "${v}"), (r"a\ b", "a b"), ("a\\", "a"),
    ("'$v'", "$v"), ('"$v"', "value"), ('"a\\"b"', 'a"b'), ('"a\\xb"', "a\\xb"), ('"\\$v"', "$v"),
    ("$", "$"), ("a$", "a$"), ("$ x", "$ x"), ("$1", ""),
    ("${str#f*b}", "arbaz"), ("${str##f*b}", "az"), ("${str%b*}", "foobar"), ("${str%%b*}", "foo"),
    ("${str/ba/fo}", "fooforbaz"), ("${str//ba/fo}", "fooforfoz"), ("${str#x}", "foobarbaz"),
    ("$sp", "a b"),
])
def test_word(word, out):
    assert Lexer().word(word, ENV) == out


def test_backtick_escape():
    lx = Lexer("`")
    assert lx.word("`$v", ENV) == "$v"
    assert lx.word(r"c:\dir", ENV) == r"c:\dir"


@pytest.mark.parametrize("word, msg", [
    ("${unset?}", "unset: is not allowed to be unset"),
    ("${unset?custom}", "unset: custom"),
    ("${empty:?}", "empty: is not allowed to be empty"),
    ("${v", "missing '}'"),
    ("${}", "bad substitution"),
    ("${v:x}", "unsupported modifier"),
    ("'abc", "matching single-quote"),
    ('"abc', "matching double-quote"),
])
def test_errors(word, msg):
    with pytest.raises(ExpansionError, match=msg):
        Lexer().word(word, ENV)


def test_used_names_are_reported():
    e = Lexer().expand("${a:-$b}/$c", {"a": "1"})
    assert e.value == "1/" and e.used == {"a", "b", "c"}


def test_heredoc_mode_keeps_quotes():
    out = Lexer().heredoc('echo "hello ${v}" \'$v\' \\$v \\x\n', ENV).value
    assert out == 'echo "hello value" \'value\' $v \\x\n'
