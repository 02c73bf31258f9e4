"""MLflow tracking and model registry: log a training run, register a version, resolve
references (alias, number, models:/ URI), load, promote, roll back.

Aliases: `candidate` (newest trained), `production`, `previous` (the production before
the last promotion). The registered model's tag `production_history` lists every
production version in order, so `rollback` can step back more than once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trading.env import disable_telemetry
from trading.errors import HmmTraderError, InputError
from trading.paths import StatePaths
from trading.regime.config import RegistrySettings
from trading.regime.model import RegimeModel

CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"
ALIASES = (CANDIDATE, PRODUCTION, PREVIOUS)
TAG_CANARY = "canary_verdict"  # "passed" / "failed", set by the canary gate
TAG_FINGERPRINT = "fingerprint"
TAG_HISTORY = "production_history"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class RegistryError(HmmTraderError):
    """A registry operation was refused or the registry cannot be reached."""


class PromotionRefusedError(RegistryError):
    """Promotion without a passed canary verdict (and without --force --reason)."""


def default_tracking_uri(home: Path) -> str:
    return "sqlite:///" + str((StatePaths(home).mlflow / "mlflow.db").resolve())


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


@dataclass(frozen=True)
class Registered:
    version: int
    run_id: str
    reused: bool  # a version with the same fingerprint existed: nothing new was logged


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


class Registry:
    """One registered model (name from config) in one tracking / registry store."""

    def __init__(self, settings: RegistrySettings, home: Path) -> None:
        disable_telemetry()
        import mlflow
        from mlflow.tracking import MlflowClient

        self.name = settings.model_name
        self.experiment = settings.experiment
        self.uri = settings.tracking_uri or default_tracking_uri(home)
        self._local_store = settings.tracking_uri is None
        self._artifacts = StatePaths(home).mlflow / "artifacts"
        if self._local_store:
            StatePaths(home).mlflow.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
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

    def resolve(self, ref: str | int) -> int:
        """A version number from 'production' / 'candidate' / 'previous', '3', or a
        models:/<name>/<version> or models:/<name>@<alias> URI."""
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
            return int(text)
        aliases = self.aliases()
        if text in aliases:
            return aliases[text]
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
        version = self.resolve(ref)
        pyfunc = self._mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        return pyfunc.unwrap_python_model().model, version

    def load_pyfunc(self, ref: str | int) -> tuple[Any, int]:
        version = self.resolve(ref)
        return self._mlflow.pyfunc.load_model(f"models:/{self.name}/{version}"), version

    def find_by_fingerprint(self, value: str) -> int | None:
        for info in self.versions():
            if info.tags.get(TAG_FINGERPRINT) == value:
                return info.version
        return None

    # ---- writing -------------------------------------------------------------------
    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return str(exp.experiment_id)
        location = self._artifacts.resolve().as_uri() if self._local_store else None
        return str(self.client.create_experiment(self.experiment, artifact_location=location))

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
            with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
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
            mv = self.client.create_model_version(
                self.name, info.model_uri, run_id=run_id, model_id=info.model_id
            )
        except MlflowException as exc:
            self.client.delete_run(run_id)  # no orphan run without a version
            raise RegistryError(f"registering {self.name} at {self.uri}: {exc.message}") from None
        version = int(mv.version)
        try:
            for key, value in version_tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, value)
            self.client.set_registered_model_alias(self.name, CANDIDATE, str(version))
        except Exception:
            self.client.delete_model_version(self.name, str(version))  # no half-registered version
            raise
        return Registered(version, run_id, reused=False)

    def set_tags(self, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)

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

    def _history(self) -> list[int]:
        tags = self.client.get_registered_model(self.name).tags or {}
        try:
            return [int(v) for v in json.loads(tags.get(TAG_HISTORY, "[]"))]
        except (ValueError, TypeError):
            return []

    def promote(
        self, ref: str | int, *, force: bool = False, reason: str = ""
    ) -> tuple[int | None, int]:
        """production <- version (previous <- old production). Refused unless the version
        carries a passed canary verdict, or force with a reason (recorded as tags)."""
        version = self.resolve(ref)
        tags = self.client.get_model_version(self.name, str(version)).tags or {}
        if force and not reason.strip():
            raise InputError("--force needs --reason TEXT (it is recorded on the version)")
        current = self.aliases().get(PRODUCTION)
        if current == version:
            return current, version
        canary = tags.get(TAG_CANARY, "")
        if canary != "passed" and not force:
            verdict = canary or "no canary verdict"
            raise PromotionRefusedError(
                f"version {version} has {verdict}: run the canary first, or promote with "
                "--force --reason TEXT"
            )
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
        if current is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, str(current))
        self.client.set_registered_model_alias(self.name, PRODUCTION, str(version))
        history = [v for v in self._history() if v != version]
        if current is not None and current not in history:
            history.append(current)
        history.append(version)
        self.client.set_registered_model_tag(self.name, TAG_HISTORY, json.dumps(history[-50:]))
        return current, version

    def rollback(self) -> tuple[int, int]:
        """production <- previous; previous <- the production before that (if any)."""
        aliases = self.aliases()
        current, target = aliases.get(PRODUCTION), aliases.get(PREVIOUS)
        if current is None or target is None:
            raise RegistryError(
                f"nothing to roll back to: {self.name} has "
                + ("no production version" if current is None else "no previous version")
            )
        history = [v for v in self._history() if v != current]
        if target in history:
            history = history[: history.index(target) + 1]
        else:
            history.append(target)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.set_tags(current, {"rolled_back_at": now})
        self.client.set_registered_model_alias(self.name, PRODUCTION, str(target))
        before = history[-2] if len(history) >= 2 else None
        if before is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, str(before))
        else:
            self.client.delete_registered_model_alias(self.name, PREVIOUS)
        self.client.set_registered_model_tag(self.name, TAG_HISTORY, json.dumps(history))
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
