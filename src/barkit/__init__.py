"""barkit: modular post-training of language models with Branch-Adapt-Route (BAR)."""

__version__ = "0.1.0"
