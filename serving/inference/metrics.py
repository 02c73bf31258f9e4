"""Prometheus metrics of the inference server (one registry per app instance).

Every label takes a bounded set of values, whatever clients send: endpoints are route
templates ("other" for unknown paths), methods the usual HTTP ones ("other"), and
`drift_score` has a series per configured symbol plus one, `symbol="other"`, for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


class ServingMetrics:
    def __init__(self, symbols: Iterable[str] = ()) -> None:
        self.symbols = frozenset(symbols)
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hmmtrader_http_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hmmtrader_http_request_duration_seconds",
            "HTTP request latency by endpoint, method and status",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_errors = Counter(
            "hmmtrader_inference_errors",
            "Inference requests refused or failed, by reason",
            ["reason"],
            registry=r,
        )
        self.inference_rows = Counter(
            "hmmtrader_inference_rows", "Feature rows inferred", ["mode"], registry=r
        )
        self.ood_rows = Counter(
            "hmmtrader_inference_out_of_distribution_rows",
            "Feature rows out of the model's training range (answered HOLD, confidence 0)",
            registry=r,
        )
        self.model_version = Info(
            "hmmtrader_model_version", "The model version answering /infer", registry=r
        )
        self.model_ready = Gauge(
            "hmmtrader_model_ready", "1 when a model is loaded and answering", registry=r
        )
        self.swaps = Counter(
            "hmmtrader_model_swaps",
            "Model swaps and failed loads by result",
            ["result"],
            registry=r,
        )
        self.drift_score = Gauge(
            "drift_score",
            "Feature drift score of the latest step per configured symbol (KL vs the training "
            'reference); symbol="other": the latest step of any other symbol',
            ["symbol"],
            registry=r,
        )
        self.production_failed_floors = Gauge(
            "hmmtrader_production_failed_floors",
            "Canary floors the served version failed, held to them as production on the "
            "latest canary's holdout (0: none, or never checked)",
            ["version"],
            registry=r,
        )
        self.production_out_of_band = Gauge(
            "hmmtrader_production_out_of_band",
            "1 while the production alias points where no promote/rollback moved it (the "
            "MLflow UI, a client call); blocked=true: that version is not served",
            ["alias_version", "served_version", "blocked"],
            registry=r,
        )
        self.production_out_of_band_moves = Counter(
            "hmmtrader_production_out_of_band_moves",
            "Out-of-band moves of the production alias detected (each new target once)",
            registry=r,
        )
        self.model_ready.set(0)
        self.model_version.info({"model": "", "version": "", "alias": ""})

    def set_drift(self, symbol: str, score: float) -> None:
        self.drift_score.labels(symbol if symbol in self.symbols else OTHER).set(score)
