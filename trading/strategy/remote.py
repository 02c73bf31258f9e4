"""The inference server's wire format and its typed client.

`ServingClient` speaks to `hmmtrader serve` over HTTP (httpx, keep-alive, timeouts).
`RemoteInference` is the `Inference` seam over that client: the node swaps it in for
`InProcessInference` and gets the same numbers (floats travel as shortest round-trip
decimal strings, so nothing is lost on the wire).

Retries only where they are safe: connection failures before anything was sent (httpx
transport retries), and reads (GET). An /infer in stream mode advances the server's
filter, so a request that may have reached the server is never re-sent.
"""

from __future__ import annotations

from types import TracebackType
from typing import Annotated, Any, Literal, Self

import httpx
import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from trading.errors import HmmTraderError
from trading.features.descriptor import FeatureSet
from trading.regime import kernel
from trading.strategy.inference import InferenceUnavailableError


# ---- wire format ----------------------------------------------------------------------
def _integral(value: Any) -> Any:
    """JSON has one number type: 5.0 is the integer 5 (as JSON Schema says), 5.5 is not."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
JsonInt = Annotated[int, BeforeValidator(_integral)]
# the bounds before the validator, so the schema states them (minimum, maximum)
TimestampNs = Annotated[int, Field(ge=0, le=2**63 - 1), BeforeValidator(_integral)]
SYMBOL_PATTERN = r"^[A-Z0-9]{2,30}$"
SESSION_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
ROWS_LIMIT = 1_000_000  # schema bound; the server's configured serving.max_batch_rows applies
BLANK = " \t\n\r\f\v"  # a reason made only of these is no reason
NOT_BLANK_PATTERN = f"[^{BLANK.encode('unicode_escape').decode()}]"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Request(BaseModel):
    """Requests are strict: "2" is not a version, true is not a timestamp."""

    model_config = ConfigDict(extra="forbid", strict=True)


class InferRequest(_Request):
    """One symbol's feature rows in time order, one row per grid step."""

    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["BTCUSDT"])
    feature_version: str = Field(
        min_length=1, max_length=64, description="feature-set version the rows were computed with"
    )
    rows: list[list[FiniteFloat]] = Field(
        min_length=1,
        max_length=ROWS_LIMIT,
        description=(
            "feature rows: the model's columns in order (GET /ready lists them); at most "
            "serving.max_batch_rows rows"
        ),
    )
    ts_ns: list[TimestampNs] = Field(
        min_length=1,
        max_length=ROWS_LIMIT,
        description=(
            "grid timestamp of each row (ns): one per row, increasing; in stream mode the "
            "first must be after the stream's last step (else 409)"
        ),
    )
    columns: list[str] | None = Field(
        default=None,
        max_length=1000,
        description="optional: the column names of the rows, checked against the model's",
    )
    mode: Literal["stream", "window"] = Field(
        default="stream",
        description=(
            "stream: the rows continue this (session, symbol) stream; the server keeps its "
            "filter state between calls. window: the rows are a self-contained window; the "
            "filter starts at the first row (and restarts where ts_ns skips a grid step)"
        ),
    )
    session: str = Field(
        default="default",
        pattern=SESSION_PATTERN,
        description="stream namespace: one per client (e.g. the node's id)",
    )
    reset: bool = Field(
        default=False,
        description=(
            "stream mode: restart this (session, symbol) stream (forget its filter state "
            "and history) before these rows, e.g. to replay from an earlier time"
        ),
    )


class StepOut(_Wire):
    ts_ns: int
    state: int
    posterior: list[float]
    action: Literal["BUY", "SELL", "HOLD"]
    confidence: float
    exp_edge_bp: float
    drift_score: float
    p_down: float
    p_flat: float
    p_up: float
    out_of_distribution: bool = Field(
        default=False,
        description=(
            "the row lies outside what the model was trained on (a standardized value "
            "beyond serving.max_abs_z): action HOLD, confidence 0"
        ),
    )


class InferResponse(_Wire):
    model: str
    version: int
    feature_version: str
    symbol: str
    mode: str
    steps: list[StepOut]


class VersionRequest(_Request):
    version: JsonInt = Field(ge=1, le=2**31 - 1)


class PromoteRequest(VersionRequest):
    """force needs a reason (it is recorded): the schema says so too."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"force": {"const": False}}},
                {"required": ["reason"], "properties": {"reason": {"pattern": NOT_BLANK_PATTERN}}},
            ]
        }
    )
    force: bool = False
    reason: str = Field(default="", max_length=2000)

    def forced_without_reason(self) -> bool:
        return self.force and not self.reason.strip(BLANK)


class ModelInfo(_Wire):
    version: int
    loaded_at: str
    feature_version: str
    columns: list[str]
    n_states: int
    horizon_s: float
    feature_set: dict[str, Any]
    drift_limit: float = 0.0  # servers before the calibrated drift threshold: none


class Ready(_Wire):
    ready: bool
    reason: str = ""
    alias: str
    model: str
    version: int | None = None
    info: ModelInfo | None = None


_ACTION_CODE = {"SELL": -1.0, "HOLD": 0.0, "BUY": 1.0}


def steps_out(out: np.ndarray, ts_ns: np.ndarray) -> list[dict[str, Any]]:
    """Kernel output rows as the wire's step objects (`step_out` of each, in one pass)."""
    action = out[:, kernel.OUT_ACTION]
    actions = np.where(action > 0, "BUY", np.where(action < 0, "SELL", "HOLD")).tolist()
    columns = zip(
        np.asarray(ts_ns, dtype=np.int64).tolist(),
        out[:, kernel.OUT_STATE].astype(np.int64).tolist(),
        out[:, kernel.OUT_POSTERIOR :].tolist(),
        actions,
        out[:, kernel.OUT_CONFIDENCE].tolist(),
        out[:, kernel.OUT_EDGE].tolist(),
        out[:, kernel.OUT_DRIFT].tolist(),
        out[:, kernel.OUT_P_DOWN].tolist(),
        out[:, kernel.OUT_P_FLAT].tolist(),
        out[:, kernel.OUT_P_UP].tolist(),
        (out[:, kernel.OUT_OOD] > 0).tolist(),
        strict=True,
    )
    return [
        {"ts_ns": t, "state": s, "posterior": post, "action": a, "confidence": c,
         "exp_edge_bp": e, "drift_score": d, "p_down": pd, "p_flat": pf, "p_up": pu,
         "out_of_distribution": ood}
        for t, s, post, a, c, e, d, pd, pf, pu, ood in columns
    ]  # fmt: skip


def step_out(out: np.ndarray, ts_ns: int) -> dict[str, Any]:
    """A kernel output row (kernel.OUT_* layout) as the wire's step object."""
    a = int(out[kernel.OUT_ACTION])
    return {
        "ts_ns": int(ts_ns),
        "state": int(out[kernel.OUT_STATE]),
        "posterior": out[kernel.OUT_POSTERIOR :].tolist(),
        "action": "BUY" if a > 0 else ("SELL" if a < 0 else "HOLD"),
        "confidence": float(out[kernel.OUT_CONFIDENCE]),
        "exp_edge_bp": float(out[kernel.OUT_EDGE]),
        "drift_score": float(out[kernel.OUT_DRIFT]),
        "p_down": float(out[kernel.OUT_P_DOWN]),
        "p_flat": float(out[kernel.OUT_P_FLAT]),
        "p_up": float(out[kernel.OUT_P_UP]),
        "out_of_distribution": bool(out[kernel.OUT_OOD] > 0),
    }


def kernel_row(step: dict[str, Any]) -> np.ndarray:
    """The wire's step object back in the kernel output layout."""
    posterior = step["posterior"]
    out = np.empty(kernel.OUT_POSTERIOR + len(posterior))
    out[kernel.OUT_STATE] = step["state"]
    out[kernel.OUT_P_DOWN] = step["p_down"]
    out[kernel.OUT_P_FLAT] = step["p_flat"]
    out[kernel.OUT_P_UP] = step["p_up"]
    out[kernel.OUT_ACTION] = _ACTION_CODE[step["action"]]
    out[kernel.OUT_CONFIDENCE] = step["confidence"]
    out[kernel.OUT_EDGE] = step["exp_edge_bp"]
    out[kernel.OUT_DRIFT] = step["drift_score"]
    out[kernel.OUT_OOD] = 1.0 if step.get("out_of_distribution") else 0.0
    out[kernel.OUT_POSTERIOR :] = posterior
    return out


# ---- client ---------------------------------------------------------------------------
class ServingError(HmmTraderError):
    """The inference server refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServingClient:
    """Typed client of the inference server; one keep-alive connection pool."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8010",
        *,
        token: str | None = None,
        timeout_s: float = 2.0,
        connect_retries: int = 2,
        read_retries: int = 2,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._read_retries = read_retries
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=httpx.HTTPTransport(retries=connect_retries),
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60.0),
        )

    @classmethod
    def from_settings(cls, settings: Any) -> ServingClient:
        """From a `serving:` settings section (trading.settings.ServingSettings)."""
        token = settings.token.get_secret_value() if settings.token is not None else None
        return cls(
            settings.url,
            token=token,
            timeout_s=settings.timeout_s,
            connect_retries=settings.connect_retries,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _admin_headers(self) -> dict[str, str]:
        if not self._token:
            raise ServingError("this call needs the server's token: set HMMTRADER_SERVING__TOKEN")
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        attempts = 1 + (self._read_retries if method == "GET" else 0)
        last: Exception | None = None
        for _ in range(attempts):
            try:
                resp = self._http.request(method, path, **kw)
            except httpx.TransportError as exc:  # after the transport's connect retries
                last = exc
                if method != "GET":
                    break
                continue
            if method == "GET" and resp.status_code in (502, 504):
                last = ServingError(f"GET {path}: HTTP {resp.status_code}", resp.status_code)
                continue
            return resp
        raise ServingError(f"inference server at {self.url}: {method} {path} failed: {last}")

    def _json(self, resp: httpx.Response, ok: tuple[int, ...] = (200,)) -> Any:
        if resp.status_code not in ok:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ServingError(
                f"{resp.request.method} {resp.request.url.path}: HTTP {resp.status_code}: {detail}",
                resp.status_code,
            )
        return resp.json()

    def health(self) -> bool:
        try:
            return self._request("GET", "/health").status_code == 200
        except ServingError:
            return False

    def ready(self) -> Ready:
        return Ready.model_validate(self._json(self._request("GET", "/ready"), ok=(200, 503)))

    def models(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json(self._request("GET", "/models"))
        return data

    def infer(
        self,
        symbol: str,
        rows: np.ndarray | list[list[float]],
        ts_ns: np.ndarray | list[int],
        *,
        feature_version: str,
        mode: Literal["stream", "window"] = "stream",
        session: str = "default",
        columns: list[str] | None = None,
        reset: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": symbol,
            "feature_version": feature_version,
            "rows": np.asarray(rows, dtype=np.float64).tolist(),
            "ts_ns": np.asarray(ts_ns, dtype=np.int64).tolist(),
            "mode": mode,
            "session": session,
        }
        if columns is not None:
            body["columns"] = columns
        if reset:
            body["reset"] = True
        data: dict[str, Any] = self._json(self._request("POST", "/infer", json=body))
        return data

    def load(self, version: int) -> dict[str, Any]:
        resp = self._request(
            "POST", "/load", json={"version": version}, headers=self._admin_headers()
        )
        data: dict[str, Any] = self._json(resp)
        return data

    def promote(self, version: int, *, force: bool = False, reason: str = "") -> dict[str, Any]:
        resp = self._request(
            "POST",
            "/promote",
            json={"version": version, "force": force, "reason": reason},
            headers=self._admin_headers(),
        )
        data: dict[str, Any] = self._json(resp)
        return data

    def rollback(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json(
            self._request("POST", "/rollback", headers=self._admin_headers())
        )
        return data

    def reload(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json(
            self._request("POST", "/reload", headers=self._admin_headers())
        )
        return data


class RemoteInference:
    """`Inference` over the inference server: the server keeps the per-symbol filter state
    (stream mode, one session per client), the answers carry the version that produced them."""

    def __init__(self, client: ServingClient, session: str = "node") -> None:
        self.client = client
        self.session = session
        ready = client.ready()
        if not ready.ready or ready.info is None:
            raise ServingError(f"inference server at {client.url} is not ready: {ready.reason}")
        info = ready.info
        self.version = str(info.version)
        self.feature_set = FeatureSet.from_dict(info.feature_set)
        self.n_states = info.n_states
        self.horizon_s = info.horizon_s
        self.drift_limit = info.drift_limit

    def step(self, symbol: str, row: np.ndarray, ts_ns: int) -> np.ndarray:
        try:
            data = self.client.infer(
                symbol,
                np.asarray(row, dtype=np.float64).reshape(1, -1),
                [ts_ns],
                feature_version=self.feature_set.version,
                session=self.session,
            )
        except ServingError as exc:
            raise InferenceUnavailableError(str(exc)) from exc
        self.version = str(data["version"])
        return kernel_row(data["steps"][0])
