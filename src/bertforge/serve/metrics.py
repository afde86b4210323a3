"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Counters, gauges and histograms with labels; `render()` writes what /metrics returns. Updates
come from the event loop and the inference thread, so each metric takes a lock.
"""

from __future__ import annotations

import math
import threading
from typing import Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self.lock:
            self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        with self.lock:
            return self.values.get(labels, 0.0)

    def lines(self) -> list[str]:
        with self.lock:
            return [f"{self.name}{_labels(self.label_names, key)} {_number(value)}"
                    for key, value in sorted(self.values.items())]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        with self.lock:
            self.values[labels] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Iterable[str] = (), buckets: Iterable[float] = LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[tuple[str, ...], list[float]] = {}
        """Per label set: one count per bucket, then +Inf count, then the sum."""

    def observe(self, value: float, *labels: str) -> None:
        with self.lock:
            series = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    series[index] += 1
            series[-2] += 1
            series[-1] += value

    def lines(self) -> list[str]:
        lines = []
        with self.lock:
            for key, series in sorted(self.series.items()):
                for bound, count in zip(self.buckets, series):
                    bucket = _labels(self.label_names, key, 'le="' + _number(bound) + '"')
                    lines.append(f"{self.name}_bucket{bucket} {_number(count)}")
                bucket = _labels(self.label_names, key, 'le="+Inf"')
                lines.append(f"{self.name}_bucket{bucket} {_number(series[-2])}")
                lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(series[-1])}")
                lines.append(f"{self.name}_count{_labels(self.label_names, key)} {_number(series[-2])}")
        return lines


class Registry:
    """The server's metrics (names follow Prometheus conventions: base units, _total counters)."""

    def __init__(self) -> None:
        self.requests = Counter("bertforge_requests_total", "HTTP requests by endpoint and status code",
                                ("endpoint", "status"))
        self.latency = Histogram("bertforge_request_duration_seconds", "HTTP request latency", ("endpoint",))
        self.items = Counter("bertforge_items_total", "Inputs (texts, questions) processed by endpoint", ("endpoint",))
        self.batches = Counter("bertforge_batches_total", "Model calls (micro-batches) by endpoint", ("endpoint",))
        self.batch_items = Histogram("bertforge_batch_items", "Inputs per model call", ("endpoint",), BATCH_BUCKETS)
        self.batch_requests = Histogram("bertforge_batch_requests", "Requests merged into one model call",
                                        ("endpoint",), BATCH_BUCKETS)
        self.inference = Histogram("bertforge_inference_duration_seconds", "Time of one model call", ("endpoint",))
        self.in_flight = Gauge("bertforge_requests_in_flight", "Requests being handled")
        self.queued = Gauge("bertforge_queued_requests", "Requests waiting for the model")
        self.info = Gauge("bertforge_model_info", "The model being served (always 1)",
                          ("model", "kind", "backend", "micro_batching"))

    def all(self) -> list[_Metric]:
        return [self.requests, self.latency, self.items, self.batches, self.batch_items, self.batch_requests,
                self.inference, self.in_flight, self.queued, self.info]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.header())
            lines.extend(metric.lines())
        return "\n".join(lines) + "\n"
