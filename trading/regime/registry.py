"""MLflow tracking and model registry: log a training run, register a version, resolve
references (alias, number, models:/ URI), load, promote, roll back.

Aliases: `candidate` (newest trained), `production`, `previous` (the production before
the last promotion).

Production is guarded. Every `promote` and `rollback` (CLI, API, flows) appends one move
to the registered model's tags, `production_move.000001`, `production_move.000002`, ...:
version, from, by, reason, verdict, kind, time; nothing rewrites or deletes one. The
production stack (and so `previous`) is the replay of those moves, so `rollback` works
after any sequence. An alias moved some other way (the MLflow UI's alias editor, a client
call) is an out-of-band move: `guard()` detects it; when its version has neither a passed
canary verdict nor a recorded force reason, `resolve("production")` (serving, the node,
the canary) keeps the last recorded version, and `/models`, `models`, a metric and an
alert say so until `promote --force --reason` or `rollback` resolves it. A registry made
before moves were recorded starts from its `production_history` tag (or, without one,
from its `production` alias).

Registration is all or nothing. A version is created with the tag `registration` =
`incomplete` (in the same transaction as the version), then its tags are written, then
`registration` becomes `complete`, and only then does `candidate` move to it. Every
consumer (resolve, hence canary, promote, serving and the node) refuses an incomplete
version; `repair()` (run by every `train`, and by `hmmtrader models --repair`) deletes the
versions and marks FAILED the runs that a killed process left behind. Each run records
the host, pid and process start time of the process that logs it, so that repair never
touches the work of a process that is still alive.

Promotion and rollback load and smoke-test the target before they move an alias: a
version that cannot load changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trading.env import disable_telemetry
from trading.errors import HmmTraderError, InputError, first_line
from trading.paths import StatePaths
from trading.process import start_ticks
from trading.regime.config import RegistrySettings

if TYPE_CHECKING:  # the model (numba kernels) loads with a version, not with the module
    from trading.regime.model import RegimeModel

CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"
ALIASES = (CANDIDATE, PRODUCTION, PREVIOUS)
TAG_CANARY = "canary_verdict"  # passed / failed / insufficient_evidence, by the canary gate
# the floors a version failed when a later canary held it (as production) to them on its
# window: "none", or the rule names
TAG_FLOORS = "floors_failed"
TAG_FINGERPRINT = "fingerprint"
TAG_HISTORY = "production_history"  # before moves were recorded: the stack's base, read only
TAG_MOVE = "production_move."  # + a 6-digit sequence number: one append-only move each
TAG_REGISTRATION = "registration"  # "incomplete" from creation until every tag is written
COMPLETE, INCOMPLETE = "complete", "incomplete"
# tags a version registered before the `registration` marker must carry to count as complete
LEGACY_REQUIRED = (TAG_FINGERPRINT,)
RUN_HOST, RUN_PID, RUN_STARTED = "hmmtrader.host", "hmmtrader.pid", "hmmtrader.started"
# the experiment tag the MLflow UI (3.x) reads to choose its default page: runs, not traces
EXPERIMENT_KIND, MODEL_KIND = "mlflow.experimentKind", "custom_model_development"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("hmmtrader.registry")


class RegistryError(HmmTraderError):
    """A registry operation was refused or the registry cannot be reached."""


class PromotionRefusedError(RegistryError):
    """Promotion without a passed canary verdict (and without --force --reason)."""


class IncompleteVersionError(RegistryError):
    """The version's registration was interrupted: it is not usable until repaired."""


@dataclass(frozen=True)
class Repaired:
    removed_versions: list[int]  # incomplete versions whose process is gone: deleted
    failed_runs: list[str]  # runs left RUNNING by a process that is gone: marked FAILED
    in_progress: list[int]  # incomplete versions whose process still runs: left alone

    @property
    def changed(self) -> bool:
        return bool(self.removed_versions or self.failed_runs)


def process_identity() -> dict[str, str]:
    """Run tags naming this process, so that a later repair can tell it is gone."""
    pid = os.getpid()
    return {RUN_HOST: socket.gethostname(), RUN_PID: str(pid), RUN_STARTED: start_ticks(pid) or ""}


def process_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process a run's tags name still runs: None when unknown (no tags, or
    another host)."""
    host, pid = tags.get(RUN_HOST), tags.get(RUN_PID, "")
    if not host or not pid.isdigit() or host != socket.gethostname():
        return None
    started = tags.get(RUN_STARTED, "")
    now = start_ticks(int(pid))
    if now is not None or Path("/proc/self/stat").exists():
        return now is not None and (not started or now == started)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def default_tracking_uri(home: Path) -> str:
    return "sqlite:///" + str((StatePaths(home).mlflow / "mlflow.db").resolve())


# the columns of MLflow's SQL schema that hold artifact locations
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def relocate_store(db: Path, experiment: str, artifacts: Path) -> str | None:
    """Make a home's SQLite store point at the home's own artifacts: MLflow records
    absolute `file://` locations, so a copied or restored home would still read and write
    the original's. When the experiment's location is another directory, every location
    under it is rewritten to this home's (one transaction). Returns the old location, or
    None when nothing needed rewriting."""
    import sqlite3

    if not db.is_file():
        return None
    here = artifacts.resolve().as_uri()
    con = sqlite3.connect(db, timeout=30)
    try:
        try:
            row = con.execute(
                "SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)
            ).fetchone()
        except sqlite3.DatabaseError:
            return None  # not (yet) an MLflow store: MLflow itself will say what is wrong
        old = row[0] if row else None
        if not old or old == here or not old.startswith("file://"):
            return None
        with con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            for table, column in _LOCATION_COLUMNS:
                if table in tables:
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                        (here, len(old) + 1, old, len(old) + 1, old + "/"),
                    )
        return str(old)
    finally:
        con.close()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class VersionInfo:
    version: int
    aliases: list[str]
    created: dt.datetime
    run_id: str
    tags: dict[str, str]

    @property
    def canary(self) -> str:
        return self.tags.get(TAG_CANARY, "")

    @property
    def complete(self) -> bool:
        """Every tag was written (a version registered before the `registration` marker
        existed counts when it carries a fingerprint)."""
        state = self.tags.get(TAG_REGISTRATION)
        if state is not None:
            return state == COMPLETE
        return all(key in self.tags for key in LEGACY_REQUIRED)


@dataclass(frozen=True)
class Registered:
    version: int
    run_id: str
    reused: bool  # a version with the same fingerprint existed: nothing new was logged


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


@dataclass(frozen=True)
class Move:
    """One recorded move of `production` (a registered-model tag, never rewritten)."""

    seq: int
    kind: str  # promote / force / rollback / restore
    version: int
    from_version: int | None
    by: str
    reason: str
    verdict: str
    at: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "version": self.version,
                "from": self.from_version, "by": self.by, "reason": self.reason,
                "verdict": self.verdict, "at": self.at}  # fmt: skip


def replay(base: list[int], moves: list[Move]) -> list[int]:
    """The production stack after `moves` (the last entry is production, the one before
    it `previous`): a promotion puts its version on top (once); a rollback takes the top
    off; a restore (rolling back an out-of-band move) changes nothing."""
    stack = list(base)
    for move in moves:
        if move.kind in ("promote", "force"):
            stack = [v for v in stack if v != move.version] + [move.version]
        elif move.kind == "rollback":
            stack = [v for v in stack if v != move.from_version]
            if not stack or stack[-1] != move.version:
                stack = [v for v in stack if v != move.version] + [move.version]
    return stack


@dataclass(frozen=True)
class ProductionGuard:
    """The `production` alias against the recorded moves. `serving` is the version every
    consumer uses: the alias when it agrees with the record or points at a version with a
    passed canary or a recorded force reason, else the last recorded version."""

    alias: int | None  # where the alias points now
    recorded: int | None  # the top of the replayed stack
    previous: int | None
    serving: int | None
    anomaly: str  # "" when the alias agrees with the record
    blocked: bool  # the alias's version is not served

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _gated(tags: dict[str, str]) -> bool:
    """A passed canary verdict, or a recorded forced promotion with its reason."""
    forced = tags.get("promotion_forced") == "true" and tags.get("promotion_reason", "").strip()
    return tags.get(TAG_CANARY) == "passed" or bool(forced)


def moves_of(tags: dict[str, str]) -> list[Move]:
    """The recorded moves of production in the registered model's tags, oldest first."""
    moves = []
    for key in sorted(k for k in tags if k.startswith(TAG_MOVE)):
        try:
            d = json.loads(tags[key])
            moves.append(Move(int(key[len(TAG_MOVE):]), str(d["kind"]), int(d["version"]),
                              None if d.get("from") is None else int(d["from"]),
                              str(d.get("by", "")), str(d.get("reason", "")),
                              str(d.get("verdict", "")), str(d.get("at", ""))))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring an unreadable move tag %s=%r", key, tags[key])
    return moves


def stack_of(tags: dict[str, str], aliases: dict[str, int]) -> list[int]:
    """The production stack: the base (production_history) replayed with the moves."""
    try:
        base = [int(v) for v in json.loads(tags.get(TAG_HISTORY, "[]"))]
    except (ValueError, TypeError):
        base = []
    moves = moves_of(tags)
    if not moves and not base and PRODUCTION in aliases:
        base = [aliases[PRODUCTION]]  # a registry from before moves: trusted as found
    return replay(base, moves)


def guard_of(
    tags: dict[str, str],
    aliases: dict[str, int],
    version_tags: Callable[[int], dict[str, str]],
) -> ProductionGuard:
    """The production alias (of the model's `aliases`) against the moves in its `tags`;
    `version_tags(v)` reads a version's tags when the alias disagrees with the record."""
    stack = stack_of(tags, aliases)
    recorded = stack[-1] if stack else None
    previous = stack[-2] if len(stack) >= 2 else None
    alias = aliases.get(PRODUCTION)
    if alias == recorded:
        return ProductionGuard(alias, recorded, previous, recorded, "", False)
    if alias is None:
        why = (f"the production alias was removed outside promote/rollback; version "
               f"{recorded} (the last recorded) is still served")  # fmt: skip
        return ProductionGuard(alias, recorded, previous, recorded, why, True)
    alias_tags = version_tags(alias)
    fix = (f"hmmtrader rollback (back to version {recorded})" if recorded is not None
           else "hmmtrader rollback")  # fmt: skip
    if _gated(alias_tags):
        why = (f"production was moved to version {alias} outside promote/rollback (no "
               f"recorded move); its canary passed, so it is served. Record it: "
               f"hmmtrader promote {alias}, or undo it: {fix}")  # fmt: skip
        return ProductionGuard(alias, recorded, previous, alias, why, False)
    verdict = alias_tags.get(TAG_CANARY) or "no canary verdict"
    kept = f"version {recorded} is still served" if recorded else "nothing is served"
    why = (f"production was moved to version {alias} outside promote/rollback, and it "
           f"has {verdict} and no recorded force reason: {kept}. Resolve it: {fix}, or "
           f"hmmtrader promote {alias} --force --reason TEXT")  # fmt: skip
    return ProductionGuard(alias, recorded, previous, recorded, why, True)


class Registry:
    """One registered model (name from config) in one tracking / registry store."""

    def __init__(self, settings: RegistrySettings, home: Path) -> None:
        disable_telemetry()
        import mlflow

        # MLflow logs every database error with its traceback before it raises it; the
        # callers say what failed in one line (the CLI) or in their answer (the servers)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        from mlflow.tracking import MlflowClient

        self.name = settings.model_name
        self.experiment = settings.experiment
        self.uri = settings.tracking_uri or default_tracking_uri(home)
        self._local_store = settings.tracking_uri is None
        self._artifacts = StatePaths(home).mlflow / "artifacts"
        if self._local_store:
            StatePaths(home).mlflow.mkdir(parents=True, exist_ok=True)
            self.relocated = relocate_store(
                StatePaths(home).mlflow / "mlflow.db", self.experiment, self._artifacts
            )
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        # MLflow caches each run's artifact store by run id for the process's life: a copy
        # of a home (same run ids) opened in the same process would write to the original
        from mlflow.tracking._tracking_service import utils as tracking_utils

        cache = getattr(tracking_utils, "_artifact_repos_cache", None)
        if cache is not None:
            cache.clear()
        self._mlflow = mlflow
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # ---- reading -------------------------------------------------------------------
    def _model_exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
            return True
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
                return False
            raise RegistryError(f"model registry at {self.uri}: {exc.message}") from None

    def aliases(self) -> dict[str, int]:
        if not self._model_exists():
            return {}
        return {a: int(v) for a, v in self.client.get_registered_model(self.name).aliases.items()}

    def versions(self) -> list[VersionInfo]:
        if not self._model_exists():
            return []
        by_version: dict[int, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        out = []
        for mv in self.client.search_model_versions(f"name = '{self.name}'"):
            v = int(mv.version)
            out.append(
                VersionInfo(
                    version=v,
                    aliases=sorted(by_version.get(v, [])),
                    created=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC),
                    run_id=mv.run_id or "",
                    tags=dict(mv.tags or {}),
                )
            )
        return sorted(out, key=lambda i: i.version)

    def resolve(self, ref: str | int, *, complete: bool = True) -> int:
        """A version number from 'production' / 'candidate' / 'previous', '3', or a
        models:/<name>/<version> or models:/<name>@<alias> URI. With `complete` (the
        default), a version whose registration was interrupted is refused."""
        version, known = self._resolve(ref)
        if complete:
            info = next(i for i in known if i.version == version)
            if not info.complete:
                raise IncompleteVersionError(
                    f"{self.name} version {version} is incomplete: its registration was "
                    "interrupted before all its tags (fingerprint, data range) were written; "
                    "it cannot be canaried, promoted or served. `hmmtrader models --repair` "
                    "(or the next `hmmtrader train`) removes it"
                )
        return version

    def _resolve(self, ref: str | int) -> tuple[int, list[VersionInfo]]:
        text = str(ref).strip()
        if text.startswith("models:/"):
            rest = text[len("models:/") :]
            name, sep, tail = rest.partition("@") if "@" in rest else rest.partition("/")
            if not sep or not tail:
                raise InputError(
                    f"{text!r}: expected models:/<name>/<version> or models:/<name>@<alias>"
                )
            if name != self.name:
                raise InputError(
                    f"{text!r} names model {name!r}; the configured model is {self.name!r}"
                )
            text = tail
        known = self.versions()
        numbers = [i.version for i in known]
        if text.isdigit():
            if int(text) not in numbers:
                listing = ", ".join(map(str, numbers)) or "none yet (run hmmtrader train)"
                raise InputError(f"{self.name} has no version {text}; versions: {listing}")
            return int(text), known
        if text in (PRODUCTION, PREVIOUS):
            guard = self.guard()
            guarded = guard.serving if text == PRODUCTION else guard.previous
            if guarded is not None and guarded in numbers:
                return guarded, known
        aliases = self.aliases()
        if text not in (PRODUCTION, PREVIOUS) and text in aliases and aliases[text] in numbers:
            return aliases[text], known
        if text in ALIASES:
            raise InputError(
                f"{self.name} has no {text!r} version yet"
                + (" (promote one with hmmtrader promote VERSION)" if text == PRODUCTION else "")
            )
        raise InputError(
            f"{ref!r} is not a version number, an alias ({', '.join(ALIASES)}) or a models:/ URI"
        )

    def model_uri(self, ref: str | int) -> str:
        return f"models:/{self.name}/{self.resolve(ref)}"

    def load(self, ref: str | int) -> tuple[RegimeModel, int]:
        pyfunc, version = self.load_pyfunc(ref)
        return pyfunc.unwrap_python_model().model, version

    def load_pyfunc(self, ref: str | int) -> tuple[Any, int]:
        version = self.resolve(ref)
        try:
            return self._mlflow.pyfunc.load_model(f"models:/{self.name}/{version}"), version
        except Exception as exc:  # a missing or unreadable artifact, an unreachable store
            raise RegistryError(
                f"cannot load {self.name} version {version} from {self.uri} "
                f"({type(exc).__name__}: {first_line(exc)}); its model files may be missing: "
                "check the artifact store, or roll back (hmmtrader rollback)"
            ) from exc

    def find_by_fingerprint(self, value: str) -> int | None:
        for info in self.versions():
            if info.complete and info.tags.get(TAG_FINGERPRINT) == value:
                return info.version
        return None

    # ---- writing -------------------------------------------------------------------
    def _experiment_id(self) -> str:
        """The experiment, created with (or, made before, given) the tag that makes the
        MLflow UI open it on its training runs rather than on an empty GenAI traces page;
        a kind someone chose is left alone."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if EXPERIMENT_KIND not in (exp.tags or {}):
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_KIND)
            return str(exp.experiment_id)
        location = self._artifacts.resolve().as_uri() if self._local_store else None
        return str(
            self.client.create_experiment(
                self.experiment, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_KIND}
            )
        )

    def register(
        self,
        model: RegimeModel,
        *,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        version_tags: dict[str, str],
        write_files: Callable[[Path], None],
        signature: Any,
        input_example: Any,
        training_config: dict[str, Any],
    ) -> Registered:
        """Log a run (params, metrics, files from write_files, the pyfunc) and register it
        as a new version with alias `candidate`. Same fingerprint tag -> reuse that version."""
        from trading.regime.pyfunc import RegimePyfunc, write_artifacts

        self.repair()  # what a killed `train` left behind
        fp = version_tags.get(TAG_FINGERPRINT)
        if fp:
            existing = self.find_by_fingerprint(fp)
            if existing is not None:
                info = next(i for i in self.versions() if i.version == existing)
                return Registered(existing, info.run_id, reused=True)
        mlflow = self._mlflow
        experiment_id = self._experiment_id()
        with tempfile.TemporaryDirectory(prefix="hmmtrader-train-") as tmp:
            root = Path(tmp)
            write_files(root / "files")
            artifacts = write_artifacts(model, root / "model", training_config)
            with mlflow.start_run(
                experiment_id=experiment_id, run_name=run_name, tags=process_identity()
            ) as run:
                mlflow.log_params({k: _param(v) for k, v in params.items()})
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                mlflow.set_tags({k: v for k, v in version_tags.items() if k != TAG_FINGERPRINT})
                mlflow.log_artifacts(str(root / "files"))
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=RegimePyfunc(),
                    artifacts=artifacts,
                    signature=signature,
                    input_example=input_example,
                    pip_requirements=_requirements(),
                )
            run_id = run.info.run_id
        from mlflow.exceptions import MlflowException

        try:
            if not self._model_exists():
                self.client.create_registered_model(
                    self.name, description="HMM regime detector + policy head (hmm-trader)"
                )
            # created marked incomplete, in the same transaction as the version itself
            mv = self.client.create_model_version(
                self.name, info.model_uri, run_id=run_id, model_id=info.model_id,
                tags={TAG_REGISTRATION: INCOMPLETE},
            )  # fmt: skip
        except MlflowException as exc:
            self.client.delete_run(run_id)  # no orphan run without a version
            raise RegistryError(f"registering {self.name} at {self.uri}: {exc.message}") from None
        version = int(mv.version)
        try:
            for key, value in version_tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, value)
            self.client.set_model_version_tag(self.name, str(version), TAG_REGISTRATION, COMPLETE)
        except Exception as exc:
            self.client.delete_model_version(self.name, str(version))  # no half-registered version
            self.client.set_terminated(run_id, "FAILED")
            raise RegistryError(
                f"registering {self.name} version {version} at {self.uri}: {first_line(exc)}"
            ) from exc
        self.client.set_registered_model_alias(self.name, CANDIDATE, str(version))
        return Registered(version, run_id, reused=False)

    def repair(self) -> Repaired:
        """Delete the incomplete versions and mark FAILED the RUNNING runs that a process
        which is gone (killed, crashed) left behind. The work of a process that still runs,
        or that ran on another host, is left alone."""
        removed: list[int] = []
        failed: list[str] = []
        in_progress: list[int] = []
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            return Repaired(removed, failed, in_progress)
        runs = {
            r.info.run_id: r
            for r in self.client.search_runs(
                [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
            )
        }
        for info in self.versions():
            if info.complete:
                continue
            run = runs.get(info.run_id)
            if run is None and info.run_id:
                try:
                    run = self.client.get_run(info.run_id)
                except Exception:  # the run itself is gone
                    run = None
            alive = process_alive(dict(run.data.tags)) if run is not None else None
            if alive:
                in_progress.append(info.version)
                continue
            self.client.delete_model_version(self.name, str(info.version))
            removed.append(info.version)
            if run is not None and run.info.status != "FAILED":  # its registration failed
                self.client.set_terminated(run.info.run_id, "FAILED")
                failed.append(run.info.run_id)
        for run_id, run in runs.items():
            if run_id not in failed and process_alive(dict(run.data.tags)) is False:
                self.client.set_terminated(run_id, "FAILED")
                failed.append(run_id)
        return Repaired(removed, failed, in_progress)

    def set_tags(self, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)

    def version_tags(self, version: int) -> dict[str, str]:
        """The version's tags (one request; info() reads the aliases too)."""
        return dict(self.client.get_model_version(self.name, str(version)).tags or {})

    def info(self, version: int) -> VersionInfo:
        mv = self.client.get_model_version(self.name, str(version))
        aliases = sorted(a for a, v in self.aliases().items() if v == version)
        return VersionInfo(
            version=version,
            aliases=aliases,
            created=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC),
            run_id=mv.run_id or "",
            tags=dict(mv.tags or {}),
        )

    def log_results(
        self, version: int, metrics: dict[str, float], directory: Path, artifact_path: str
    ) -> str:
        """Log evaluation metrics and a directory of files under the version's MLflow run."""
        run_id = self.info(version).run_id
        if not run_id:
            raise RegistryError(f"{self.name} version {version} has no MLflow run to log to")
        try:
            for key, value in metrics.items():
                self.client.log_metric(run_id, key, float(value))
            self.client.log_artifacts(run_id, str(directory), artifact_path)
        except Exception as exc:  # mlflow raises many types; one clear line for the CLI
            raise RegistryError(f"logging results to MLflow run {run_id} failed: {exc}") from exc
        return run_id

    def _model_tags(self) -> tuple[dict[str, str], dict[str, int]]:
        if not self._model_exists():
            return {}, {}
        model = self.client.get_registered_model(self.name)
        return dict(model.tags or {}), {a: int(v) for a, v in model.aliases.items()}

    def moves(self) -> list[Move]:
        """Every recorded move of production, oldest first."""
        return moves_of(self._model_tags()[0])

    def guard(self) -> ProductionGuard:
        """The production alias checked against the recorded moves (see the module doc)."""
        return self._guard_of(*self._model_tags())

    def _guard_of(self, tags: dict[str, str], aliases: dict[str, int]) -> ProductionGuard:
        return guard_of(tags, aliases, self.version_tags)

    def production(self) -> int | None:
        """The production version every consumer uses (guarded: see `guard`)."""
        return self.guard().serving

    def _move(self, tags: dict[str, str], aliases: dict[str, int], kind: str, version: int,
              from_version: int | None, reason: str, by: str, verdict: str) -> None:  # fmt: skip
        """Append one move to `tags` (the registered model's, as read before it), then point
        the aliases at the replayed stack."""
        seqs = [m.seq for m in moves_of(tags)]
        tags = dict(tags)
        if not seqs and TAG_HISTORY not in tags:
            # the first move of a registry from before moves, production set: freeze it as
            # the trusted base
            base = stack_of(tags, aliases)
            if base:
                tags[TAG_HISTORY] = json.dumps(base)
                self.client.set_registered_model_tag(self.name, TAG_HISTORY, tags[TAG_HISTORY])
        move = Move(
            (max(seqs) if seqs else 0) + 1, kind, version, from_version,
            by or os.environ.get("USER", "unknown"), reason, verdict or "none",
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )  # fmt: skip
        key = f"{TAG_MOVE}{move.seq:06d}"
        tags[key] = json.dumps(move.to_dict())
        self.client.set_registered_model_tag(self.name, key, tags[key])
        self._point(stack_of(tags, aliases))

    def _point(self, stack: list[int]) -> None:
        """The production and previous aliases at the stack's top two entries."""
        self.client.set_registered_model_alias(self.name, PRODUCTION, str(stack[-1]))
        if len(stack) >= 2:
            self.client.set_registered_model_alias(self.name, PREVIOUS, str(stack[-2]))
        else:
            with contextlib.suppress(Exception):  # no previous alias to delete
                self.client.delete_registered_model_alias(self.name, PREVIOUS)

    def verify(self, version: int) -> None:
        """Load `version` and smoke-test it on its logged input example (what serving and
        the node do before they swap to it); a RegistryError says why it cannot serve."""
        from trading.regime.smoke import smoke_test, unwrap

        try:
            smoke_test(*unwrap(self.load_pyfunc(version)[0]))
        except IncompleteVersionError:
            raise
        except Exception as exc:  # MLflow, unpickling, a missing file, a failed smoke test
            why = (
                str(exc)
                if isinstance(exc, RegistryError)
                else f"{type(exc).__name__}: {first_line(exc)}"
            )
            raise RegistryError(
                f"{self.name} version {version} failed its load check ({why}): nothing was changed"
            ) from exc

    def promote(
        self,
        ref: str | int,
        *,
        force: bool = False,
        reason: str = "",
        verify: Callable[[int], None] | None = None,
        by: str = "",
    ) -> tuple[int | None, int]:
        """production <- version (previous <- old production), recorded as a move. Refused
        unless the version carries a passed canary verdict, or force with a reason
        (recorded as tags and in the move). The version is loaded and smoke-tested first
        (`verify`, default `self.verify`): a version that cannot serve changes nothing.
        Promoting the version an out-of-band move put behind the alias records it."""
        version = self.resolve(ref)
        tags = self.client.get_model_version(self.name, str(version)).tags or {}
        if force and not reason.strip():
            raise InputError("--force needs --reason TEXT (it is recorded on the version)")
        model_tags, aliases = self._model_tags()
        guard = self._guard_of(model_tags, aliases)
        current = guard.recorded
        if current == version and not guard.anomaly:
            return current, version
        canary = tags.get(TAG_CANARY, "")
        if canary != "passed" and not force:
            verdict = canary or "no canary verdict"
            raise PromotionRefusedError(
                f"version {version} has {verdict}: run the canary first, or promote with "
                "--force --reason TEXT"
            )
        (verify or self.verify)(version)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.set_tags(
            version,
            {
                "promoted_at": now,
                "promoted_by": os.environ.get("USER", "unknown"),
                "promotion_forced": str(bool(force)).lower(),
                **({"promotion_reason": reason.strip()} if force else {}),
            },
        )
        self._move(model_tags, aliases, "force" if force else "promote", version, current,
                   reason.strip(), by, canary)  # fmt: skip
        return current, version

    def rollback_target(self) -> tuple[int, int]:
        """(production, target): what `rollback` would move from and to. After an
        out-of-band move the target is the last recorded production (the move is undone);
        otherwise it is the recorded previous version."""
        return self._rollback_target(self.guard())

    def _rollback_target(self, guard: ProductionGuard) -> tuple[int, int]:
        if guard.anomaly and guard.recorded is not None:  # undo the out-of-band move
            return (guard.recorded if guard.alias is None else guard.alias), guard.recorded
        current, target = guard.recorded, guard.previous
        if current is None or target is None:
            raise RegistryError(
                f"nothing to roll back to: {self.name} has "
                + ("no production version" if current is None else "no previous version")
            )
        return current, target

    def rollback(
        self, *, verify: Callable[[int], None] | None = None, by: str = ""
    ) -> tuple[int, int]:
        """production <- previous; previous <- the production before that (if any), as a
        recorded move. After an out-of-band move, production <- the last recorded version
        (a `restore`). The target is loaded and smoke-tested first (`verify`)."""
        model_tags, aliases = self._model_tags()
        guard = self._guard_of(model_tags, aliases)
        current, target = self._rollback_target(guard)
        self.resolve(target)  # refuses an incomplete version
        (verify or self.verify)(target)
        restore = bool(guard.anomaly) and target == guard.recorded
        if current != target:  # not a removed alias put back
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self.set_tags(current, {"rolled_back_at": now})
        self._move(model_tags, aliases, "restore" if restore else "rollback", target, current,
                   "out-of-band move undone" if restore else "", by,
                   self.version_tags(target).get(TAG_CANARY, ""))  # fmt: skip
        return current, target


def _param(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = [
        "mlflow",
        "hmmlearn",
        "scikit-learn",
        "numpy",
        "numba",
        "pandas",
        "pyarrow",
        "pydantic",
    ]
    return [f"{n}=={version(n)}" for n in names]
