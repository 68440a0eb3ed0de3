"""Parsing: what dockerfile-parse gives plus heredocs, flags, directives, blank continuations."""
from __future__ import annotations

import re

import pytest

from builder.errors import DockerfileError
from builder.instructions import Copy, Healthcheck, Run, convert
from builder.parse import extract_flags, parse
from builder.stages import plan


def insts(text: str):
    return parse(text).instructions


def test_continuations_comments_and_blank_lines():
    df = insts("FROM a\nRUN echo a \\\n\n  # a comment\n   \n  && echo b\nRUN x\n")
    assert [(i.cmd, i.args, i.line) for i in df] == [
        ("FROM", "a", 1), ("RUN", "echo a   && echo b", 2), ("RUN", "x", 7)]
    assert df[1].end_line == 6


def test_lowercase_keywords_crlf_and_missing_final_newline():
    df = insts("from a\r\nrun echo hi\r\ncmd")
    assert [(i.cmd, i.args) for i in df] == [("FROM", "a"), ("RUN", "echo hi"), ("CMD", "")]


def test_flags_are_split_off_with_quotes():
    df = insts('FROM a\nCOPY --chown="app:app" --from=build --chmod=755 a "b c"\n')
    c = df[1]
    assert [(f.name, f.value) for f in c.flags] == [("chown", "app:app"), ("from", "build"), ("chmod", "755")]
    assert c.args == 'a "b c"'


def test_extract_flags_stops_at_double_dash_and_non_flags():
    assert extract_flags("--a=1 -- --b x") == ("--b x", ["--a=1"])
    assert extract_flags("--link x --y") == ("x --y", ["--link"])
    assert extract_flags("  ") == ("", [])


def test_heredocs_run_and_copy():
    text = ("FROM a\n"
            "RUN <<EOT bash\n"
            "echo one\n"
            "RUN not an instruction \\\n"
            "EOT\n"
            "COPY <<-\"A\" <<B /dest/\n"
            "\t\ttabbed $x\n"
            "\tA\n"
            "b $x\n"
            "B\n"
            "ENV after=1\n")
    df = insts(text)
    assert [i.cmd for i in df] == ["FROM", "RUN", "COPY", "ENV"]
    run = df[1]
    assert run.heredocs[0].name == "EOT" and run.heredocs[0].content == "echo one\nRUN not an instruction \\\n"
    assert run.end_line == 5
    a, b = df[2].heredocs
    assert (a.name, a.expand, a.chomp, a.text()) == ("A", False, True, "tabbed $x\n")
    assert (b.name, b.expand, b.chomp, b.content) == ("B", True, False, "b $x\n")
    assert df[3].line == 11


def test_unterminated_heredoc_names_its_line():
    with pytest.raises(DockerfileError) as e:
        parse("FROM a\nRUN <<EOF\necho\n")
    assert str(e.value) == "Dockerfile:2: unterminated heredoc 'EOF'"


def test_directives_escape_and_syntax():
    df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN echo a `\n  b\n")
    assert df.escape == "`" and df.syntax == "docker/dockerfile:1"
    assert any("syntax" in n for n in df.notices)
    assert df.instructions[1].args == "echo a   b"


def test_directives_only_at_top_and_not_twice():
    df = parse("FROM a\n# escape=`\nRUN echo \\\n b\n")
    assert df.escape == "\\" and df.instructions[1].args == "echo  b"
    with pytest.raises(DockerfileError, match="Dockerfile:2: only one escape parser directive"):
        parse("# escape=`\n# escape=\\\nFROM a\n")


def test_json_and_shell_forms():
    df = insts('FROM a\nCMD ["a", "b c"]\nCMD [not json\nRUN ["x", 1]\n')
    assert df[1].json_args() == ["a", "b c"]
    assert df[2].json_args() is None
    assert df[3].json_args() is None  # not all strings: shell form, as Docker does


@pytest.mark.parametrize("text, message", [
    ("FROM a\nFOO bar\n", "Dockerfile:2: unknown instruction: FOO"),
    ("FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS 1x\n", "Dockerfile:1: invalid name for build stage"),
    ("RUN x\nFROM a\n", "Dockerfile:1: no build stage in current context"),
    ("FROM a\nCOPY x\n", "Dockerfile:2: COPY requires at least two arguments"),
    ("FROM a\nCOPY --frm=x a b\n", "Dockerfile:2: unknown flag: --frm"),
    ("FROM a\nRUN --mount=type=nfs,target=/x make\n",
     "Dockerfile:2: RUN --mount=type=nfs,target=/x: unsupported mount type 'nfs'"),
    ("FROM a\nRUN --mount=type=cache,target=/x,colour=red make\n", "Dockerfile:2: RUN --mount=.*unknown option 'colour'"),
    ("FROM a\nRUN --mount=type=tmpfs,target=/x,id=a make\n", "Dockerfile:2: .*'id' does not apply to type=tmpfs"),
    ("FROM a\nRUN --mount=type=cache,target=/x,sharing=maybe x\n", "Dockerfile:2: .*sharing=maybe: expected shared"),
    ("FROM a\nRUN --mount=type=cache,target=/x,mode=0999 x\n", "Dockerfile:2: .*mode=0999: not an octal number"),
    ("FROM a\nRUN --mount=type=cache,target=/x,uid=root x\n", "Dockerfile:2: .*uid=root: not a number"),
    ("FROM a\nRUN --mount=type=tmpfs,target=/x,size=lots x\n", "Dockerfile:2: .*size=lots: not a size"),
    ("FROM a\nRUN --mount=type=secret,id=a,required=perhaps x\n", "Dockerfile:2: .*required=perhaps: expected true"),
    ("FROM a\nRUN --mount=type=secret,id=a,env=1BAD x\n", "Dockerfile:2: .*env=1BAD: not a variable name"),
    ("FROM a\nRUN --mount=type=cache x\n", "Dockerfile:2: .*type=cache needs a target"),
    ("FROM a\nRUN --mount=type=secret,mode=0400 x\n", "Dockerfile:2: .*a secret needs id="),
    ("FROM a\nRUN --mount=type=cache,target=/x,id x\n", "Dockerfile:2: .*option 'id' needs a value"),
    ("FROM a\nRUN --mount=target=/x --mount=type=cache,target=/x x\n", "Dockerfile:2: .*two mounts on the same"),
    ("FROM a\nCOPY --parents=maybe x y/\n", "Dockerfile:2: expecting boolean value for flag --parents"),
    ("FROM a\nADD --keep-git-dir=true x.tar y/\n", "Dockerfile:2: ADD --keep-git-dir can only be used with git"),
    ("FROM a\nADD --checksum=md5:00 http://h/x y\n", "Dockerfile:2: invalid --checksum 'md5:00'"),
    ("FROM a\nCOPY --exclude= x y\n", "Dockerfile:2: COPY --exclude needs a pattern"),
    ("FROM a\nCOPY --keep-git-dir x y\n", "Dockerfile:2: unknown flag: --keep-git-dir"),
    ("FROM a\nRUN --network=bridge x\n", "Dockerfile:2: unsupported network mode"),
    ("FROM a\nCOPY --from=a --from=b x y\n", "Dockerfile:2: duplicate flag specified: --from"),
    ("FROM a\nCOPY --link=maybe x y\n", "Dockerfile:2: expecting boolean value"),
    ("FROM a\nSHELL /bin/bash -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"),
    ("FROM a\nENV\n", "Dockerfile:2: ENV requires at least one argument"),
    ("FROM a\nENV onlykey\n", "Dockerfile:2: ENV must have two arguments"),
    ("FROM a\nENV a=1 b\n", "Dockerfile:2: syntax error - can't find = in 'b'"),
    ("FROM a\nONBUILD ONBUILD RUN x\n", "Dockerfile:2: chaining ONBUILD"),
    ("FROM a\nONBUILD FROM b\n", "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"),
    ("FROM a\nHEALTHCHECK --interval=5 CMD x\n", "Dockerfile:2: --interval: invalid duration"),
    ("FROM a\nHEALTHCHECK FOO x\n", "Dockerfile:2: unknown type 'FOO' in HEALTHCHECK"),
    ("FROM a AS x\nFROM b AS X\n", "Dockerfile:2: duplicate stage name 'x'"),
    ("ARG A\n", "Dockerfile: the Dockerfile has no FROM instruction"),
])
def test_bad_lines_report_their_line(text, message):
    with pytest.raises(DockerfileError) as e:
        plan(parse(text))
    assert re.match(message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\["), str(e.value)), str(e.value)


def test_typed_commands():
    df = insts('FROM a\nRUN --network=none ["echo", "hi"]\n'
               'COPY --from=0 --chown=1:2 --chmod=640 --link a b /d/\n'
               'HEALTHCHECK --interval=1m30s --retries=3 CMD ["curl", "x"]\n'
               'HEALTHCHECK CMD curl -f x || exit 1\n')
    run = convert(df[1])
    assert isinstance(run, Run) and run.exec_form == ["echo", "hi"] and run.network == "none"
    cp = convert(df[2])
    assert isinstance(cp, Copy) and cp.sources == ["a", "b"] and cp.dest == "/d/"
    assert (cp.from_, cp.chown, cp.chmod, cp.link) == ("0", "1:2", "640", True)
    hc = convert(df[3])
    assert isinstance(hc, Healthcheck) and hc.test == ["CMD", "curl", "x"]
    assert hc.interval == 90_000_000_000 and hc.retries == 3
    assert convert(df[4]).test == ["CMD-SHELL", "curl -f x || exit 1"]


def test_stages_and_targets():
    p = plan(parse("ARG X=1\nFROM a AS one\nFROM one AS two\nCOPY --from=0 /a /b\nFROM c\n"))
    assert [s.name for s in p.stages] == ["one", "two", None]
    assert [a.pairs for a in p.global_args] == [[("X", "1")]]
    assert p.target(None).index == 2 and p.target("two").index == 1 and p.target("0").index == 0
    from builder.expand import Lexer
    assert [s.index for s in p.needed(p.target("two"), {}, Lexer())] == [0, 1]
    assert [s.index for s in p.needed(p.target(None), {}, Lexer())] == [2]


def test_instruction_kinds_without_fields_of_their_own_are_plain_subclasses():
    """Equal, shown and copied as dataclasses are, without being made again at every start-up."""
    import dataclasses

    from builder.instructions import Arg, Cmd, Entrypoint, Env, Expose, Label, Maintainer, StopSignal, User, \
        Volume, Workdir, convert

    kinds = [Env, Label, Arg, Expose, Volume, Workdir, User, StopSignal, Maintainer, Cmd, Entrypoint]
    assert [k for k in kinds if "__init__" in vars(k) or "__eq__" in vars(k)] == []
    env = convert(parse("FROM x\nENV A=1\n").instructions[1])
    label = convert(parse("FROM x\nLABEL A=1\n").instructions[1])
    assert type(env) is Env and dataclasses.is_dataclass(env) and env.pairs == label.pairs == [("A", "1")]
    assert env != label and env == convert(parse("FROM x\nENV A=1\n").instructions[1])
    assert repr(env).startswith("Env(inst=") and dataclasses.replace(env, pairs=[]).pairs == []
