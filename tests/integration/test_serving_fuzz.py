"""Property-based fuzzing of a real `hmmtrader serve` process against its own OpenAPI spec.

Schemathesis reads /openapi.json from the running server and generates requests for every
operation: valid (positive) and schema-violating (negative) data, admin endpoints both
with the right bearer token and without (schemathesis then invents an Authorization
header or leaves it out). On top, /infer gets well-formed bodies the schema alone cannot
describe (the model's feature version, row width and increasing timestamps), so the
inference path itself is fuzzed, and a mixed phase interleaves every operation with the
token so /promote, /rollback, /load and /reload move the versions while /infer runs.

One fuzz run per module; its results are judged by two tests: no 5xx at all (the hard
property), and every response conforming to the spec (status code documented, body and
content type as declared, negative data rejected, auth enforced).
"""

from __future__ import annotations

import collections
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import CacheConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.cli_env import isolated_env
from tests.integration.serving_env import (
    TOKEN,
    InferenceServer,
    model_and_rows,
    registry_at,
    server,
)
from tests.integration.worlds import served_home

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20240101
ADMIN = {"/load", "/promote", "/rollback", "/reload"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIN_CASES = 500
EXAMPLES = 40  # per operation, generation mode and auth variant
MIXED_EXAMPLES = 200  # every operation interleaved, admin with the token
INFER_EXAMPLES = 150  # well-formed /infer bodies, half on each version
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
SETTINGS = hypothesis.settings(
    deadline=None,
    derandomize=False,  # each run gets its own fixed @seed (Fuzzer.fuzz): same requests every time
    database=None,  # no .hypothesis/ directory in the working tree
    phases=[Phase.explicit, Phase.generate],  # failures are collected, never shrunk
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    print_blob=False,
)


# ---- the server -----------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis' caches (constants, unicode data) go to a tmp dir, not ./.hypothesis."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(tmp_path_factory.mktemp("hypothesis")))
        set_hypothesis_home_dir(None)  # re-read from the environment on next use
        yield
    set_hypothesis_home_dir(None)


@dataclass
class Served:
    proc: InferenceServer
    columns: list[str]
    feature_version: str
    step_ns: int
    rows: np.ndarray = field(repr=False)  # real feature rows, to start /infer bodies from


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The shared served world: two real versions (k=4 promoted, k=3); a real server
    serving version 1."""
    root = tmp_path_factory.mktemp("serving-fuzz")
    t0 = time.monotonic()
    with isolated_env({}):
        home = served_home(root / "home")
        proc = server(home, root / "server.log").start()
        try:
            m4, _, X4 = model_and_rows(4)
            m3, _, _ = model_and_rows(3)
            assert m4.feature_set.version == m3.feature_set.version
            assert m4.columns == m3.columns
            assert [v.version for v in registry_at(home).versions()] == [1, 2]
            proc.wait_ready(1)
            print(f"\nsetup (shared world, server start): {time.monotonic() - t0:.1f} s")
            yield Served(proc, list(m4.columns), m4.feature_set.version, int(m4.step_ns), X4)
        finally:
            proc.stop()


# ---- recording ------------------------------------------------------------------------
@dataclass
class Finding:
    phase: str
    operation: str
    token: bool
    request: str
    status: int
    response: str
    failure: str

    def text(self) -> str:
        return (
            f"[{self.phase}] {self.operation} ({'with' if self.token else 'without'} the admin "
            f"token) -> {self.status}\n  request: {self.request}\n  response: "
            f"{self.response}\n  {self.failure}"
        )


@dataclass
class FuzzRun:
    cases: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    by_operation: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    phases: collections.Counter[str] = field(default_factory=collections.Counter)
    server_errors: list[Finding] = field(default_factory=list)
    nonconforming: list[Finding] = field(default_factory=list)
    infer_versions: collections.Counter[int] = field(default_factory=collections.Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"{self.cases} cases in {self.seconds:.1f} s",
            "by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())),
            "by phase: " + ", ".join(f"{p}: {n}" for p, n in self.phases.items()),
            "/infer answered by version: "
            + ", ".join(f"{v}: {n}" for v, n in sorted(self.infer_versions.items())),
        ]
        for (op, status), n in sorted(self.by_operation.items()):
            lines.append(f"  {op:<16} {status}: {n}")
        return "\n".join(lines)


def _request_text(response: schemathesis.Response) -> str:
    req = response.request
    headers = {
        k: v for k, v in req.headers.items() if k.lower() in {"authorization", "content-type"}
    }
    body = req.body.encode() if isinstance(req.body, str) else req.body
    if not isinstance(body, bytes):
        body = b""
    shown = body[:600].decode(errors="backslashreplace") + ("..." if len(body) > 600 else "")
    return f"{req.method} {req.url} headers={headers} body={shown!r}"


def _failure_text(exc: BaseException) -> str:
    parts = [str(e) for e in exc.exceptions] if isinstance(exc, FailureGroup) else [str(exc)]
    return "; ".join(re.sub(r"\s+", " ", p).strip()[:500] for p in parts)


class Fuzzer:
    def __init__(self, served: Served) -> None:
        self.served = served
        self.url = served.proc.url
        self.session = requests.Session()
        self.run = FuzzRun()
        self.gone = False  # the server stopped answering: send nothing more
        self.runs = 0

    def send(self, case: Case, phase: str, *, negative: bool = False) -> None:
        if self.gone:
            return
        token = (
            case.headers is not None and case.headers.get("Authorization") == AUTH["Authorization"]
        )
        run = self.run
        try:
            response = case.call(base_url=self.url, session=self.session, timeout=30)
        except requests.RequestException as exc:
            self.gone = True
            run.cases += 1
            run.server_errors.append(
                Finding(phase, case.operation.label, token, f"{case.method} {case.formatted_path} "
                        f"body={str(case.body)[:600]!r}", 0, "(none)", f"no answer: {exc!r}")
            )  # fmt: skip
            return
        status = response.status_code
        run.cases += 1
        run.statuses[status] += 1
        run.by_operation[(case.operation.label, status)] += 1
        run.phases[phase] += 1

        def finding(failure: str) -> Finding:
            return Finding(phase, case.operation.label, token, _request_text(response), status,
                           response.text[:400], failure)  # fmt: skip

        if status == 200 and case.operation.label == "POST /infer":
            run.infer_versions[response.json().get("version", -1)] += 1
        if status >= 500:
            run.server_errors.append(finding("server error"))
        try:
            case.validate_response(
                response, checks=NEGATIVE_CHECKS if negative else CHECKS,
                transport_kwargs={"base_url": self.url, "session": self.session},
            )  # fmt: skip
        except (FailureGroup, AssertionError) as exc:
            run.nonconforming.append(finding(_failure_text(exc)))

    def fuzz(
        self, strategy: st.SearchStrategy[Any], examples: int, each: Callable[[Any], None]
    ) -> None:
        self.runs += 1

        @hypothesis.seed(SEED + self.runs)
        @hypothesis.settings(SETTINGS, max_examples=examples)
        @given(drawn=strategy)
        def fuzz_operation(drawn: Any) -> None:
            each(drawn)

        # Unsatisfiable: nothing to vary (a negative case for an operation without inputs)
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            fuzz_operation()


def infer_bodies(s: Served) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed /infer bodies: right feature version and width, increasing ts; rows
    from the real data, perturbed or replaced by arbitrary finite floats."""
    width = len(s.columns)
    any_float = st.floats(allow_nan=False, allow_infinity=False)
    real = st.integers(0, len(s.rows) - 1).map(lambda i: s.rows[i].tolist())
    perturbed = st.tuples(real, st.integers(0, width - 1), any_float).map(
        lambda t: [*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]]
    )
    row = st.one_of(real, perturbed, st.lists(any_float, min_size=width, max_size=width))
    gap = st.one_of(st.just(s.step_ns), st.integers(1, 50 * s.step_ns))

    @st.composite
    def body(draw: st.DrawFn) -> dict[str, Any]:
        n = draw(st.integers(1, 12))
        ts = [draw(st.integers(0, 2**61))]
        for _ in range(n - 1):
            ts.append(ts[-1] + draw(gap))
        out: dict[str, Any] = {
            "symbol": draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "SOL2"])),
            "feature_version": s.feature_version,
            "rows": draw(st.lists(row, min_size=n, max_size=n)),
            "ts_ns": ts,
            "mode": draw(st.sampled_from(["stream", "window"])),
            "session": draw(st.sampled_from(["default", "node-1", "a.b:c-d_e"])),
        }
        if draw(st.booleans()):
            out["columns"] = list(s.columns)
        return out

    return body()


def _json_case(op: APIOperation, body: Any, headers: dict[str, str] | None = None) -> Case:
    return op.Case(
        body=body, headers=dict(headers) if headers else None, media_type="application/json"
    )


def version_moves(schema: BaseSchema) -> st.SearchStrategy[Case]:
    """Authorised admin calls that move the served version between the two real ones
    (refusals and bad input are the generated cases' job)."""
    version = st.sampled_from([2, 1])
    promote, load = schema["/promote"]["POST"], schema["/load"]["POST"]
    rollback, reload = schema["/rollback"]["POST"], schema["/reload"]["POST"]
    body = version.map(lambda v: {"version": v, "force": True, "reason": "fuzz"})
    return st.one_of(
        body.map(lambda b: _json_case(promote, b, AUTH)),
        st.builds(lambda: rollback.Case(headers=dict(AUTH))),
        version.map(lambda v: _json_case(load, {"version": v}, AUTH)),
        st.builds(lambda: reload.Case(headers=dict(AUTH))),
    )


def fuzz_everything(served: Served) -> FuzzRun:
    config = schemathesis.Config(seed=SEED, cache=CacheConfig(enabled=False))
    schema = schemathesis.openapi.from_url(served.proc.url + "/openapi.json", config=config)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"/openapi.json: {result.err()}"
        operations.append(result.ok())
    labels = {op.label for op in operations}
    assert {"POST /infer", *(f"POST {p}" for p in ADMIN)} <= labels, labels
    fz = Fuzzer(served)
    t0 = time.monotonic()

    # 1. each operation alone: positive and negative data, admin with and without the token
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            negative = mode is GenerationMode.NEGATIVE
            for headers in [None, AUTH] if op.path in ADMIN else [None]:
                phase = f"{mode.value}{' +token' if headers else ''}"
                fz.fuzz(
                    op.as_strategy(generation_mode=mode, headers=headers),
                    EXAMPLES,
                    lambda case, phase=phase, negative=negative: fz.send(  # type: ignore[misc]
                        case, phase, negative=negative
                    ),
                )

    # 2. well-formed /infer bodies (the inference path itself) on version 1 (k=4), then,
    #    after an authorised promotion, on version 2 (k=3)
    infer, promote = schema["/infer"]["POST"], schema["/promote"]["POST"]
    for version in (1, 2):
        body = {"version": version, "force": True, "reason": "fuzz"}
        fz.send(_json_case(promote, body, AUTH), "infer")
        fz.fuzz(
            infer_bodies(served),
            INFER_EXAMPLES // 2,
            lambda body: fz.send(_json_case(infer, body), "infer"),
        )

    # 3. everything interleaved, admin with the token, plus admin calls that do move the
    #    versions (1 <-> 2): /infer keeps answering while the model under it is swapped.
    #    Well-formed /infer and the version moves are weighted up (one_of picks a branch
    #    uniformly); the nonce keeps hypothesis from skipping a call it already made.
    generated = [op.as_strategy(headers=AUTH if op.path in ADMIN else None) for op in operations]
    infers = infer_bodies(served).map(lambda body: _json_case(infer, body))
    moves = version_moves(schema)
    fz.fuzz(
        st.tuples(st.one_of(*generated, *[infers] * 4, *[moves] * 4), st.integers(0, 2**32)),
        MIXED_EXAMPLES,
        lambda drawn: fz.send(drawn[0], "mixed"),
    )
    fz.run.seconds = time.monotonic() - t0
    return fz.run


@pytest.fixture(scope="module")
def fuzzed(served: Served) -> FuzzRun:
    run = fuzz_everything(served)
    print("\n" + run.summary())
    return run


def _server_log_errors(served: Served) -> str:
    lines = served.proc.log().splitlines()
    keep = [i for i, line in enumerate(lines) if "Traceback" in line or " ERROR " in line]
    if not keep:
        return "(no tracebacks in the server log)"
    start = max(0, keep[0] - 2)
    return "\n".join(lines[start : start + 80])


# ---- the properties -------------------------------------------------------------------
def test_fuzz_no_server_errors(served: Served, fuzzed: FuzzRun) -> None:
    if fuzzed.server_errors:
        shown = "\n\n".join(f.text() for f in fuzzed.server_errors[:8])
        pytest.fail(
            f"{len(fuzzed.server_errors)} server errors (5xx or no answer) in {fuzzed.cases} "
            f"cases:\n\n{shown}\n\nserver log:\n{_server_log_errors(served)}\n\n"
            f"{fuzzed.summary()}",
            pytrace=False,
        )
    alive = served.proc.proc is not None and served.proc.proc.poll() is None
    assert alive, f"the server died:\n{served.proc.log()[-3000:]}"
    assert fuzzed.cases >= MIN_CASES, fuzzed.summary()
    ops = {op for op, _ in fuzzed.by_operation}
    assert len(ops) >= 9, ops  # every operation was exercised
    # the authorised paths were reached, not only the 401/403s
    for op in ("POST /load", "POST /promote", "POST /rollback", "POST /reload", "POST /infer"):
        assert fuzzed.by_operation[(op, 200)] > 0, (op, fuzzed.summary())
    # /infer was answered by both models (k=4 and k=3)
    assert set(fuzzed.infer_versions) == {1, 2}, fuzzed.summary()


def test_fuzz_responses_conform_to_the_spec(served: Served, fuzzed: FuzzRun) -> None:
    distinct: dict[tuple[str, int, str], Finding] = {}
    for f in fuzzed.nonconforming:
        key = (f.operation, f.status, f.failure.split(";")[0][:80])
        distinct.setdefault(key, f)
    if distinct:
        shown = "\n\n".join(f.text() for f in list(distinct.values())[:12])
        pytest.fail(
            f"{len(fuzzed.nonconforming)} responses ({len(distinct)} distinct problems) do not "
            f"conform to /openapi.json:\n\n{shown}\n\n{fuzzed.summary()}",
            pytrace=False,
        )
