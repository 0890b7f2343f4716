"""Job runners: where IML generation and sealing run, off the request path."""

from modelseal.server.jobs.runner import InProcessJobRunner, JobRunner, JobSlot

__all__ = ["InProcessJobRunner", "JobRunner", "JobSlot"]
