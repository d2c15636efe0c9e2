"""Data parallelism over ``torch.distributed``: every rank draws the same seeded global batch
and works on its own contiguous shard of it.

One process gets ``SINGLE``, whose operations are the identity: no collective, no copy, the
arithmetic of a single-process step unchanged.

The conventions that make N ranks compute what one process computes:

- a mean over a global batch is computed on a rank as its *share*, the sum over its shard
  divided by the global batch's size, so that the shares add up to the mean whatever the shard
  sizes; the gradients of shares are then summed over the ranks (``sum_``, or ``summed`` inside
  a differentiable look-ahead), which gives every rank the gradient of the global mean;
- per-example values of a source shard (losses, hypergradients) are gathered into the global
  batch's order (``gather``), so that the strategy sees the global batch on every rank, with
  identical inputs, and keeps identical state; each rank then trains with its shard's slice of
  the weights (``local``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from reweight.core.data import Batch, BilevelData
from reweight.core.errors import ConfigError, ReweightError


@dataclass
class Shard(Batch):
    """A rank's contiguous slice of a global batch, which it remembers."""

    whole: Batch | None = None
    start: int = 0


class DataParallel:
    """The ranks that share each step, and the few collectives a step needs."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device | None = None) -> None:
        self.rank, self.world = rank, world
        self.device = device  # where collectives' scratch tensors live (the CUDA device under NCCL)

    @property
    def single(self) -> bool:
        return self.world == 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that writes (tracking, checkpoints, files, console)."""
        return self.rank == 0

    def bounds(self, size: int) -> tuple[int, int]:
        """This rank's part of ``size`` items, contiguous, the first ``size % world`` ranks one longer."""
        base, extra = divmod(size, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def shard(self, batch: Batch) -> Batch:
        if self.single:
            return batch
        start, stop = self.bounds(len(batch))
        return Shard(batch.x[start:stop], batch.y[start:stop], batch.index[start:stop],
                     {key: value[start:stop] for key, value in batch.meta.items()}, whole=batch, start=start)

    @staticmethod
    def whole(batch: Batch) -> Batch:
        """The global batch a shard was cut from (a batch that is no shard is its own whole)."""
        return batch.whole if isinstance(batch, Shard) else batch

    @staticmethod
    def local(values: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The shard's slice of per-example ``values`` of the global batch."""
        if not isinstance(batch, Shard):
            return values
        return values[batch.start:batch.start + len(batch)]

    def mean(self, values: torch.Tensor, batch: Batch) -> torch.Tensor:
        """This rank's share of the global batch's mean of ``values`` (its shard's entries)."""
        if self.single:
            return values.mean()
        return values.sum() / len(self.whole(batch))

    def share(self, shard_mean: torch.Tensor, batch: Batch) -> torch.Tensor:
        """A mean over the shard (e.g. a loss's own batch mean) turned into this rank's share
        of the global batch's mean."""
        if self.single:
            return shard_mean
        return shard_mean * (len(batch) / len(self.whole(batch)))

    def sum_(self, tensors: Sequence[torch.Tensor | None]) -> None:
        """Sum every tensor over the ranks, in place, in one all-reduce per dtype (None entries
        are skipped: a parameter without a gradient has none on any rank)."""
        if self.single:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for group in _by_dtype(tensors):
                flat = torch.cat([t.reshape(-1) for t in group])
                dist.all_reduce(flat)
                for t, part in zip(group, flat.split([t.numel() for t in group])):
                    t.copy_(part.view_as(t))

    def summed(self, tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """``tensors`` summed over the ranks, differentiably (the backward pass sums the
        incoming gradients over the ranks in turn): for gradients inside a look-ahead."""
        if self.single:
            return list(tensors)
        from torch.distributed.nn.functional import all_reduce

        present = [t for t in tensors if t is not None]
        if not present:
            return list(tensors)
        flat = all_reduce(torch.cat([t.reshape(-1) for t in present]))
        parts = iter(part.view_as(t) for t, part in zip(present, flat.split([t.numel() for t in present])))
        return [None if t is None else next(parts) for t in tensors]

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Per-example values of the shards (equal sizes), in the global batch's order, on every rank."""
        if self.single:
            return values
        import torch.distributed as dist

        parts = [torch.empty_like(values) for _ in range(self.world)]
        dist.all_gather(parts, values.contiguous())
        return torch.cat(parts, dim=-1)

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Rank 0's values into every rank's ``tensors``, in place (the start of training, as
        DistributedDataParallel does, and running statistics after each step)."""
        if self.single:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for group in _by_dtype(tensors):
                flat = torch.cat([t.reshape(-1) for t in group])
                dist.broadcast(flat, src=0)
                for t, part in zip(group, flat.split([t.numel() for t in group])):
                    t.copy_(part.view_as(t))

    def largest(self, value: int) -> int:
        """The largest of every rank's ``value`` (e.g. a stop request's signal number, 0: none)."""
        if self.single:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def broadcast_object(self, value: object = None) -> object:
        """Rank 0's ``value`` on every rank (picklable; for the few facts only rank 0 can read)."""
        if self.single:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0, device=self.device)
        return holder[0]

    def barrier(self) -> None:
        if not self.single:
            import torch.distributed as dist

            dist.barrier()


SINGLE = DataParallel()


def check_shardable(parallel: DataParallel, data: BilevelData, source_batch: int, target_batch: int) -> None:
    """One line, before training, for what cannot be split over the ranks: a global source batch
    that does not divide into equal shards (the strategy gathers them into one batch), a target
    batch smaller than the world, and a streamed source set without a sampler of its own per rank
    (data held in memory is replicated, and the seeded sampler gives every rank the same batch)."""
    if parallel.single:
        return
    world = parallel.world
    if source_batch % world:
        raise ConfigError(f"train.source_batch_size: the global source batch of {source_batch} examples does not "
                          f"divide into {world} equal shards, one per rank; use a multiple of {world}")
    if target_batch < world:
        raise ConfigError(f"train.target_batch_size: a target batch of {target_batch} examples leaves a rank "
                          f"without any of the {world}; use at least {world}")
    if getattr(data.source, "streamed", False) and not getattr(data.source, "distributed_sampler", False):
        raise ConfigError(f"data: a streamed source set needs a distributed sampler to run on {world} ranks "
                          "(every rank must draw the same global batch); hold it in memory, or run one process")


def _by_dtype(tensors: Sequence[torch.Tensor | None]) -> list[list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        if t is not None:
            groups.setdefault(t.dtype, []).append(t)
    return list(groups.values())


def launched_world() -> int:
    """The world size ``torchrun`` (or another launcher) set in the environment; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0"))


BACKENDS = ("auto", "nccl", "gloo")


def backend_for(name: str, device: torch.device) -> str:
    """``auto``: NCCL for CUDA devices, Gloo for the CPU."""
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name == "nccl" and device.type != "cuda":
        raise ConfigError("distributed.backend: nccl needs CUDA devices; this run trains on the CPU (use gloo or auto)")
    return name


@contextmanager
def joined(backend: str, device: torch.device) -> Iterator[DataParallel]:
    """The data-parallel group of a launched run for the block: ``SINGLE`` without a launcher;
    under ``torchrun``, this process's rank in a process group it joins (and leaves at the end,
    after every rank got there, so that no rank exits while another still writes)."""
    if launched_world() == 1:
        yield SINGLE
        return
    import torch.distributed as dist

    if dist.is_initialized():  # a process group of the caller's own
        yield DataParallel(dist.get_rank(), dist.get_world_size(), device)
        return
    dist.init_process_group(backend_for(backend, device), device_id=device if device.type == "cuda" else None)
    try:
        yield DataParallel(dist.get_rank(), dist.get_world_size(), device)
        dist.barrier()
    except ReweightError:  # raised on every rank alike (an interrupt, say): leave together
        dist.barrier()
        raise
    finally:
        dist.destroy_process_group()
