"""The server's Prometheus metrics, kept and written by prometheus_client.

Each app has a `Registry` of its own (one `CollectorRegistry` per app), so several apps in one
process (tests, a host embedding two models) never share or collide on a metric. The metric
objects keep the small call shape the server uses: `inc(*labels, amount=)`, `set(value, *labels)`,
`observe(value, *labels)`, label values given in the order the metric declares them.
prometheus_client is thread-safe: updates come from the event loop and the inference thread.
"""

from __future__ import annotations

from typing import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
"""The media type of what `Registry.render` writes (the text exposition format)."""


class _Metric:
    """A prometheus_client metric, with or without labels."""

    def __init__(self, metric: prometheus_client.metrics.MetricWrapperBase, labels: tuple[str, ...]):
        self.metric, self.label_names = metric, labels

    def child(self, labels: tuple[str, ...]):
        return self.metric.labels(*labels) if self.label_names else self.metric


class Counter(_Metric):
    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.child(labels).inc(amount)


class Gauge(_Metric):
    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.child(labels).inc(amount)

    def set(self, value: float, *labels: str) -> None:
        self.child(labels).set(value)


class Histogram(_Metric):
    def observe(self, value: float, *labels: str) -> None:
        self.child(labels).observe(value)


class Registry:
    """The server's metrics (names follow Prometheus conventions: base units, _total counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = self._counter("bertforge_requests", "HTTP requests by endpoint and status code "
                                      "(499: the client closed the connection first)", ("endpoint", "status"))
        self.latency = self._histogram("bertforge_request_duration_seconds", "HTTP request latency", ("endpoint",))
        self.items = self._counter("bertforge_items", "Inputs (texts, questions) processed by endpoint",
                                   ("endpoint",))
        self.batches = self._counter("bertforge_batches", "Model calls (micro-batches) by endpoint", ("endpoint",))
        self.batch_items = self._histogram("bertforge_batch_items", "Inputs per model call", ("endpoint",),
                                           BATCH_BUCKETS)
        self.batch_requests = self._histogram("bertforge_batch_requests", "Requests merged into one model call",
                                              ("endpoint",), BATCH_BUCKETS)
        self.inference = self._histogram("bertforge_inference_duration_seconds", "Time of one model call",
                                         ("endpoint",))
        self.in_flight = self._gauge("bertforge_requests_in_flight", "Requests being handled")
        self.queued = self._gauge("bertforge_queued_requests", "Requests waiting for the model")
        self.info = self._gauge("bertforge_model_info", "The model being served (always 1)",
                                ("model", "kind", "backend", "micro_batching"))

    def _counter(self, name: str, help: str, labels: Iterable[str] = ()) -> Counter:
        # prometheus_client appends `_total` to a counter's samples.
        labels = tuple(labels)
        return Counter(prometheus_client.Counter(name, help, labels, registry=self.registry), labels)

    def _gauge(self, name: str, help: str, labels: Iterable[str] = ()) -> Gauge:
        labels = tuple(labels)
        return Gauge(prometheus_client.Gauge(name, help, labels, registry=self.registry), labels)

    def _histogram(self, name: str, help: str, labels: Iterable[str] = (),
                   buckets: Iterable[float] = LATENCY_BUCKETS) -> Histogram:
        labels = tuple(labels)
        return Histogram(prometheus_client.Histogram(name, help, labels, registry=self.registry,
                                                     buckets=tuple(buckets)), labels)

    def value(self, sample: str, **labels: str) -> float | None:
        """The current value of one sample (`bertforge_requests_total`, `..._count` ...), None if unseen."""
        return self.registry.get_sample_value(sample, labels)

    def render(self) -> str:
        """What /metrics returns: the text exposition format."""
        return prometheus_client.generate_latest(self.registry).decode("utf-8")
