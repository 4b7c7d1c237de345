"""autotune: find the best vLLM configuration for a model on a GPU, prove it under load, serve it.

The package never imports torch or vllm: vLLM is launched as a process. Optuna is imported
only by the tuning path, so ``autotune --help`` and ``autotune serve`` stay light.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
