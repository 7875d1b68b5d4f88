"""Scenario 6: a slow Redis and a slow teacher — back-pressure, bounded memory (small counts).

RSS margins: once warm, neither process holds anything that grows with the stream. The
processor's state is sized by the load's users and items (500 x 300, dim 16: < 1 MiB), a batch
is ``batch_size`` records and kafka-python prefetches at most one fetch per partition; the
backlog waits in Kafka. So its later peak may exceed its earlier one only by allocator noise:
8 MiB (measured: +1.5 MiB at most). The teacher's window is capped (5,000 events) and its model
fixed; a later refresh may still touch a little more of torch's allocator caches than the
first: 64 MiB on ~730 MiB (measured: +8.5 MiB).
"""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import redis

from .delay_proxy import DelayProxy
from .scenarios import FaultCluster
from .slow import scenario_slow_redis, scenario_slow_teacher

PROCESSOR_RSS_MARGIN_MB = 8.0
TEACHER_RSS_MARGIN_MB = 64.0


def _clean_ledger(x: dict[str, object]) -> None:
    assert x["lost"] == 0 and x["duplicated"] == 0, x
    assert x["learned"] + x["dead_lettered"] == x["produced"], x  # type: ignore[operator]
    assert x["unexpected"] == 0 and x["producer_failed"] == 0, x


def test_delay_proxy_delays_each_round_trip_and_switches_off(
    fault_cluster: FaultCluster,
) -> None:
    with DelayProxy("127.0.0.1", fault_cluster.cfg.redis_port, delay_s=0.05) as proxy:
        client = redis.Redis(port=proxy.port)
        start = time.monotonic()
        for _ in range(4):
            assert client.ping()
        slow = time.monotonic() - start
        proxy.delay_s = 0.0
        client.set("delay-proxy-check", b"x" * 200_000)  # a value spanning many chunks
        assert client.get("delay-proxy-check") == b"x" * 200_000
        client.close()
    # a sleep only ever makes it slower: 4 round trips cost at least 4 x 2 x 50 ms
    assert slow >= 0.4, slow
    with socket.socket() as s:  # closed: connections are refused
        assert s.connect_ex(("127.0.0.1", proxy.port)) != 0


def test_slow_redis_backpressure_bounded_memory_and_drain(
    fault_cluster: FaultCluster, prefix: str, log_dir: Path
) -> None:
    r = scenario_slow_redis(fault_cluster, prefix, log_dir, delay_s=0.025, slow_s=12, rate=300)
    x = r.as_dict()
    _clean_ledger(x)
    assert x["processor_survived"], x
    assert x["applied_during_slow"] > 0, x  # kept learning, slower
    assert x["lag_at_delay_off"] > x["lag_start_slow"], x  # the backlog grew (in Kafka)
    assert math.isfinite(r.recovery_s), x  # and drained once Redis was fast again
    assert x["lag_end"] < x["lag_at_delay_off"], x
    assert (x["rss_slow_second_half_peak_mb"]
            <= x["rss_slow_first_half_peak_mb"] + PROCESSOR_RSS_MARGIN_MB), x


def test_slow_teacher_never_holds_the_stream_back(
    fault_cluster: FaultCluster, prefix: str, log_dir: Path
) -> None:
    r = scenario_slow_teacher(fault_cluster, prefix, log_dir, fit_delay_s=3.0, versions=2,
                              rate=300)
    x = r.as_dict()
    _clean_ledger(x)
    assert x["slow_fits"] >= 2 and x["teacher_versions"] >= 2, x  # slow, but it published
    assert x["soft_labels_applied"] > 0, x  # and its labels reached the student
    # while no new labels came, the processor learned about as fast as events were produced
    assert x["produced_without_new_labels"] > 0, x
    assert x["applied_without_new_labels"] >= 0.5 * x["produced_without_new_labels"], x
    assert (x["processor_rss_second_half_peak_mb"]
            <= x["processor_rss_first_half_peak_mb"] + PROCESSOR_RSS_MARGIN_MB), x
    assert x["teacher_rss_later_peak_mb"] > 0, x
    assert (x["teacher_rss_later_peak_mb"]
            <= x["teacher_rss_first_refresh_peak_mb"] + TEACHER_RSS_MARGIN_MB), x
