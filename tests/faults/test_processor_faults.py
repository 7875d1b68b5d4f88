"""Processor crashes under load: SIGKILL at random points, and a kill mid-rebalance."""

from __future__ import annotations

from pathlib import Path

from .scenarios import FaultCluster, scenario_kill_mid_rebalance, scenario_processor_kills


def test_sigkilled_processor_restarted_three_times_loses_and_duplicates_nothing(
    fault_cluster: FaultCluster, prefix: str, log_dir: Path
) -> None:
    r = scenario_processor_kills(fault_cluster, prefix, log_dir, kills=3, rate=300)
    assert r.produced > 1000, r
    assert r.lost == 0 and r.duplicated == 0, r.as_dict()
    assert r.learned + r.dead_lettered == r.produced, r.as_dict()
    assert r.extra["unexpected"] == 0 and r.extra["learned_counter"] == r.learned
    assert r.dead_lettered > 0  # the malformed records went to the DLQ, not nowhere


def test_processor_killed_mid_rebalance_loses_and_duplicates_nothing(
    fault_cluster: FaultCluster, prefix: str, log_dir: Path
) -> None:
    r = scenario_kill_mid_rebalance(fault_cluster, prefix, log_dir, rate=300)
    assert r.lost == 0 and r.duplicated == 0, r.as_dict()
    assert r.learned + r.dead_lettered == r.produced, r.as_dict()
    assert r.extra["unexpected"] == 0
    assert all(n > 0 for n in r.extra["learned_by_survivors"]), r.as_dict()
