"""Kafka broker and Redis stopped and restarted under load."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from kdstream.api import ApiSettings, StoreServingService, create_app
from kdstream.stream._redis_store import RedisStore

from .scenarios import FaultCluster, scenario_kafka_restart, scenario_redis_restart


def test_broker_restart_loses_and_duplicates_nothing(
    fault_cluster: FaultCluster, prefix: str, log_dir: Path
) -> None:
    r = scenario_kafka_restart(fault_cluster, prefix, log_dir, down_s=4, rate=300)
    assert r.produced > 1000, r.as_dict()
    assert r.lost == 0 and r.duplicated == 0, r.as_dict()
    assert r.learned + r.dead_lettered == r.produced, r.as_dict()
    assert r.extra["unexpected"] == 0 and r.extra["producer_failed"] == 0


def _api_during_outage(redis_url: str) -> Any:
    def probe() -> dict[str, Any]:
        store = RedisStore(redis_url, retries=0, timeout_s=0.5)
        app = create_app(StoreServingService(store), ApiSettings())

        async def go() -> dict[str, Any]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                rec = await client.get("/v1/users/u7/recommendations")
                health = await client.get("/healthz")
            return {
                "rec_status": rec.status_code, "rec_body": rec.json(),
                "health_status": health.status_code, "health_body": health.json(),
            }

        try:
            return asyncio.run(go())
        finally:
            store.close()

    return probe


def test_redis_restart_processor_retries_and_api_answers_503(
    fault_cluster: FaultCluster, prefix: str, log_dir: Path
) -> None:
    r = scenario_redis_restart(
        fault_cluster, prefix, log_dir, down_s=5, rate=300,
        during_outage=_api_during_outage(fault_cluster.redis_url),
    )
    assert r.lost == 0 and r.duplicated == 0, r.as_dict()
    assert r.learned + r.dead_lettered == r.produced, r.as_dict()
    assert r.extra["processor_survived"], r.as_dict()  # paused and retried, did not exit
    assert r.extra["retry_log_lines"] > 0  # said so in its log
    outage = r.extra["outage"]
    assert outage["rec_status"] == 503, outage
    assert outage["rec_body"]["error"] == "unavailable" and "Redis" in outage["rec_body"]["message"]
    assert outage["health_status"] == 503 and outage["health_body"]["status"] == "down"
