"""``autotune tune --gpus 0,1,2,3``: one worker process per GPU (or per group of GPUs when the
engine needs tensor parallelism), all joining one study through its storage.

Each worker is what an operator would start by hand on another node: ``autotune tune`` with
``CUDA_VISIBLE_DEVICES`` pinned (``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so indices are NVML's) and
its own index (and so its own seed). Optuna shares the budget and the trials; the worker that
finishes the study saves the profile. Nothing is scheduled here.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path

from autotune import logs, paths
from autotune.app.options import TuneOptions
from autotune.engine.lease import lease_dir
from autotune.errors import UserError
from autotune.hardware import ENV_GPU, Hardware, device_count, parse_gpu_spec

log = logging.getLogger(__name__)

STOP_GRACE_S = 60.0


def parse_gpus(text: str, *, available: int | None) -> list[int]:
    """``all`` or ``0,1,2,3`` (ranges ``0-3`` too): NVML indices in PCI bus order."""
    text = text.strip().lower()
    if text == "all":
        if not available:
            raise UserError("--gpus all: no GPU found (NVML); list them, e.g. --gpus 0,1")
        return list(range(available))
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise UserError(f"--gpus {text!r}: expected all or indices such as 0,1,2,3 or 0-3")
        low, high = int(m[1]), int(m[2] or m[1])
        out += range(low, high + 1)
    if len(set(out)) != len(out) or not out:
        raise UserError(f"--gpus {text!r}: each GPU once")
    if available is not None and max(out) >= available:
        raise UserError(f"--gpus {text!r}: this machine has {available} GPU(s)")
    return out


def groups(devices: list[int], *, size: int) -> list[tuple[int, ...]]:
    """Consecutive groups of ``size`` GPUs, one engine each (a remainder is left idle)."""
    if size > len(devices):
        raise UserError(f"tensor parallel size {size}: --gpus gives only {len(devices)} GPU(s)")
    whole = len(devices) - len(devices) % size
    if whole < len(devices):
        log.info(f"GPUs {devices[whole:]} left idle: groups of {size}")
    return [tuple(devices[i : i + size]) for i in range(0, whole, size)]


def _machine(options: TuneOptions) -> Hardware | None:
    spec = options.gpu or os.environ.get(ENV_GPU)
    return parse_gpu_spec(spec, source="flag") if spec else None


def worker_options(options: TuneOptions, *, group: tuple[int, ...], storage: str) -> TuneOptions:
    """What a worker runs: the same request on its GPUs, on the shared storage."""
    gpu = options.gpu or os.environ.get(ENV_GPU)
    if gpu:  # NAME:GIB[xN] described the machine; a worker has its group
        hw = parse_gpu_spec(gpu, source="flag")
        gpu = f"{hw.gpu_name}:{hw.memory_gib:g}x{len(group)}"
    return replace(options, gpus=None, gpu=gpu, storage=storage, quiet=True)


def worker_env(group: tuple[int, ...], index: int) -> dict[str, str]:
    from autotune.search.workers.coordination import (
        ENV_WORKER_INDEX,  # Optuna: not on the serve path
    )

    return {
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, group)),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        ENV_WORKER_INDEX: str(index),
    }


def _watch_parent(parent: int) -> None:
    """A worker whose coordinator is gone stops cleanly (SIGTERM to itself)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _worker(options: TuneOptions, env: Mapping[str, str], parent: int, notes: bool) -> None:
    from autotune.app.worker import run_worker

    os.environ.update(env)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    label = f"[GPU {env['CUDA_VISIBLE_DEVICES']}]"
    if notes:  # the coordinator prints its notes: so does each worker, labelled
        logs.configure(prefix=f"autotune {label}")
    try:
        run_worker(options)
    except UserError as exc:
        print(f"autotune {label}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


@contextmanager
def gpu_leases(state: Path, devices: list[int]) -> Iterator[None]:
    """Hold each GPU of a ``--gpus`` run for as long as it runs (an exclusive ``flock`` on
    ``leases/gpu-N.lock`` in the state directory; the kernel drops it when the run dies). A
    second run on a held GPU refuses at once with one line: it does not wait."""
    directory = lease_dir(state)
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        for index in devices:
            f = stack.enter_context((directory / f"gpu-{index}.lock").open("a+"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "pid unknown"
                raise UserError(
                    f"--gpus: GPU {index} is held by another autotune run ({holder}); wait for "
                    "it to finish or choose other GPUs"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
        yield


def tune_on_gpus(options: TuneOptions, *, tensor_parallel: int) -> int:
    """Start one worker per GPU group, wait for all; the number that failed."""
    machine = _machine(options)
    available = device_count() or (machine.count if machine else None)
    devices = parse_gpus(options.gpus or "", available=available)
    state = paths.state_dir(options.state_dir)
    with gpu_leases(state, devices):
        return _run_workers(options, devices=devices, tensor_parallel=tensor_parallel)


def _run_workers(options: TuneOptions, *, devices: list[int], tensor_parallel: int) -> int:
    from autotune.search import study as st
    from autotune.search.workers.storage import rdb_storage

    plan = groups(devices, size=tensor_parallel)
    storage = st.storage_url(options.storage, state_dir=paths.state_dir(options.state_dir))
    rdb_storage(storage)  # the schema exists before the workers race to use it
    log.info(f"{len(plan)} workers on GPUs {', '.join(','.join(map(str, g)) for g in plan)}")
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    for index, group in enumerate(plan):
        opts = worker_options(options, group=group, storage=storage)
        started = ctx.Process(
            target=_worker,
            args=(opts, worker_env(group, index), os.getpid(), logs.configured()),
            daemon=False,
        )
        started.start()
        procs.append(started)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt as exc:  # Ctrl-C reaches the workers too; SIGTERM is passed on
        if "signal" in str(exc):
            for proc in procs:
                if proc.is_alive() and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        raise
    return sum(1 for p in procs if p.exitcode != 0)
