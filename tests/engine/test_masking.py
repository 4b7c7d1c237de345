"""Secret masking: URL passwords, the forms in which vLLM prints a secret flag's value, the
values the user passed, and autotune's own log lines."""

from __future__ import annotations

import logging

import pytest

from autotune import logs
from autotune.engine.safety import api_key, redact, redact_url, strip_secrets
from autotune.masking import mask, remember_args, secret_values


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://autotune:s3cret@db:5432/studies", "postgresql://autotune:***@db:5432/studies"),
        ("postgresql://:s3cret@db/studies", "postgresql://:***@db/studies"),
        ("postgresql://u:p@ss@db/studies", "postgresql://u:***@db/studies"),
        ("postgresql://u:p/s#x@db/studies", "postgresql://u:***@db/studies"),
        ("postgresql://u@db/s?password=s3cret&sslmode=require",
         "postgresql://u@db/s?password=***&sslmode=require"),
        ("mysql://u@db/s?sslkey=/k.pem&api_token=tok1", "mysql://u@db/s?sslkey=/k.pem&api_token=***"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("http://127.0.0.1:8000/v1/models", "http://127.0.0.1:8000/v1/models"),
    ],
)  # fmt: skip
def test_passwords_leave_urls(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(f"cannot open {url} (refused)") == f"cannot open {shown} (refused)"


@pytest.mark.parametrize(
    "line",
    [
        "non-default args: {'model_tag': 'm', 'api_key': ['SEKRIT'], 'max_num_seqs': 8}",
        "non-default args: {'api_key': ['other', 'SEKRIT']}",
        "Namespace(api_key='SEKRIT', hf_token=None, tokenizer='t')",
        'config: {"hf_token": "SEKRIT", "password": null}',
        "vllm serve: error: unrecognized arguments: --hf-token=SEKRIT",
        "vllm serve: error: unrecognized arguments: --hf-token SEKRIT --seed 1",
        "headers: Authorization: Bearer SEKRIT",
        "HF_TOKEN=SEKRIT python -m vllm",
        "api_key= Namespace(api_key='SEKRIT')",  # a value swallowing the next name
        "token: --api-key SEKRIT",
        "postgresql://u@db/s?password=api_key='SEKRIT'",
    ],
)
def test_what_vllm_prints_for_a_secret_flag_is_masked(line: str) -> None:
    """Masked by its name even when autotune never saw the value."""
    assert "SEKRIT" not in mask(line) and "***" in mask(line)


def test_ordinary_text_is_left_alone() -> None:
    line = (
        "non-default args: {'max_num_batched_tokens': 8192, 'ssl_keyfile': 'k.pem', "
        "'tokenizer': 't'} KeyError: 'model_type' GPU KV cache size: 12,345 tokens"
    )
    assert mask(line) == line


def test_user_secrets_are_masked_wherever_they_appear() -> None:
    args = ["vllm", "serve", "m", "--api-key", "key-one", "key-two", "--hf-token=hf-tok", "--seed"]
    assert secret_values(args) == ["key-one", "key-two", "hf-tok"]
    assert redact(args) == ["vllm", "serve", "m", "--api-key", "***", "***", "--hf-token=***",
                            "--seed"]  # fmt: skip
    assert strip_secrets(args) == ["vllm", "serve", "m", "--seed"]
    assert "key-two" not in mask("401 for key-two", values=secret_values(args))
    assert mask("the value 1 stays", values=["1"]) == "the value 1 stays"  # too short to hunt
    assert mask("--api-key 1") == "--api-key ***"  # ... but not next to its flag


def test_api_key_the_engine_demands() -> None:
    assert api_key(["--seed", "1"], {}) is None
    assert api_key(["--api-key", "a", "b"], {}) == "a"
    assert api_key(["--api-key=a", "--api-key", "c"], {}) == "c"
    assert api_key([], {"VLLM_API_KEY": "env"}) == "env"


def test_autotune_log_lines_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    remember_args(["--api-key", "remembered-key-42"])
    logger = logging.getLogger("autotune")
    handlers, level = list(logger.handlers), logger.level
    logs.configure()
    try:
        logging.getLogger("autotune.test").warning("engine said remembered-key-42, api_key='zz'")
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    err = capsys.readouterr().err
    assert "remembered-key-42" not in err and "zz" not in err and "engine said ***" in err
