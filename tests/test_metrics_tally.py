"""The hot path's tally: what it adds up reaches the metrics page exactly, buckets included."""

from __future__ import annotations

from prometheus_client import REGISTRY

from receiver import metrics

HISTOGRAM = "drain_request_duration_seconds"


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_tallied_numbers_reach_the_page_on_exposition() -> None:
    before_count = sample(f"{HISTOGRAM}_count")
    before_sum = sample(f"{HISTOGRAM}_sum")
    before_le_1ms = sample(f"{HISTOGRAM}_bucket", {"le": "0.001"})
    before_le_5ms = sample(f"{HISTOGRAM}_bucket", {"le": "0.005"})
    before_inf = sample(f"{HISTOGRAM}_bucket", {"le": "+Inf"})
    before_ok = sample("drain_deliveries_total", {"status": "299"})
    before_wire = sample("drain_received_bytes_total", {"stage": "wire"})

    tally = metrics.TALLY
    for seconds in (0.0005, 0.001, 0.004, 0.3, 20.0):
        tally.request_took(seconds)
    tally.add(metrics.deliveries_with_status(299), 3)
    tally.add(metrics.WIRE_BYTES, 1234)
    tally.wrote_at(1_700_000_000.5)
    assert sample("drain_deliveries_total", {"status": "299"}) == before_ok, "held until flushed"

    page, _ = metrics.exposition()
    text = page.decode()
    assert 'drain_deliveries_total{status="299"} 3.0' in text
    assert sample(f"{HISTOGRAM}_count") == before_count + 5
    assert abs(sample(f"{HISTOGRAM}_sum") - before_sum - 20.3055) < 1e-9
    assert sample(f"{HISTOGRAM}_bucket", {"le": "0.001"}) == before_le_1ms + 2  # 0.001 is <= 0.001
    assert sample(f"{HISTOGRAM}_bucket", {"le": "0.005"}) == before_le_5ms + 3
    assert sample(f"{HISTOGRAM}_bucket", {"le": "+Inf"}) == before_inf + 5
    assert sample("drain_received_bytes_total", {"stage": "wire"}) == before_wire + 1234
    assert sample("drain_last_write_timestamp_seconds") == 1_700_000_000.5

    metrics.exposition()
    assert sample(f"{HISTOGRAM}_count") == before_count + 5, "a second flush adds nothing"
