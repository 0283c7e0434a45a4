"""Programs of the program-evaluation task: generator, interpreter, rendering, encoding and the digit metric."""

from __future__ import annotations

import ast
import io
import pathlib
import tokenize

import numpy as np
import pytest
import torch

from nalm.errors import ConfigError, ShapeError
from nalm.experiments.programs import task as P
from nalm.experiments.programs.task import Assign, BinOp, IfExp, Loop, Num, Program, ProgramConfig, Var

ALL_OPS = ProgramConfig(nesting=4, operations="pair,vars,ifstat,smallmul,loop,equality")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.SFC64(seed))


# -- the interpreter ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program, value", [
    (Program((), Num(7)), 7),
    (Program((), BinOp("+", Num(12), Num(30))), 42),
    (Program((), BinOp("-", Num(12), Num(30))), -18),
    (Program((), BinOp("*", Num(3), Num(25))), 75),
    (Program((), IfExp(Num(1), Num(5), ">", Num(3), Num(2))), 1),   # 5 > 3: body
    (Program((), IfExp(Num(1), Num(3), ">", Num(5), Num(2))), 2),   # 3 > 5 false: orelse
    (Program((), IfExp(Num(1), Num(3), "<", Num(5), Num(2))), 1),
    (Program((), IfExp(Num(1), Num(4), "<", Num(4), Num(2))), 2),   # a tie is false either way
    (Program((Assign("a", Num(9)),), BinOp("-", Var("a"), Num(4))), 5),
    (Program((Assign("a", Num(10)), Loop(3, "a", "+", Num(7))), Var("a")), 31),
    (Program((Assign("a", Num(10)), Loop(4, "a", "-", Num(6))), Var("a")), -14),
    # nesting: b = (a + 2) * 3 with a = 5, then (20 if b > 20 else b - 1) ... composed
    (Program((Assign("a", Num(5)), Assign("b", BinOp("*", BinOp("+", Var("a"), Num(2)), Num(3)))),
             IfExp(Num(20), Var("b"), ">", Num(20), BinOp("-", Var("b"), Num(1)))), 20),
    (Program((Assign("a", Num(5)), Loop(2, "a", "+", BinOp("-", Num(1), Var("a")))),
             BinOp("+", Var("a"), IfExp(Num(8), Var("a"), "<", Num(0), Num(9)))), 1 + 9),  # a: 5 -> 1 -> 1
])
def test_evaluator_hand_computed(program, value):
    assert P.evaluate(program) == value


def test_evaluator_rejects_unassigned_variables():
    with pytest.raises(ConfigError, match="'q'"):
        P.evaluate(Program((), Var("q")))
    with pytest.raises(ConfigError, match="'q'"):
        P.evaluate(Program((Loop(2, "q", "+", Num(1)),), Num(0)))


# -- rendering: valid Python whose structure is the tree (parsed, never run) --------------------------------------


def _expr_from_ast(node: ast.expr):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Num(node.value)
    if isinstance(node, ast.Name):
        return Var(node.id)
    if isinstance(node, ast.BinOp):
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}[type(node.op)]
        return BinOp(op, _expr_from_ast(node.left), _expr_from_ast(node.right))
    if isinstance(node, ast.IfExp):
        test = node.test
        assert isinstance(test, ast.Compare) and len(test.ops) == 1
        cmp = {ast.Gt: ">", ast.Lt: "<"}[type(test.ops[0])]
        return IfExp(_expr_from_ast(node.body), _expr_from_ast(test.left), cmp, _expr_from_ast(test.comparators[0]),
                     _expr_from_ast(node.orelse))
    raise AssertionError(f"unexpected node {ast.dump(node)}")


def _program_from_ast(module: ast.Module) -> Program:
    *body, last = module.body
    statements = []
    for s in body:
        if isinstance(s, ast.Assign):
            (target,) = s.targets
            statements.append(Assign(target.id, _expr_from_ast(s.value)))
        else:
            assert isinstance(s, ast.For) and not s.orelse and s.target.id == P.LOOP_VARIABLE
            assert isinstance(s.iter, ast.Call) and s.iter.func.id == "range" and len(s.iter.args) == 1
            (aug,) = s.body
            assert isinstance(aug, ast.AugAssign)
            op = {ast.Add: "+", ast.Sub: "-"}[type(aug.op)]
            statements.append(Loop(s.iter.args[0].value, aug.target.id, op, _expr_from_ast(aug.value)))
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and last.value.func.id == "print"
    (result,) = last.value.args
    return Program(tuple(statements), _expr_from_ast(result))


@pytest.mark.parametrize("config", [ProgramConfig(kind="add"), ProgramConfig(), ALL_OPS])
def test_rendering_is_python_with_the_trees_structure(config):
    for program in P.generate_many(config, rng(1), 200):
        text = P.render(program)
        assert text.rstrip("\n").splitlines()[-1].startswith("print(")
        assert _program_from_ast(ast.parse(text)) == program


def test_tokens_are_the_renderings_python_tokens():
    """The model's steps are the rendering's own tokens (a line break is ';', numbers are <num>)."""
    for program in P.generate_many(ALL_OPS, rng(2), 100):
        expected, previous = [], None
        for tok in tokenize.generate_tokens(io.StringIO(P.render(program)).readline):
            if tok.type == tokenize.NEWLINE and previous != ":":
                expected.append((";", 0))
            elif tok.type == tokenize.NUMBER:
                expected.append(("<num>", int(tok.string)))
            elif tok.type in (tokenize.NAME, tokenize.OP):
                expected.append((tok.string, 0))
            previous = tok.string
        assert P.tokens(program) == expected[:-1]  # the final line break after print(...) is not a step


def test_package_source_calls_no_eval_exec_or_compile():
    root = pathlib.Path(P.__file__).resolve().parents[2]  # src/nalm
    files = sorted(root.rglob("*.py"))
    assert root / "experiments" / "programs" / "language.py" in files
    calls = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("eval", "exec", "compile"):
                calls.append(f"{path.relative_to(root)}:{node.lineno} {node.func.id}(")
    assert calls == []


# -- generation ---------------------------------------------------------------------------------------------------


def _literals(e) -> list[int]:
    if isinstance(e, Num):
        return [e.value]
    if isinstance(e, BinOp):
        if e.op == "*":  # one side is the small multiplier
            small = [s for s in (e.left, e.right) if isinstance(s, Num) and s.value <= 4]
            other = e.right if small and e.left is small[0] else e.left
            return _literals(other)
        return _literals(e.left) + _literals(e.right)
    if isinstance(e, IfExp):
        return sum((_literals(x) for x in (e.body, e.left, e.right, e.orelse)), [])
    return []


def test_generation_is_deterministic_and_per_stream():
    a = P.generate_many(ALL_OPS, rng(3), 50)
    assert a == P.generate_many(ALL_OPS, rng(3), 50)
    assert a != P.generate_many(ALL_OPS, rng(4), 50)
    assert P.generate(ALL_OPS, rng(3)) == a[0]


@pytest.mark.parametrize("low, high", [(0, 100), (100, 1000), (1000, 10000)])
def test_literals_come_from_the_range(low, high):
    config = ProgramConfig(nesting=3, operations="pair,vars,ifstat", low=low, high=high)
    seen = [v for p in P.generate_many(config, rng(5), 300)
            for v in _literals(p.result) + sum((_literals(s.value) for s in p.statements), [])]
    assert min(seen) >= low and max(seen) < high
    assert min(seen) < low + (high - low) // 10 and max(seen) >= high - (high - low) // 10  # the range is covered
    add = P.generate_many(ProgramConfig(kind="add", low=low, high=high), rng(5), 100)
    assert all(p.statements == () and p.result.op == "+" and low <= p.result.left.value < high for p in add)


def test_nesting_composes_operations():
    config = ProgramConfig(nesting=3, operations="pair")
    for p in P.generate_many(config, rng(6), 50):
        depth = lambda e: 1 + max(depth(e.left), depth(e.right)) if isinstance(e, BinOp) else 0  # noqa: E731
        assert depth(p.result) == 3  # each operation's result is an operand of the next
    loops = P.generate_many(ProgramConfig(nesting=1, operations="loop", loop_max=3), rng(7), 100)
    assert {p.statements[1].count for p in loops} == {1, 2, 3}
    names = [s.name for p in P.generate_many(ProgramConfig(nesting=5, operations="vars"), rng(8), 30)
             for s in p.statements]
    assert len(names) == 150 and all(n in P.VARIABLES for n in names)


@pytest.mark.parametrize("options", [{"kind": "mul"}, {"operations": "pair,jump"}, {"operations": ""},
                                     {"nesting": 0}, {"nesting": 11}, {"low": -5}, {"low": 100, "high": 100},
                                     {"loop_max": 0}])
def test_config_rejects_bad_values(options):
    with pytest.raises(ConfigError):
        ProgramConfig(**options)


# -- encoding -----------------------------------------------------------------------------------------------------


def test_worked_example_encoding():
    program = Program((Assign("b", Num(12)),), BinOp("-", Num(7), BinOp("+", Var("b"), Num(40))))
    assert P.render(program) == "b = 12\nprint((7 - (b + 40)))\n"
    assert P.evaluate(program) == -45
    words = [t if t != "<num>" else str(v) for t, v in P.tokens(program)]
    assert words == "b = 12 ; print ( ( 7 - ( b + 40 ) ) )".split()
    x = P.encode(program, value_scale=0.5)
    assert x.shape == (len(words), P.FEATURES) == (16, 32) and x.dtype == np.float32
    assert np.array_equal(x[:, :P.VALUE_CHANNEL].sum(1), np.ones(16))
    assert [P.VOCABULARY[i] for i in x[:, :P.VALUE_CHANNEL].argmax(1)][:4] == ["b", "=", "<num>", ";"]
    assert np.array_equal(x[:, P.VALUE_CHANNEL].nonzero()[0], [2, 7, 12])
    assert np.array_equal(x[[2, 7, 12], P.VALUE_CHANNEL], [6, 3.5, 20])


def test_batches_are_left_padded():
    programs = [Program((), Num(5)), Program((), BinOp("+", Num(1), Num(2)))]
    x, values = P.encode_batch(programs)
    assert x.shape == (2, 8, P.FEATURES) and values.tolist() == [5, 3]
    assert np.array_equal(x[0, :4, P.PAD_CHANNEL], np.ones(4)) and x[0, 4:, P.PAD_CHANNEL].sum() == 0
    assert np.array_equal(x[0, 4:], P.encode(programs[0])) and np.array_equal(x[1], P.encode(programs[1]))
    assert x[:, -1, P.TOKEN_INDEX[")"]].tolist() == [1, 1]  # every program ends at the final step
    with pytest.raises(ShapeError):
        P.encode_batch(programs, length=5)


def test_sample_batch_draws_each_seed_from_its_own_stream():
    config = ProgramConfig(nesting=2)
    gens = [np.random.SFC64(s) for s in (11, 12, 13)]
    x, y = P.sample_batch(config, gens, 16, value_scale=0.01)
    assert x.shape[:2] == (3, 16) and x.shape[-1] == P.FEATURES and y.shape == (3, 16, 1) and x.dtype == torch.float32
    x1, y1 = P.sample_batch(config, [np.random.SFC64(12)], 16, value_scale=0.01)  # seed 12 alone
    T1 = x1.shape[2]
    assert torch.equal(x[1, :, -T1:], x1[0]) and x[1, :, :-T1, P.PAD_CHANNEL].eq(1).all()
    assert torch.equal(y[1], y1[0])
    programs = P.generate_many(config, np.random.Generator(np.random.SFC64(13)), 16)
    assert torch.allclose(y[2, :, 0].double(), torch.tensor([P.evaluate(p) * 0.01 for p in programs],
                                                            dtype=torch.float64))


def test_program_set_shares_one_set_over_seeds():
    x, y, values = P.program_set(ProgramConfig(kind="add", low=1000, high=10000), rng(9), 50, value_scale=0.1)
    assert x.shape == (1, 50, 8, P.FEATURES) and y.shape == (1, 50, 1) and values.dtype == torch.int64
    assert values.min() >= 2000 and torch.allclose(y[..., 0].double(), values.double() * 0.1)
    assert torch.allclose(x[0, :, 3, P.VALUE_CHANNEL].double() + x[0, :, 5, P.VALUE_CHANNEL].double(),
                          values[0].double() * 0.1)  # a + b, the two <num> steps of print((a + b))


# -- metrics ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pred, target, score", [
    (1234.4, 1234, 1.0),
    (1233.6, 1234, 1.0),      # rounds to the target
    (1235, 1234, 3 / 4),      # units digit wrong
    (234, 1234, 3 / 4),       # a missing digit is wrong
    (21234, 1234, 4 / 5),     # an extra digit is wrong
    (4321, 1234, 0.0),
    (-5, -5, 1.0),            # digit and sign right: 2/2
    (5, -5, 1 / 2),           # wrong sign
    (-5, 5, 1 / 2),
    (-15, -5, 2 / 3),         # sign right, units right, extra digit wrong
    (-0.4, 0, 1.0),           # −0.4 rounds to 0, which has no sign
    (2.5, 2, 1.0),            # half to even, as Python's round
    (float("nan"), 3, 0.0),
    (float("inf"), 3, 0.0),
    (1e30, 3, 0.0),
])
def test_digit_accuracy_hand_cases(pred, target, score):
    got = P.digit_accuracy(torch.tensor([[pred]], dtype=torch.float64), torch.tensor([[target]]))
    assert got.dtype == torch.float64 and got.shape == (1,)
    assert got.item() == pytest.approx(score)


def test_metrics_are_per_seed():
    target = np.array([[10, -20, 300]])  # one set shared by both seeds
    pred = torch.tensor([[10.2, -20.0, 300.0], [11.0, 20.0, 30.0]])[..., None]  # (S, N, 1)
    # seed 1: 11 vs 10 -> 1/2; 20 vs -20 -> 2/3 (sign wrong); 30 vs 300 -> 1/3 (tens wrong, hundreds missing)
    assert P.digit_accuracy(pred, target).tolist() == pytest.approx([1.0, (1 / 2 + 2 / 3 + 1 / 3) / 3])
    assert P.exact_match(pred, target).tolist() == pytest.approx([1.0, 0.0])
    assert P.mean_absolute_error(pred, target).tolist() == pytest.approx([0.2 / 3, (1 + 40 + 270) / 3])
    with pytest.raises(ShapeError):
        P.digit_accuracy(pred[:, :2], target)
