"""Code verdicts that the code under test cannot forge: the same verdict scores evaluation and RL rewards.

Threat model. A completion is arbitrary Python. It may read its own source, patch builtins, `exec`,
`compile` and `os.write`, print anything, register `atexit` handlers, return objects whose `__eq__` is
always true, walk `gc` for the harness, write to any descriptor it has, or exit early. Whatever runs in the
completion's process is therefore its to control, so nothing that decides the verdict runs there:

* the completion runs alone in a sandbox with a minimal root (the interpreter and system libraries only: no
  benchmark file, test or dataset of the caller's is visible), behind a small server that answers calls
  `entry(*args, **kwargs)` with the result written as plain data (`repr` of builtins);
* the tests run in a second, separate sandbox (trusted code: the benchmark's prompt helpers and tests),
  where the function under test is a stub that sends the call's arguments down one pipe and reads the
  answer from another. The answer is parsed as a literal (numbers, strings, bytes, None, booleans, tuples
  (namedtuples cross as the tuples they equal, numpy scalars as the Python numbers they convert to), lists,
  dicts, sets, frozensets, float('inf'/'nan'), Fraction(int, int) and Decimal(str), nested); anything else is
  an error in that test;
* the verdict (which tests passed) is the trusted side's output, which the completion cannot reach.

What a completion can do: answer each call however it likes, or not at all. It never sees an expected
value, so the only way to pass is to return the right answers. A completion that crashes, hangs or sends
garbage fails the tests it has not answered. What it cannot do: forge the report, patch the tests, read
the test file, or make a comparison succeed with a custom object.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from barkit.eval.sandbox import CHANNEL, run_pair

SERVER = r'''

# ---- barkit call server: answers the tests' calls, as plain data ----
def _barkit_serve(name, requests, answers):
    import ast, math, os
    def dump(x):
        if type(x) is float and (x != x or x in (math.inf, -math.inf)):
            return "float(%r)" % repr(x)
        if type(x) is list or isinstance(x, tuple):  # a namedtuple crosses as the tuple it equals
            inner = ", ".join(dump(v) for v in x)
            return ("[%s]" if type(x) is list else "(%s,)" if len(x) == 1 else "(%s)") % inner
        if type(x) is dict:
            return "{{%s}}" % ", ".join("%s: %s" % (dump(k), dump(v)) for k, v in x.items())
        if type(x) in (set, frozenset):
            inner = "{{%s}}" % ", ".join(dump(v) for v in x) if x else ""
            return ("set(%s)" if type(x) is set else "frozenset(%s)") % inner
        kind = type(x).__module__ + "." + type(x).__name__
        if kind.startswith("numpy.") and getattr(x, "shape", None) == () and hasattr(x, "item"):
            return dump(x.item())  # a numpy scalar crosses as the Python number it converts to
        if kind == "fractions.Fraction":
            return "Fraction(%d, %d)" % (x.numerator, x.denominator)
        if kind == "decimal.Decimal":
            return "Decimal(%r)" % str(x)
        return repr(x)
    reader, writer = os.fdopen(requests, "r"), os.fdopen(answers, "w")
    for line in reader:
        try:
            args, kwargs = ast.literal_eval(line)
            answer = ("ok", dump(globals()[name](*args, **kwargs)))
        except BaseException as e:
            answer = ("raise", type(e).__name__)
        writer.write(repr(answer) + "\n")
        writer.flush()
_barkit_serve({entry!r}, {requests}, {answers})
'''

HARNESS = r'''
import ast as _ast, builtins as _builtins, decimal as _decimal, fractions as _fractions, json as _json, os as _os
_requests, _answers = _os.fdopen({requests}, "w"), _os.fdopen({answers}, "r")
_CALLS = {{"float": float, "set": set, "frozenset": frozenset, "Fraction": _fractions.Fraction,
           "Decimal": _decimal.Decimal}}

def _value(node):
    if isinstance(node, _ast.Constant):
        return node.value
    if isinstance(node, (_ast.Tuple, _ast.List, _ast.Set)):
        items = [_value(n) for n in node.elts]
        return tuple(items) if isinstance(node, _ast.Tuple) else items if isinstance(node, _ast.List) else set(items)
    if isinstance(node, _ast.Dict):
        return {{_value(k): _value(v) for k, v in zip(node.keys, node.values)}}
    if isinstance(node, _ast.UnaryOp) and isinstance(node.op, (_ast.USub, _ast.UAdd)):
        inner = _value(node.operand)
        if type(inner) in (int, float, complex):
            return -inner if isinstance(node.op, _ast.USub) else inner
    if isinstance(node, _ast.BinOp) and isinstance(node.op, (_ast.Add, _ast.Sub)):
        left, right = _value(node.left), _value(node.right)
        if type(left) in (int, float) and type(right) is complex:
            return left + right if isinstance(node.op, _ast.Add) else left - right
    if (isinstance(node, _ast.Call) and isinstance(node.func, _ast.Name) and node.func.id in _CALLS
            and not node.keywords and len(node.args) <= 2):
        name, args = node.func.id, [_value(a) for a in node.args]
        kinds = [type(a) for a in args]
        if ((name == "float" and args and args[0] in ("inf", "-inf", "nan"))
                or (name in ("set", "frozenset") and len(args) <= 1)
                or (name == "Fraction" and kinds == [int, int] and args[1] != 0)
                or (name == "Decimal" and kinds == [str] and len(args[0]) <= 4300)):
            return _CALLS[name](*args)
    raise ValueError("the answer is not plain data")

def _call_under_test(*args, **kwargs):
    _requests.write(repr((args, kwargs)) + "\n")
    _requests.flush()
    line = _answers.readline()
    if not line:
        raise RuntimeError("the code under test stopped answering")
    kind, value = _ast.literal_eval(line)
    if kind == "ok":
        return _value(_ast.parse(value, mode="eval").body)
    error = getattr(_builtins, value, None) if isinstance(value, str) else None
    raise error() if isinstance(error, type) and issubclass(error, Exception) else RuntimeError(value)

_g = {{"__name__": "__main__", "__builtins__": _builtins}}
_passed = []
try:
    exec(compile({prefix!r}, "<prompt>", "exec"), _g)
    exec(compile({setup!r}, "<tests>", "exec"), _g)
    _g[{entry!r}] = _call_under_test
    if {param!r} is not None:
        _g[{param!r}] = _call_under_test
    _ready = True
except BaseException:
    _ready = False
for _src in {steps!r}:
    _ok = False
    if _ready:
        try:
            exec(compile(_src, "<tests>", "exec"), _g)
            _ok = True
        except BaseException:
            _ok = False
    _passed.append(_ok)
print({token!r} + _json.dumps(_passed))
'''


@dataclass(frozen=True)
class Verdict:
    """Per test step: passed or not (None: the harness itself failed, e.g. a timeout while waiting)."""

    passed: list[bool] | None

    def pass_rate(self, counted: list[int]) -> float:
        if not self.passed or not counted:
            return 0.0
        return sum(1 for i in counted if self.passed[i]) / len(counted)

    def all_passed(self) -> bool:
        """HumanEval's official verdict: every statement of the tests ran without an exception."""
        return bool(self.passed) and all(self.passed)


# Memory per sandbox (all its processes together where a memory cgroup is writable). HumanEval's official
# harness sets no cap; this one is printed under every code table.
MEMORY_MB = 1024


def programs(completion_code: str, prefix: str, setup: str, param: str | None, steps: list[str],
             entry: str) -> tuple[str, str, str]:
    """(trusted harness, untrusted program, report token)."""
    token = "BARKIT-VERDICT-" + secrets.token_hex(8) + " "
    harness = HARNESS.format(requests=CHANNEL[0], answers=CHANNEL[1], prefix=prefix, setup=setup, param=param,
                             entry=entry, steps=steps, token=token)
    server = SERVER.format(entry=entry, requests=CHANNEL[0], answers=CHANNEL[1])
    return harness, prefix + completion_code + server, token


def compiles(source: str) -> bool:
    """Whether Python would compile `source`; compiling runs none of it. Anything but a plain syntax error
    (a parser out of memory or recursion) counts as compiling, so the sandbox gives that verdict."""
    try:
        compile(source, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte in the source
        return False
    except Exception:  # noqa: BLE001 - MemoryError, RecursionError: let the sandbox decide
        return True
    return True


def verdict(completion_code: str, prefix: str, setup: str, param: str | None, steps: list[str], entry: str,
            timeout_s: float = 5.0) -> Verdict:
    """Run the tests against the completion as described in the module docstring.

    A program that does not compile fails every step without the two sandboxes (what they would report: its
    server never starts); most completions of models that cannot code are prose, and each pair costs ~50 ms.
    """
    harness, untrusted, token = programs(completion_code, prefix, setup, param, steps, entry)
    if not compiles(untrusted):
        return Verdict([False] * len(steps))
    trusted, _ = run_pair(harness, untrusted, timeout_s=timeout_s, memory_mb=MEMORY_MB)
    line = next((ln for ln in trusted.stdout.splitlines() if ln.startswith(token)), None)
    if line is None:
        return Verdict(None)
    passed = json.loads(line[len(token):])
    return Verdict(passed if isinstance(passed, list) and len(passed) == len(steps) else None)
