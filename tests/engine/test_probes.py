"""``/metrics`` probes: vLLM's Prometheus text parsed, and the background poll that keeps the peak
KV-cache usage and the most requests waiting and running while a benchmark runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from autotune.engine.probes import (
    EngineStats,
    PeakLoad,
    hit_rate,
    parse_metrics,
    preemptions,
    prefix_cache_counts,
    scrape,
)

pytestmark = pytest.mark.timeout(30)

# vLLM 0.33 (prometheus_client): HELP/TYPE lines, counters with _total and _created, two engines
# (data parallel), a histogram, a label value with a brace and a space in it.
V033 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="org/m {x}"} 12.0
vllm:num_requests_running{engine="1",model_name="org/m {x}"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="org/m {x}"} 3.0
vllm:num_requests_waiting{engine="1",model_name="org/m {x}"} 0.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="org/m {x}",reason="capacity"} 99.0
# HELP vllm:kv_cache_usage_perc KV-Cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="org/m {x}"} 0.4375
vllm:kv_cache_usage_perc{engine="1",model_name="org/m {x}"} 0.8125
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="org/m {x}"} 5.0
vllm:num_preemptions_total{engine="1",model_name="org/m {x}"} 2.0
vllm:num_preemptions_created{engine="0",model_name="org/m {x}"} 1.7e+09
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="org/m {x}"} 4.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="org/m {x}"} NaN
"""

# vLLM 0.10/0.11: the KV usage under its older name, and one engine.
OLD = """\
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:num_preemptions_total{engine="0",model_name="m"} 0.0
"""


def test_vllm_033_metrics() -> None:
    stats = parse_metrics(V033)
    assert stats == EngineStats(
        preemptions=7, kv_cache_usage=0.8125, requests_waiting=3, requests_running=19
    )  # counts summed over engines; the KV usage of the fullest engine


def test_the_older_kv_usage_name_and_missing_metrics() -> None:
    assert parse_metrics(OLD) == EngineStats(
        preemptions=0, kv_cache_usage=0.25, requests_waiting=0, requests_running=2
    )
    both = OLD + 'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
    assert parse_metrics(both).kv_cache_usage == 0.5  # the current name wins
    assert parse_metrics("") == EngineStats()
    assert parse_metrics("# nothing\nother_metric 1.0\n") == EngineStats()
    unlabelled = "vllm:num_preemptions 4\nvllm:kv_cache_usage_perc NaN\n"
    assert parse_metrics(unlabelled) == EngineStats(preemptions=4)


class Metrics:
    """A ``/metrics`` endpoint whose text the test sets; counts the reads."""

    def __init__(self) -> None:
        self.text = ""
        self.reads = 0
        self.changed = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.reads += 1
                owner.changed.set()
                body = owner.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, *, usage: float, waiting: int, running: int, preempted: int = 0) -> None:
        self.text = (
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {usage}\n'
            f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}\n'
            f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}\n'
            f'vllm:num_preemptions_total{{engine="0",model_name="m"}} {preempted}\n'
        )

    def wait_reads(self, n: int) -> None:
        target = self.reads + n
        while self.reads < target:
            assert self.changed.wait(10), "no /metrics read"
            self.changed.clear()


@pytest.fixture
def endpoint() -> Iterator[Metrics]:
    m = Metrics()
    thread = threading.Thread(target=m.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield m
    m.server.shutdown()
    m.server.server_close()


def pollers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "peak-load"]


def test_peaks_while_entered_and_no_thread_left(endpoint: Metrics) -> None:
    endpoint.set(usage=0.1, waiting=0, running=1, preempted=3)
    assert scrape(endpoint.url) == EngineStats(3, 0.1, 0, 1)
    assert preemptions(endpoint.url) == 3
    with PeakLoad(endpoint.url, interval_s=0.01) as load:
        endpoint.wait_reads(2)
        endpoint.set(usage=0.9, waiting=5, running=8)
        endpoint.wait_reads(2)
        endpoint.set(usage=0.4, waiting=1, running=16)
        endpoint.wait_reads(2)
        assert len(pollers()) == 1
    assert pollers() == []  # stopped and joined on exit
    assert load.kv_cache_usage_pct == 90.0
    assert (load.requests_waiting, load.requests_running) == (5, 16)
    assert load.samples >= 6


def test_stopped_on_an_exception_too(endpoint: Metrics) -> None:
    endpoint.set(usage=0.5, waiting=0, running=2)
    with pytest.raises(KeyboardInterrupt), PeakLoad(endpoint.url, interval_s=0.01):
        endpoint.wait_reads(1)
        raise KeyboardInterrupt
    assert pollers() == []


def test_nothing_read_is_none() -> None:
    with PeakLoad("http://127.0.0.1:9", interval_s=0.01, timeout_s=0.5) as load:  # nobody there
        threading.Event().wait(0.05)
    assert pollers() == []
    assert load.samples == 0
    assert (load.kv_cache_usage_pct, load.requests_waiting, load.requests_running) == (None,) * 3
    assert scrape("http://127.0.0.1:9", timeout_s=0.5) is None
    assert preemptions("http://127.0.0.1:9") is None


# vLLM 0.32/0.33: the prefix-cache counters (tokens), with their _created gauges, two engines.
PREFIX = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 4096.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 1024.0
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7962167366929336e+09
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 2304.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 256.0
vllm:external_prefix_cache_hits_total{engine="0",model_name="m"} 77.0
"""


def test_prefix_cache_counters_summed_over_engines(endpoint: Metrics) -> None:
    stats = parse_metrics(PREFIX)
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (5120.0, 2560.0)
    assert parse_metrics(V033).prefix_cache_queries is None  # not shown: None, not 0
    endpoint.text = PREFIX
    assert prefix_cache_counts(endpoint.url) == (5120.0, 2560.0)
    endpoint.text = PREFIX.split("# TYPE vllm:prefix_cache_hits_total")[0]  # queries alone
    assert prefix_cache_counts(endpoint.url) is None
    assert prefix_cache_counts("http://127.0.0.1:9") is None


def test_hit_rate_between_two_reads() -> None:
    assert hit_rate(before=(100.0, 10.0), after=(500.0, 310.0)) == 0.75
    assert hit_rate(before=(0.0, 0.0), after=(0.0, 0.0)) is None  # nothing looked up (caching off)
    assert hit_rate(before=None, after=(5.0, 1.0)) is None
    assert hit_rate(before=(5.0, 1.0), after=None) is None
    assert hit_rate(before=(900.0, 800.0), after=(100.0, 10.0)) is None  # counters reset: unknown
