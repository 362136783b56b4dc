"""Prometheus metrics, correct with one process or several (prometheus-client's multiprocess mode).

With `--metrics-port`, `/metrics` is served by `MetricsListener` on a port of its own (in the
supervisor with `--workers N`), and the public port no longer serves it.

With `--workers N` the supervisor sets `PROMETHEUS_MULTIPROC_DIR` before the workers start, so
each worker keeps its numbers in files there and `/metrics`, answered by any worker, adds up
every worker's files.
"""

from __future__ import annotations

import bisect
import functools
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from receiver.streams import LOGS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DELIVERIES = Counter("drain_deliveries", "Deliveries answered, by HTTP status", ["status"])
RECORDS_ACCEPTED = Counter(
    "drain_records_accepted", "Records (spans for traces) written by every sink, by stream", ["stream"]
)
RECORDS_REJECTED = Counter(
    "drain_records_rejected", "Records (spans for traces) kept aside as rejects, by stream", ["stream"]
)
DUPLICATES_DROPPED = Counter(
    "drain_duplicate_records_dropped", "Records dropped because their id was written recently"
)
RECEIVED_BYTES = Counter(
    "drain_received_bytes", "Delivery bytes, as sent (wire) and after gzip (decompressed)", ["stage"]
)
SIGNATURE_FAILURES = Counter(
    "drain_signature_failures", "Deliveries refused for a missing or wrong signature", ["reason"]
)
SINK_WRITE_ERRORS = Counter("drain_sink_write_errors", "Batches a sink could not write", ["sink"])
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_SECONDS = Histogram(
    "drain_request_duration_seconds",
    "Time from the request's start to the answer of a delivery",
    buckets=REQUEST_BUCKETS,
)
FSYNC_SECONDS = Histogram(
    "drain_fsync_duration_seconds",
    "With --fsync: time one group-commit round spent in fsync; its count is the rounds (one "
    "round makes many deliveries durable: compare with drain_deliveries_total)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
ACTIVE_FILE_BYTES = Gauge(
    "drain_active_file_bytes", "Bytes in the file sink's active files", multiprocess_mode="livesum"
)
COMPRESS_WAITING_FILES = Gauge(
    "drain_compress_waiting_files", "Rotated files of the file sink waiting to be compressed",
    multiprocess_mode="livesum",
)
LAST_WRITE_TIMESTAMP = Gauge(
    "drain_last_write_timestamp_seconds",
    "Unix time of the last batch every sink wrote",
    multiprocess_mode="max",
)
ARCHIVE_UPLOADED_BYTES = Counter("drain_archive_uploaded_bytes", "Bytes of finished files uploaded")
ARCHIVE_UPLOADED_OBJECTS = Counter("drain_archive_uploaded_objects", "Finished files uploaded")
ARCHIVE_UPLOAD_ERRORS = Counter("drain_archive_upload_errors", "Upload rounds that failed (retried)")
# Every worker's uploader sees every waiting file: the max, not the sum, is the number on disk.
ARCHIVE_WAITING_FILES = Gauge(
    "drain_archive_waiting_files", "Finished files waiting for upload", multiprocess_mode="livemax"
)
ARCHIVE_WAITING_BYTES = Gauge(
    "drain_archive_waiting_bytes", "Bytes of finished files waiting for upload", multiprocess_mode="livemax"
)
ARCHIVE_OLDEST_WAITING_SECONDS = Gauge(
    "drain_archive_oldest_waiting_seconds", "Age of the oldest finished file waiting for upload",
    multiprocess_mode="livemax",
)
ARCHIVE_LAST_SUCCESS_TIMESTAMP = Gauge(
    "drain_archive_last_success_timestamp_seconds", "Unix time of the last upload the store confirmed",
    multiprocess_mode="max",
)

# The hot path's own series, looked up once rather than per request.
WIRE_BYTES = RECEIVED_BYTES.labels("wire")
DECOMPRESSED_BYTES = RECEIVED_BYTES.labels("decompressed")


@functools.cache
def deliveries_with_status(status: int) -> Counter:
    return DELIVERIES.labels(status)


@functools.cache
def accepted_in(stream: str) -> Counter:
    return RECORDS_ACCEPTED.labels(stream)


@functools.cache
def rejected_in(stream: str) -> Counter:
    return RECORDS_REJECTED.labels(stream)


# Series that alerting rules compare over time exist from the start, at zero.
for _reason in ("missing", "invalid"):
    SIGNATURE_FAILURES.labels(_reason)
for _sink in ("stdout", "file"):
    SINK_WRITE_ERRORS.labels(_sink)
RECORDS_ACCEPTED.labels(LOGS)
RECORDS_REJECTED.labels(LOGS)


class Tally:
    """The hot path's numbers, added up in plain Python and handed to prometheus-client by
    `flush`, which every exposition calls first.

    prometheus-client's `inc`, `set` and `observe` each take a lock and run several Python
    calls (~10 us for a delivery's six, timeit on the bench machine, against ~3 us here).
    With `--workers N` other processes read this one's numbers from its files, so each
    delivery flushes at its end (`flush_if_shared`): the numbers are never behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Counter, float] = {}
        self._buckets = [0] * (len(REQUEST_BUCKETS) + 1)
        self._seconds = 0.0
        self._last_write: float | None = None
        self.shared = bool(os.environ.get(MULTIPROC_ENV))

    def add(self, counter: Counter, amount: float = 1) -> None:
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0) + amount

    def request_took(self, seconds: float) -> None:
        """`REQUEST_SECONDS.observe(seconds)`."""
        with self._lock:
            self._buckets[bisect.bisect_left(REQUEST_BUCKETS, seconds)] += 1
            self._seconds += seconds

    def wrote_at(self, timestamp: float) -> None:
        """`LAST_WRITE_TIMESTAMP.set(timestamp)`."""
        self._last_write = timestamp

    def flush_if_shared(self) -> None:
        if self.shared:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            buckets, self._buckets = self._buckets, [0] * len(self._buckets)
            seconds, self._seconds = self._seconds, 0.0
            last_write, self._last_write = self._last_write, None
        for counter, amount in counts.items():
            counter.inc(amount)
        if any(buckets):
            _add_to_histogram(REQUEST_SECONDS, buckets, seconds)
        if last_write is not None:
            LAST_WRITE_TIMESTAMP.set(last_write)


def _add_to_histogram(histogram: Histogram, buckets: list[int], total: float) -> None:
    """Many observations at once: prometheus-client has no public call for it, so this adds
    to the histogram's own bucket values (`tests/test_metrics_tally.py` checks the page)."""
    histogram._sum.inc(total)  # type: ignore[attr-defined]
    for value, count in zip(histogram._buckets, buckets, strict=True):  # type: ignore[attr-defined]
        if count:
            value.inc(count)


TALLY = Tally()


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type, for this process or for all worker processes."""
    TALLY.flush()
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class _MetricsHandler(BaseHTTPRequestHandler):
    server_version = "drain-receiver-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            self._answer(200, *exposition())
        else:
            body = orjson.dumps({"code": "not_found", "error": "this port serves only GET /metrics"})
            self._answer(404, body, "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged (the service's log is for events)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsListener:
    """`GET /metrics` on its own address, served by a background thread until `close`."""

    def __init__(self, host: str, port: int) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _MetricsHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
