"""The little language of the program-evaluation tasks: its syntax tree, nalm's own interpreter (nothing generated
ever reaches Python's ``eval``, ``exec``, ``compile`` or a subprocess), the Python rendering for people, and the
token sequence a model reads (see :mod:`.task` for the worked example and the encoding)."""

from __future__ import annotations

from dataclasses import dataclass

from nalm.errors import ConfigError

# -- the syntax tree -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """An integer literal (non-negative)."""
    value: int


@dataclass(frozen=True)
class Var:
    """A variable read."""
    name: str


@dataclass(frozen=True)
class BinOp:
    """``(left op right)``, op in ``+ - *``."""
    op: str
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class IfExp:
    """``(body if left cmp right else orelse)``, cmp in ``< >``."""
    body: "Expr"
    left: "Expr"
    cmp: str
    right: "Expr"
    orelse: "Expr"


@dataclass(frozen=True)
class Assign:
    """``name = value``."""
    name: str
    value: "Expr"


@dataclass(frozen=True)
class Loop:
    """``for x in range(count): name op= value``, op in ``+ -``."""
    count: int
    name: str
    op: str
    value: "Expr"


Expr = Num | Var | BinOp | IfExp
Statement = Assign | Loop


@dataclass(frozen=True)
class Program:
    """Statements run in order, then ``print(result)``; the program's value is the printed integer."""
    statements: tuple[Statement, ...]
    result: Expr


#: Variable names a program may assign (each assignment takes an unused one), and the loop counter.
VARIABLES = tuple("abcdefghij")
LOOP_VARIABLE = "x"

# -- the interpreter -------------------------------------------------------------------------------------------


def _arith(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ConfigError(f"unknown operator {op!r}; expected one of + - *")


def _value(e: Expr, env: dict[str, int]) -> int:
    if isinstance(e, Num):
        return e.value
    if isinstance(e, Var):
        if e.name not in env:
            raise ConfigError(f"variable {e.name!r} is read before it is assigned")
        return env[e.name]
    if isinstance(e, BinOp):
        return _arith(e.op, _value(e.left, env), _value(e.right, env))
    if isinstance(e, IfExp):
        a, b = _value(e.left, env), _value(e.right, env)
        if e.cmp not in ("<", ">"):
            raise ConfigError(f"unknown comparison {e.cmp!r}; expected < or >")
        return _value(e.body if (a > b if e.cmp == ">" else a < b) else e.orelse, env)
    raise ConfigError(f"not an expression: {e!r}")


def evaluate(program: Program) -> int:
    """The program's value (what its ``print`` would print), by nalm's own tree-walking interpreter."""
    env: dict[str, int] = {}
    for s in program.statements:
        if isinstance(s, Assign):
            env[s.name] = _value(s.value, env)
        elif isinstance(s, Loop):
            if s.name not in env:
                raise ConfigError(f"variable {s.name!r} is updated in a loop before it is assigned")
            for i in range(s.count):
                env[LOOP_VARIABLE] = i
                env[s.name] = _arith(s.op, env[s.name], _value(s.value, env))
        else:
            raise ConfigError(f"not a statement: {s!r}")
    return _value(program.result, env)


# -- rendering and tokens --------------------------------------------------------------------------------------


def _render(e: Expr) -> str:
    if isinstance(e, Num):
        return str(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, BinOp):
        return f"({_render(e.left)} {e.op} {_render(e.right)})"
    return f"({_render(e.body)} if {_render(e.left)} {e.cmp} {_render(e.right)} else {_render(e.orelse)})"


def render(program: Program) -> str:
    """Python source for people (never run by nalm): one statement a line, the last ``print(<expression>)``."""
    lines = []
    for s in program.statements:
        if isinstance(s, Assign):
            lines.append(f"{s.name} = {_render(s.value)}")
        else:
            lines += [f"for {LOOP_VARIABLE} in range({s.count}):", f"    {s.name} {s.op}= {_render(s.value)}"]
    lines.append(f"print({_render(program.result)})")
    return "\n".join(lines) + "\n"


#: The token vocabulary: index 0 pads, index 1 is any number (its value goes to the value channel); ";" ends a
#: statement (a line break in the rendering); then the variables.
VOCABULARY: tuple[str, ...] = ("<pad>", "<num>", "+", "-", "*", "=", "+=", "-=", "<", ">", "(", ")", "if", "else",
                               "for", "in", "range", ":", "print", ";", LOOP_VARIABLE) + VARIABLES
TOKEN_INDEX = {t: i for i, t in enumerate(VOCABULARY)}
PAD_CHANNEL, NUM_CHANNEL = TOKEN_INDEX["<pad>"], TOKEN_INDEX["<num>"]
VALUE_CHANNEL = len(VOCABULARY)  # the last feature
FEATURES = len(VOCABULARY) + 1


def _expr_tokens(e: Expr, out: list[tuple[str, int]]) -> None:
    if isinstance(e, Num):
        out.append(("<num>", e.value))
    elif isinstance(e, Var):
        out.append((e.name, 0))
    elif isinstance(e, BinOp):
        out.append(("(", 0))
        _expr_tokens(e.left, out)
        out.append((e.op, 0))
        _expr_tokens(e.right, out)
        out.append((")", 0))
    else:
        out.append(("(", 0))
        _expr_tokens(e.body, out)
        out.append(("if", 0))
        _expr_tokens(e.left, out)
        out.append((e.cmp, 0))
        _expr_tokens(e.right, out)
        out.append(("else", 0))
        _expr_tokens(e.orelse, out)
        out.append((")", 0))


def tokens(program: Program) -> list[tuple[str, int]]:
    """The program's time steps, (token, value) with value 0 unless the token is ``<num>``; the order of
    :func:`render`'s tokens, with ``;`` for each line break."""
    out: list[tuple[str, int]] = []
    for s in program.statements:
        if isinstance(s, Assign):
            out += [(s.name, 0), ("=", 0)]
            _expr_tokens(s.value, out)
        else:
            out += [("for", 0), (LOOP_VARIABLE, 0), ("in", 0), ("range", 0), ("(", 0), ("<num>", s.count),
                    (")", 0), (":", 0), (s.name, 0), (s.op + "=", 0)]
            _expr_tokens(s.value, out)
        out.append((";", 0))
    out += [("print", 0), ("(", 0)]
    _expr_tokens(program.result, out)
    out.append((")", 0))
    return out
