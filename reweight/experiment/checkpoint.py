"""Checkpoint files: one per child run, rewritten atomically, never holding a NaN.

A checkpoint holds the engine's state (``Engine.state_dict``: parameters, optimizers, the
strategy's weights, samplers, RNG), the MLflow run ids and the metric history so far. A
rebuilt engine with the same config and seed that loads it continues bit for bit where the
saved one stood. Files are written to a temporary name in the same folder and renamed over
the old one, so a kill while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import pickle
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from reweight.core.errors import NumericalError, ReweightError

try:
    import fcntl
except ImportError:  # no file locks on this platform
    fcntl = None

FORMAT = 1
NO_LOCK = object()  # what acquire() holds where there are no file locks


class CheckpointError(ReweightError):
    """A checkpoint file is unreadable or does not belong to the run being resumed."""


def non_finite(state: Any, path: str = "") -> str | None:
    """The path of the first floating tensor in ``state`` holding a NaN or infinity, if any."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            return path or "(tensor)"
        return None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for key, value in items:
        found = non_finite(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    bad = non_finite(state)
    if bad:  # a checkpoint must always be a state training can continue from
        raise NumericalError(f"refusing to save a checkpoint with a non-finite value in {bad}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot save the checkpoint ({error.strerror or error})") from None
    finally:
        temporary.unlink(missing_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed while saving
        stale.unlink(missing_ok=True)
    try:  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint (tensors only, no pickled code), mapped to the CPU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint missing") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file
        if isinstance(error, pickle.UnpicklingError):  # torch's own text here is advice about weights_only
            first = "damaged, or not a file that reweight wrote"
        else:
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().split("\n")[0].split(". ")[0][:200]
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a reweight checkpoint (format {FORMAT})")
    return state


def check_writable(folder: Path) -> None:
    """Fail before training, not at the first save hours later, if checkpoints cannot go there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CheckpointError(f"{folder}: cannot write checkpoints there ({error.strerror or error}); "
                              "set checkpoint.dir") from None


def acquire(lock: Path, wait: float = 0.0) -> Any:
    """The file ``lock``, open and exclusively locked by this process; None if another process
    still holds it after ``wait`` seconds. Release it with :func:`release`. (Where the platform
    has no ``fcntl``: no lock and no file, and a handle all the same.)"""
    if fcntl is None:
        return NO_LOCK
    deadline = time.monotonic() + wait
    while True:
        handle = lock.open("a")
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return None
                time.sleep(0.05)
        try:  # the holder before us may have deleted the file we opened: then lock the new one
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(lock)):
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def release(lock: Path, handle: Any) -> None:
    if handle is NO_LOCK:
        return
    lock.unlink(missing_ok=True)  # while still held, so no other process holds a deleted file
    handle.close()


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` for the block, so that two processes never
    train the same runs; fail at once if another process holds it. The file is deleted when the
    block ends."""
    handle = acquire(lock)
    if handle is None:
        raise CheckpointError(f"another process is running these runs (it holds {lock}); "
                              "wait for it to end, or stop it first")
    try:
        yield
    finally:
        release(lock, handle)
