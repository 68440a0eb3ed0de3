"""Values and functions of soko's Go templates (soko/gotemplate.py): how Go prints a value
(fmt's %v), encoding/json, fmt.Sprintf's verbs, truth, and the builtin and Docker functions."""
from __future__ import annotations

import json
import re
from typing import Any, Callable

NO_VALUE = object()  # a missing map key: Go prints "<no value>"


class TypedNil:
    """A nil slice or map of a typed Go struct: prints `[]` or `map[]`, is JSON null, is empty."""

    def __init__(self, shown: str):
        self.shown = shown

    def template_str(self) -> str:
        return self.shown

    def template_json(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"TypedNil({self.shown!r})"


NIL_SLICE, NIL_MAP = TypedNil("[]"), TypedNil("map[]")


class GoStruct(dict):
    """A Go struct as JSON shows it, with its `omitempty` fields that JSON left out kept in
    `omitted`: templates still see them (`{{.Config.Healthcheck}}` is `<nil>`, not an error)."""

    def __init__(self, shown: dict, omitted: dict | None = None):
        super().__init__(shown)
        self.omitted = omitted or {}


class TemplateError(Exception):
    """A template that does not parse or cannot be executed (Go's message)."""


# -- values -------------------------------------------------------------------------------------
def truth(v: Any) -> bool:
    """Go's notion of true: not the zero value and not empty."""
    if v is None or v is NO_VALUE or isinstance(v, TypedNil):
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def go_str(v: Any) -> str:
    """How fmt's %v prints a value."""
    if v is NO_VALUE:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v[k])}" for k in sorted(v)) + "]"
    if hasattr(v, "template_str"):
        return v.template_str()
    return str(v)


def _go_float(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64): shortest digits, %e past exponent 6 or below -4."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0"
    from decimal import Decimal

    sign, digits, exp = Decimal(repr(f)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    dp = len(digits) + exp  # position of the decimal point
    x = dp - 1
    neg = "-" if sign else ""
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return neg + ds + "0" * (dp - len(ds))
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def go_json(v: Any, escape_html: bool = False) -> str:
    """encoding/json, compact; `escape_html` as json.Marshal does."""
    if hasattr(v, "template_json"):
        v, escape_html = v.template_json(), True
    text = json.dumps(_plain(v), ensure_ascii=False, separators=(",", ":"))
    if escape_html:
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _plain(v: Any) -> Any:
    """Template data as json.dumps takes it (TypedNil is null)."""
    if hasattr(v, "template_json"):
        return v.template_json()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return None if v is NO_VALUE else v


plain = _plain


def type_name(v: Any) -> str:
    if hasattr(v, "template_type"):
        return v.template_type
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "[]interface {}",
            dict: "map[string]interface {}"}.get(type(v), "interface {}")


# -- printf -------------------------------------------------------------------------------------
_VERB_RE = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    pos, n = 0, 0
    for m in _VERB_RE.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if n >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[n]
        n += 1
        out.append(_verb(verb, flags or "", width, prec, a))
    out.append(fmt[pos:])
    if n < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{type_name(a)}={go_str(a)}" for a in args[n:]) + ")")
    return "".join(out)


def _verb(verb: str, flags: str, width: str | None, prec: str | None, a: Any) -> str:
    if verb in "dxXob" and isinstance(a, int) and not isinstance(a, bool):
        spec = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb]
        body = format(a, spec)
    elif verb in "feEgG" and isinstance(a, (int, float)) and not isinstance(a, bool):
        p = int(prec) if prec is not None else (6 if verb in "feE" else None)
        body = format(float(a), f".{p}{verb}") if p is not None else _go_float(float(a))
        prec = None
    elif verb == "q":
        body = json.dumps(a if isinstance(a, str) else go_str(a), ensure_ascii=False)
    elif verb == "t" and isinstance(a, bool):
        body = go_str(a)
    elif verb in "sv":
        body = go_str(a)
        if verb == "s" and prec is not None:
            body = body[:int(prec)]
    else:
        return f"%!{verb}({type_name(a)}={go_str(a)})"
    if width is not None and width != "*":
        w = int(width)
        if "-" in flags:
            body = body.ljust(w)
        elif "0" in flags and verb in "dxXobfeEgG":
            sign = "-" if body.startswith("-") else ""
            body = sign + body[len(sign):].rjust(w - len(sign), "0")
        else:
            body = body.rjust(w)
    return body


# -- functions ----------------------------------------------------------------------------------
def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(item, TypedNil):
            item = "" if item is NIL_MAP else item
            if item == "":
                continue
            raise TemplateError(f"error calling index: index out of range: {go_str(k)}")
        if isinstance(item, dict):
            item = item.get(k, "")
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(k, int) or not 0 <= k < len(item):
                raise TemplateError(f"error calling index: index out of range: {go_str(k)}")
            item = item[k]
        elif item is None:
            raise TemplateError("error calling index: index of untyped nil")
        else:
            raise TemplateError(f"error calling index: can't index item of type {type_name(item)}")
    return item


def _len(item: Any) -> int:
    if isinstance(item, TypedNil):
        return 0
    if isinstance(item, (str, list, tuple, dict)):
        return len(item)
    raise TemplateError(f"error calling len: len of type {type_name(item)}")


def _compare(name: str, op: Callable[[Any, Any], bool]) -> Callable:
    def f(a: Any, b: Any) -> bool:
        if isinstance(a, bool) != isinstance(b, bool) or isinstance(a, str) != isinstance(b, str):
            raise TemplateError(f"error calling {name}: incompatible types for comparison")
        return op(a, b)
    return f


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("error calling eq: missing argument for comparison")
    return any(a == b for b in others)


def _go_print(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(a)
    return out


def _join(items: Any, sep: str) -> str:
    if not isinstance(items, (list, tuple)):
        raise TemplateError(f"error calling join: wrong type for value; expected []string; got {type_name(items)}")
    return sep.join(go_str(x) for x in items)


def _truncate(s: str, n: int) -> str:
    return s[:n]


def _slice(item: Any, *idx: int) -> Any:
    if len(idx) > 2:
        raise TemplateError("error calling slice: too many slice indexes")
    return item[slice(*idx)] if idx else item


FUNCS: dict[str, Callable] = {
    "and": None, "or": None,  # short-circuit: evaluated in place
    "not": lambda a: not truth(a),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _go_print,
    "printf": go_sprintf,
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _compare("lt", lambda a, b: a < b),
    "le": _compare("le", lambda a, b: a <= b),
    "gt": _compare("gt", lambda a, b: a > b),
    "ge": _compare("ge", lambda a, b: a >= b),
    # Docker's (cli/templates)
    "json": lambda v: go_json(v),
    "join": _join,
    "split": lambda s, sep: s.split(sep) if sep else list(s),
    "upper": lambda s: go_str(s).upper(),
    "lower": lambda s: go_str(s).lower(),
    "title": lambda s: re.sub(r"(^|\s)(\S)", lambda m: m.group(1) + m.group(2).upper(), go_str(s)),
    "pad": lambda s, left, right: " " * left + go_str(s) + " " * right,
    "truncate": _truncate,
}

# Docker renders a table's header row with these: each returns its argument untouched.
HEADER_FUNCS: dict[str, Callable] = {name: (lambda v, *_: v) for name in
                                     ("json", "join", "split", "upper", "lower", "title", "pad", "truncate")}
