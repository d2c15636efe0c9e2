"""One writer in a data-parallel run: rank 0 talks to MLflow, the other ranks only learn what it
read (run ids, the runs a resume continues, a finished run's metrics), so that every rank takes
the same path through the runner and none of them writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from reweight.core.distributed import DataParallel
from reweight.core.errors import ReweightError
from reweight.experiment.tracking import Tracker


class LeaderTracker(Tracker):
    """Rank 0's tracker: MLflow as in one process, each answer also sent to the other ranks (an
    error too, so that they stop with it instead of waiting)."""

    def __init__(self, experiment: str, parallel: DataParallel) -> None:
        self.parallel = parallel
        self.world_size = parallel.world
        self._shared(super().__init__, experiment)

    def _shared(self, call, *args, **kwargs) -> Any:
        try:
            value = call(*args, **kwargs)
        except ReweightError as error:
            self.parallel.broadcast_object(("error", str(error)))
            raise
        self.parallel.broadcast_object(("ok", value))
        return value

    @contextmanager
    def run(self, *args, **kwargs) -> Iterator[str]:
        opened = False
        try:
            with super().run(*args, **kwargs) as run_id:
                opened = True
                self.parallel.broadcast_object(("ok", run_id))
                yield run_id
        except ReweightError as error:
            if not opened:
                self.parallel.broadcast_object(("error", str(error)))
            raise

    def unfinished_parent(self, fingerprint: str) -> str | None:
        return self._shared(super().unfinished_parent, fingerprint)

    def fingerprint(self, run_id: str) -> str | None:
        return self._shared(super().fingerprint, run_id)

    def children(self, parent_id: str):
        return self._shared(super().children, parent_id)

    def finished(self, run_id: str):
        return self._shared(super().finished, run_id)


class FollowerTracker:
    """The tracker of every other rank: it writes nothing and receives rank 0's answers."""

    experiment_id = ""

    def __init__(self, experiment: str, parallel: DataParallel) -> None:
        self.parallel = parallel
        self._received()

    def _received(self, *args, **kwargs) -> Any:
        kind, value = self.parallel.broadcast_object()
        if kind == "error":
            raise ReweightError(value)
        return value

    @contextmanager
    def run(self, *args, **kwargs) -> Iterator[str]:
        yield self._received()

    parent = child = run
    unfinished_parent = fingerprint = children = finished = _received

    def tag(self, key: str, value: str) -> None:
        pass

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def text(self, text: str, name: str) -> None:
        pass

    def figure(self, figure, name: str) -> None:
        pass

    def binary(self, data: bytes, name: str) -> None:
        pass

    def artifact_location(self, run_id: str, name: str) -> str:
        return name


def tracker_for(experiment: str, parallel: DataParallel) -> Tracker:
    """The tracker of this process: MLflow's in one process and on rank 0, a follower elsewhere."""
    if parallel.single:
        return Tracker(experiment)
    return LeaderTracker(experiment, parallel) if parallel.leader else FollowerTracker(experiment, parallel)
