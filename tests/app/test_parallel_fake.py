"""``tune`` and ``serve`` agree on the engine's GPUs (``autotune.app.parallel``), against the fake
engine as a real process on simulated 80 GiB GPUs: a 70B FP8 model (weights 85% of one GPU) is
tuned and served on one GPU; a 70B bf16 model on two, and ``serve`` finds that profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAKE_CMD, LLAMA_70B, LLAMA_70B_FP8, run_autotune, write_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ARGS = [
    "--gpu", "H100:80", "--gpu-memory-utilization", "0.96",
    "--max-num-seqs", "8:32", "--max-num-batched-tokens", "512:2048", "--max-model-len", "4096",
    "--input-len", "128", "--output-len", "16", "--num-prompts", "16",
    "--vllm-cmd", FAKE_CMD,
]  # fmt: skip
TUNE = ["--trials", "2", "--repeats", "1", "--no-soak", "--quiet"]
FAKE = {
    "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "80",
    "AUTOTUNE_FAKE_STARTUP_S": "0.3",
    "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
}


def autotune(*args: str, **env: str) -> tuple[int, str, str]:
    done = run_autotune(*args, env={**FAKE, **env}, timeout=150)
    return done.returncode, done.stdout, done.stderr


def the_profile() -> tuple[Path, dict[str, object]]:
    (path,) = Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    return path, yaml.safe_load(path.read_text())


def first_lines(state: Path) -> list[str]:
    return [log.read_text().splitlines()[0] for log in sorted(state.rglob("trial-*.log"))]


def test_fp8_70b_is_tuned_and_served_on_one_h100(tmp_path: Path) -> None:
    """The fake's weights are what autotune estimates for the checkpoint (67.7 GiB): 85% of the
    GPU, so the old 80% share sent ``serve`` to two GPUs and past the profile ``tune`` saved."""
    model = write_model(tmp_path / "llama-70b-fp8", LLAMA_70B_FP8)
    weights = {"AUTOTUNE_FAKE_WEIGHTS_GIB": "67.7"}
    rc, _, err = autotune("tune", str(model), *ARGS, *TUNE, **weights)
    assert rc == 0, err
    assert "tensor-parallel-size" not in err and "GPUs per engine" not in err
    lines = first_lines(Path(os.environ["AUTOTUNE_STATE_DIR"]))
    assert lines and not [line for line in lines if "--tensor-parallel-size" in line]
    path, profile = the_profile()
    assert profile["hardware"]["key"].endswith("-x1")  # type: ignore[index]
    assert profile["parallel"]["tensor_parallel_size"] == 1  # type: ignore[index]

    rc, out, err = autotune("serve", str(model), *ARGS, "--dry-run", **weights)
    assert rc == 0, err
    assert f"using profile {path}" in err and "no profile for" not in err
    assert f" serve {model} " in out
    assert "--tensor-parallel-size" not in out and "--max-model-len 4096" in out
    # The profile is evidence that one GPU fits: found even where the memory model alone would
    # now say two (a 131072-token request), and by the read-only views.
    rc, out, err = autotune("serve", str(model), *ARGS, "--dry-run", "--min-model-len", "131072",
                            **weights)  # fmt: skip
    assert rc == 0, err
    assert f"using profile {path}" in err and "--tensor-parallel-size" not in out
    # vLLM's --gpu-memory-utilization given to serve caps the profile's reservation: a miss.
    low = [*ARGS, "--dry-run", "--no-tune"]
    low[low.index("0.96")] = "0.85"
    rc, out, err = autotune("serve", str(model), *low, **weights)
    assert rc == 2 and out == "" and "gpu_memory_utilization <= 0.85" in err, err
    rc, out, err = autotune("profiles", "show", str(model), "--gpu", "H100:80", "--json",
                            "--vllm-cmd", FAKE_CMD)  # fmt: skip
    assert rc == 0, err
    assert '"key": "h100-80gib-x1"' in out


def test_bf16_70b_gets_two_gpus_in_tune_and_serve(tmp_path: Path) -> None:
    """131 GiB of weights: ``tune`` (no ``--gpus``) says so in one line and launches every trial
    with ``--tensor-parallel-size 2``; the profile is keyed ``-x2`` and ``serve`` finds it."""
    model = write_model(tmp_path / "llama-70b", LLAMA_70B)
    rc, _, err = autotune("tune", str(model), *ARGS, *TUNE)
    assert rc == 0, err
    said = [line for line in err.splitlines() if "GPUs per engine" in line]
    assert len(said) == 1 and "--tensor-parallel-size 2, 2 GPUs per engine" in said[0], err
    assert "one H100 cannot hold the weights (131.4 GiB)" in said[0]
    lines = first_lines(Path(os.environ["AUTOTUNE_STATE_DIR"]))
    assert lines and all(line.endswith("--tensor-parallel-size 2") for line in lines), lines
    path, profile = the_profile()
    assert profile["hardware"]["key"] == "h100-80gib-x2"  # type: ignore[index]
    assert profile["parallel"]["tensor_parallel_size"] == 2  # type: ignore[index]

    rc, out, err = autotune("serve", str(model), *ARGS, "--dry-run")
    assert rc == 0, err
    assert f"using profile {path}" in err and "2 x H100" in err
    assert out.rstrip().endswith("--tensor-parallel-size 2")
    assert out.count("--tensor-parallel-size") == 1
