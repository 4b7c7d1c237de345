"""Click options for what "best" means: objective, SLOs, memory budget, repeats, soak, stopping."""

from __future__ import annotations

from pathlib import Path

import click

from autotune.cli.options import options
from autotune.cli.params import finite_text, floats, ints

goals = options(
    click.option(
        "--objective",
        type=click.Choice(["throughput", "goodput", "memory", "pareto", "capacity"]),
        default="throughput",
        show_default=True,
        help="throughput: output tok/s; goodput: requests/s meeting the SLOs; memory: the "
        "smallest reservation above --min-throughput; pareto: throughput against memory; "
        "capacity: the highest request rate whose percentiles meet every --slo (searched on "
        "each running engine; --num-prompts requests per rate step).",
    ),
    click.option(
        "--slo",
        "slos",
        multiple=True,
        metavar="NAME=MS",
        callback=finite_text,
        help="Latency limit (repeatable): ttft_p95_ms, tpot_p95_ms, itl_p99_ms, e2e_p99_ms "
        "(and the p95/p99 of each); a trial that misses one is infeasible.",
    ),
    click.option(
        "--min-throughput",
        type=floats("min_throughput"),
        help="Output tok/s floor (needed by --objective memory).",
    ),
    click.option(
        "--memory-budget",
        metavar="FRACTION|GIB",
        callback=finite_text,
        help="Never reserve more GPU memory than this (0.6, or 18GiB).",
    ),
    click.option(
        "--concurrency", type=ints("concurrency"), help="Requests in flight at most [all]."
    ),
    click.option(
        "--request-rate",
        type=floats("request_rate", min_open=True),
        help="Poisson arrivals per second instead of all at once.",
    ),
    click.option(
        "--burstiness",
        type=floats("burstiness", min_open=True),
        default=1.0,
        show_default=True,
        help="Gamma shape of the gaps between arrivals at --request-rate: 1 is Poisson, "
        "below 1 burstier, above 1 steadier (as vllm bench serve).",
    ),
    click.option(
        "--ramp-up",
        metavar="SECONDS",
        type=floats("ramp_up_s"),
        default=0.0,
        help="Raise the arrival rate linearly from 0 to --request-rate over this many seconds.",
    ),
    click.option(
        "--trace",
        metavar="FILE.jsonl",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Replay a JSONL trace: its rows are the requests (as --dataset), each sent at its "
        "'timestamp' (seconds); --num-prompts defaults to its row count.",
    ),
    click.option(
        "--trace-speed",
        type=floats("trace_speed", min_open=True),
        default=1.0,
        show_default=True,
        help="Replay the trace this many times faster (2: half the gaps).",
    ),
    click.option(
        "--warmup",
        type=ints("warmup"),
        default=0,
        show_default=True,
        help="Requests sent before the measured ones, not measured.",
    ),
    click.option(
        "--repeats",
        type=ints("repeats"),
        default=3,
        show_default=True,
        help="Most measurements of a finalist (1: no re-measurement): each is launched again "
        "once, and up to this many times while its runs differ by more than --noise; the "
        "launches count against --trials.",
    ),
    click.option(
        "--finalists",
        type=ints("finalists"),
        default=4,
        show_default=True,
        help="How many of the best are re-measured.",
    ),
    click.option(
        "--statistic",
        type=click.Choice(["worst", "median"]),
        default="median",
        show_default=True,
        help="How repeats are summarised before choosing.",
    ),
    click.option("--no-soak", is_flag=True, help="Skip the worst-case load run of the winner."),
    click.option("--no-prune", is_flag=True, help="Never stop a clearly worse benchmark early."),
    click.option(
        "--patience",
        type=ints("patience"),
        default=0,
        show_default=True,
        help="Stop after this many launches without improving by --min-improvement (0: never).",
    ),
    click.option(
        "--min-improvement",
        type=floats("min_improvement"),
        default=0.01,
        show_default=True,
        help="What counts as an improvement for --patience (a share of the best).",
    ),
)
