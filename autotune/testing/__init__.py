"""Test doubles shipped with autotune (like ``optuna.testing``): a fake engine that behaves like
``vllm serve`` for tests and demos. It is not vLLM."""
