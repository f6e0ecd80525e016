"""The service's Prometheus metrics: requests by route and status, latency, time spent encoding and searching, and
the sizes of the shared forward passes."""
from __future__ import annotations


class Metrics:
    """Prometheus metrics of one app."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram  # the serve extra: loaded with the app

        self.registry = CollectorRegistry()
        self.requests = Counter("mmindex_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("mmindex_request_seconds", "Request latency", ["route"], registry=self.registry)
        self.encode = Histogram("mmindex_encode_seconds", "Time spent encoding queries", ["kind"],
                                registry=self.registry)
        self.search = Histogram("mmindex_search_seconds", "Time spent in the vector store", registry=self.registry)
        self.batch_sizes = Histogram("mmindex_encode_batch_size", "Items per model forward pass",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
