"""Evaluation: verifiers (shared with RL rewards), the code sandbox, benchmark loaders."""
