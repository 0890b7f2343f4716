"""Prometheus metrics, one registry per app (so tests and apps never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The server's metrics.

    Attributes:
        registry: The registry served at ``/metrics``.
        issuances_total: Packages sealed and stored, by model.
        downloads_total: Downloads that delivered a whole object.
        access_errors_total: Refused downloads and other access errors, by reason.
        job_latency_seconds: Time from job start to ready/failed.
        jobs_in_flight: Jobs currently generating or sealing.
        rejected_requests_total: Requests refused for capacity, by reason
            (``overloaded``: too many requests in flight or working; ``queue_full``: job
            queue full; ``shutting_down``: the job runner has stopped).
        abuse_refusals_total: Requests refused by the abuse policy, by reason
            (``rate_limited``, ``quota_exceeded``, ``account_blocked``,
            ``api_version_unsupported``).
        honey_token_uses_total: Uses of decoys, by kind (``model_id``, ``account``,
            ``device_key``); any increase is an alert.
        fraud_verdict_changes_total: Computed verdict changes, by new verdict.
    """

    def __init__(self) -> None:
        """Create a fresh registry and its metrics."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.issuances_total = Counter(
            "issuances", "Packages sealed and stored", ["model"], registry=self.registry
        )
        self.downloads_total = Counter(
            "downloads", "Downloads that delivered a whole object", registry=self.registry
        )
        self.access_errors_total = Counter(
            "access_errors", "Refused accesses, by reason", ["reason"], registry=self.registry
        )
        self.job_latency_seconds = Histogram(
            "job_latency_seconds",
            "Generation + sealing time of one job",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.jobs_in_flight = Gauge(
            "jobs_in_flight", "Jobs generating or sealing now", registry=self.registry
        )
        self.rejected_requests_total = Counter(
            "rejected_requests",
            "Requests refused for capacity, by reason",
            ["reason"],
            registry=self.registry,
        )

        self.abuse_refusals_total = Counter(
            "abuse_refusals",
            "Requests refused by the abuse policy, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.honey_token_uses_total = Counter(
            "honey_token_uses", "Uses of decoy tokens, by kind", ["kind"], registry=self.registry
        )
        self.fraud_verdict_changes_total = Counter(
            "fraud_verdict_changes",
            "Computed fraud verdict changes, by new verdict",
            ["verdict"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
