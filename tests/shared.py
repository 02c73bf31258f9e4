"""Expensive test worlds built once per test run, across xdist workers.

A world (a state root with a lake and a trained registry, a fitted model) is built by the
first worker that asks for it, under a file lock in the run's shared temp directory
(pytest's base temp, which every worker of one run shares); the others wait for it and
then read it. Worlds are read-only: a test that changes one works on a copy (`copy_world`).

Without the shared directory (HMMTRADER_TEST_SHARED unset: outside a pytest session),
everything is built on each call.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED_ENV = "HMMTRADER_TEST_SHARED"


def shared_root() -> Path | None:
    value = os.environ.get(SHARED_ENV)
    return Path(value) if value else None


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_dir(name: str, build: Callable[[Path], None]) -> Path:
    """The directory `name`, built by `build(path)` once per run. It is built in place (an
    MLflow store records absolute paths) and marked complete at the end; a failed build is
    removed, and the next caller tries again."""
    root = shared_root()
    if root is None:
        raise RuntimeError(f"{SHARED_ENV} is not set: shared worlds need the test session")
    world = root / "worlds" / name
    done = world / ".built"
    with _locked(root / "worlds" / f"{name}.lock"):
        if not done.is_file():
            shutil.rmtree(world, ignore_errors=True)
            try:
                build(world)
            except BaseException:
                shutil.rmtree(world, ignore_errors=True)
                raise
            done.write_text("")
    return world


def shared_value[T](key: str, compute: Callable[[], T]) -> T:
    """`compute()` once per run for `key` (pickled in the shared directory); without the
    shared directory, computed on each call."""
    root = shared_root()
    if root is None:
        return compute()
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    path = root / "values" / f"{digest}.pkl"
    with _locked(path.with_suffix(".lock")):
        if path.is_file():
            with open(path, "rb") as handle:
                value: T = pickle.load(handle)
            return value
        value = compute()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.rename(path)
        return value


def copy_world(world: Path, dest: Path) -> Path:
    """A private copy of a shared world (the test may change it). Run directories are not
    copied."""
    shutil.copytree(world, dest, ignore=shutil.ignore_patterns("runs"))
    return dest
