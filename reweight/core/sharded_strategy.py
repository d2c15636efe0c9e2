"""The strategy of a data-parallel step, seen through the global batch.

Every rank holds a full copy of the strategy and calls it on the *global* batch with the same
inputs: the shards' losses and hypergradients are gathered into the global batch's order first.
So SOSELETO's table receives every rank's updates, a weight network gets the gradient of the
whole batch, a per-batch normalisation runs over the whole batch, and the state stays identical
on every rank without the strategy knowing about ranks. Each rank then trains with its shard's
slice of the weights. In one process every method is a plain call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reweight.core.data import Batch
from reweight.core.distributed import DataParallel
from reweight.core.hypergrad import WeightGradient
from reweight.core.strategy import Strategy


class ShardedStrategy:
    def __init__(self, strategy: Strategy, parallel: DataParallel) -> None:
        self.strategy, self.parallel = strategy, parallel

    def whole_weights(self, shard: Batch, losses: torch.Tensor | None) -> torch.Tensor | None:
        """``strategy.weights`` of the global batch ``shard`` belongs to (its losses gathered
        only when the strategy reads them)."""
        if self.parallel.single:
            return self.strategy.weights(shard, losses)
        gathered = self.parallel.gather(losses) if self.strategy.weights_need_losses and losses is not None else None
        return self.strategy.weights(self.parallel.whole(shard), gathered)

    def weights(self, shard: Batch, losses: torch.Tensor) -> torch.Tensor | None:
        """The shard's weights in force (the hypergradient methods' ``weight_fn``)."""
        whole = self.whole_weights(shard, losses)
        return None if whole is None else self.parallel.local(whole, shard)

    def update(self, gradients: Sequence[WeightGradient]) -> torch.Tensor:
        """``strategy.update`` on the global batches; returns the global batch's weights."""
        if self.parallel.single:
            return self.strategy.update(gradients)
        whole = []
        for g in gradients:  # losses and hypergradients in one gather per batch
            losses, grad = self.parallel.gather(torch.stack([g.losses.to(g.grad.dtype), g.grad]))
            whole.append(WeightGradient(self.parallel.whole(g.batch), losses.to(g.losses.dtype), grad))
        return self.strategy.update(whole)
