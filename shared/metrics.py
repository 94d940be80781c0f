"""Prometheus metrics: what each process counts.

Every process exposes its own figures (ingest, query and admin at ``/metrics`` on their port,
the worker on ``SEGMENTS_WORKER_METRICS_PORT``); a process counts only what it did itself,
since it started. Admin's ``/metrics`` adds the deployment's state read from PostgreSQL and
Redis at scrape time (:mod:`shared.backlog`: inbox depth and lag, dead letters, recomputes,
webhook backlog, cache drift), so that those figures are there while the worker is down.

HTTP requests are observed by :mod:`shared.http_metrics`, which also serves ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# -- HTTP services: segments_http_requests_total and segments_http_request_duration_seconds
# are shared.http_metrics.RequestTallies (cheaper per request than a Counter and a Histogram)

# -- the query service's Redis cache ---------------------------------------------------------

CACHE_HITS = Counter(
    "segments_cache_hits",
    "Membership reads answered from a complete Redis set (query service)",
)
CACHE_MISSES = Counter(
    "segments_cache_misses",
    "Membership reads answered from PostgreSQL (no complete Redis set, or Redis down)",
)
CACHE_REFILLS = Counter(
    "segments_cache_refills",
    "Redis membership sets written back after a miss (query service)",
)

# -- worker ----------------------------------------------------------------------------------

INBOX_ROWS = Counter(
    "segments_worker_inbox_rows",
    "Inbox rows the worker consumed (applied, duplicates and dead letters)",
)
DEAD_LETTERS = Counter(
    "segments_worker_dead_letters",
    "Inbox rows the worker could not apply and moved to dead_letters",
)
DRAIN_ROUNDS = Counter("segments_worker_drain_rounds", "Inbox batches applied (transactions)")
RECOMPUTE_DURATION = Histogram(
    "segments_recompute_duration_seconds",
    "Bulk recomputes by outcome: done, retry (failed, tried again later), failed (for good), "
    "skipped (busy elsewhere or requested again)",
    ["outcome"],
    buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)
RECOMPUTES_RUNNING = Gauge("segments_recomputes_running", "Bulk recomputes this worker runs now")
WEBHOOK_DELIVERIES = Counter(
    "segments_webhook_deliveries",
    "Webhook delivery attempts by result: delivered (2xx), failed (retried later), "
    "gave_up (the last attempt failed)",
    ["result"],
)
CACHE_DRIFT_REPAIRS = Counter(
    "segments_cache_drift_repairs",
    "Redis membership sets the worker's verifier found disagreeing with PostgreSQL and rewrote",
)
CACHE_OUTBOX_SWEPT = Counter(
    "segments_cache_outbox_swept",
    "Cache outbox notes the sweeper finished because their writer did not (died, Redis failed)",
)


# -- the deployment's state (admin's /metrics, read at scrape time: shared.backlog) ---------

INBOX_DEPTH = Gauge(
    "segments_inbox_depth",
    "Inbox rows waiting for the worker (exact up to 10,000, then PostgreSQL's estimate)",
)
INBOX_LAG = Gauge(
    "segments_inbox_lag_seconds", "Age of the oldest inbox row (0: empty): the worker's lag"
)
DEAD_LETTERS_KEPT = Gauge("segments_dead_letters", "Rows in dead_letters (counted up to 10,001)")
DEAD_LETTERS_DAY = Gauge("segments_dead_letters_last_day", "Dead letters of the last 24 hours")
RECOMPUTES_QUEUED = Gauge("segments_recomputes_queued", "Segments computing (queued or running)")
RECOMPUTES_FAILED = Gauge("segments_recomputes_failed", "Segments whose recompute failed for good")
RECOMPUTE_LONGEST = Gauge(
    "segments_recompute_longest_seconds", "How long the longest running recompute has run"
)
WEBHOOKS_PENDING = Gauge("segments_webhook_deliveries_pending", "Webhook deliveries not yet sent")
WEBHOOKS_FAILING = Gauge(
    "segments_webhook_deliveries_failing",
    "Pending webhook deliveries whose last 3 or more attempts failed",
)
WEBHOOKS_GAVE_UP = Gauge(
    "segments_webhook_deliveries_gave_up_last_day", "Webhook deliveries given up in 24 hours"
)
CACHE_OUTBOX_OVERDUE = Gauge(
    "segments_cache_outbox_overdue",
    "Cache outbox notes older than 30 s (Redis sets PostgreSQL moved past, not rewritten)",
)
BACKLOG_READ = Gauge(
    "segments_backlog_read_ok", "1 when the state figures above were read at this scrape"
)

#: The media type of :func:`exposition`.
CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """This process's metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)
