"""The toy world and the experiments run on it: a seeded miniature (data, tokenizer, base, anchor), the
recipe budgets sized for 2 CPU cores, the end-to-end demo and the baselines.

This package sits on top of the library (surgery, training, evaluation) and is the only place that knows
the toy world; the library works on any local Hugging Face checkpoint.
"""
