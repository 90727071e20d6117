"""`barkit eval --engine vllm` gives the same completions, hence the same scores, as the HF engine (greedy)."""

from barkit.config import load_config
from barkit.eval.harness import EvalConfig, evaluate

PROMPTS = ["the quick brown", "1 + 2 =", "def f(x):", "the lazy dog jumps", "fox", "over the", "3 = 1 +", "return x"]


def test_eval_with_vllm_equals_eval_with_hf(tmp_path, family_ckpts, write_jsonl):
    suite = write_jsonl(tmp_path / "suite.jsonl", [
        {"id": f"q{i}", "category": "knowledge", "benchmark": "tiny", "verifier": "exact_match", "answer": "fox",
         "messages": [{"role": "user", "content": p}]} for i, p in enumerate(PROMPTS)])
    results = {}
    for engine in ("hf", "vllm"):
        cfg = load_config(EvalConfig, values={"model": str(family_ckpts["flexolmo-5x"]), "suite": suite,
                                              "engine": engine, "max_new_tokens": 12, "routing": False,
                                              "out": str(tmp_path / engine)})
        results[engine] = evaluate(cfg, show_progress=False)
    hf, vllm = ({it["id"]: it["completions"] for it in results[e]["items"]} for e in ("hf", "vllm"))
    assert vllm == hf and any(c[0] for c in hf.values())  # non-empty, identical text
    assert results["vllm"]["categories"] == results["hf"]["categories"]
