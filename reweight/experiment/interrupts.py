"""Graceful stops: the first Ctrl-C (SIGINT) or SIGTERM asks training to stop after the step
in progress, so that a checkpoint can be saved; a second one interrupts at once.

Training polls ``StopRequest.pending`` between steps; stopping inside a step would leave the
model, the optimizers and the weights out of step with each other.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from reweight.core.distributed import DataParallel
from reweight.core.errors import ReweightError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(ReweightError):
    """Training stopped on request; the message says where the checkpoint is and how to resume.
    The exit code is the shell's for the signal: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, message: str, signal_number: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signal_number)


class StopRequest:
    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def pending(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""


class AgreedStop(StopRequest):
    """The stop request of a data-parallel run: a signal to any rank stops them all after the
    same step. Every rank asks at the same points, and the ranks agree on the answer (one small
    all-reduce per question)."""

    def __init__(self, local: StopRequest, parallel: DataParallel) -> None:
        super().__init__()
        self.local, self.parallel = local, parallel

    @property
    def pending(self) -> bool:
        self.signal = self.parallel.largest(self.local.signal or 0) or None
        return self.signal is not None


@contextmanager
def stop_on_signal() -> Iterator[StopRequest]:
    """Within the block, SIGINT/SIGTERM set the request instead of raising (main thread only;
    elsewhere signals keep their usual effect)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    previous = {number: old for number, old in previous.items() if old is not signal.SIG_IGN}  # stay ignored

    def handler(number, frame) -> None:
        request.signal = number
        for other, old in previous.items():  # a second signal acts at once
            signal.signal(other, old)

    for number in previous:
        signal.signal(number, handler)
    try:
        yield request
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
