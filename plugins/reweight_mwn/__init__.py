"""Meta-Weight-Net (Shu, Xie, Yi, Zhao, Zhou, Xu & Meng, "Meta-Weight-Net: Learning an
Explicit Mapping for Sample Weighting", NeurIPS 2019).

An example's weight is a small network of its loss, wⱼ = V(ℓⱼ; ψ), by default 1-100-1 with a
ReLU and a sigmoid output. ψ is trained by the hypergradient through the chain rule,

    dL_t/dψ = Σⱼ dL_t/dwⱼ · ∂V(ℓⱼ; ψ)/∂ψ,

summed over every batch of the method's look-ahead, with the loss fed to V treated as a
constant (as the authors' code does). After ψ's update the weights of the current batch are
recomputed with the new ψ, as in the paper's algorithm. With a granularity coarser than
per-sample, V sees the mean loss of each slot's members in the batch, and all members share
the slot's weight.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from reweight import Strategy, hookimpl


class MetaWeightNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[PositiveInt] = Field(default=[100], min_length=1, description="Hidden widths of V.")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="Adam is insensitive to the hypergradient's small scale.")
    lr: float = Field(1e-3, gt=0, description="Learning rate of ψ.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum of ψ's SGD (sgd only).")
    weight_decay: float = Field(1e-4, ge=0)


def weight_network(hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 1
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, 1), nn.Sigmoid())


class MetaWeightNet(Strategy):
    """Weights as a learned function of the loss."""

    Options = MetaWeightNetOptions

    def __init__(self, options: MetaWeightNetOptions, granularity, device) -> None:
        super().__init__(options, granularity, device)
        self.net = weight_network(options.hidden).to(device)
        params = self.net.parameters()
        if options.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=options.lr, momentum=options.momentum,
                                             weight_decay=options.weight_decay)

    def _inputs(self, batch, losses):
        """Each example's input to V: its slot's mean loss within the batch (its own loss per-sample)."""
        losses = losses.detach().to(next(self.net.parameters()).dtype)
        sums, inverse = self.granularity.batch_slot_sums(batch, losses)
        counts = torch.bincount(inverse, minlength=len(sums)).to(losses.dtype)
        return (sums / counts)[inverse].unsqueeze(1)

    def _weights(self, batch, losses):
        return self.net(self._inputs(batch, losses)).squeeze(1)

    def weights(self, batch, losses):
        with torch.no_grad():
            return self._weights(batch, losses)

    def update(self, gradients):
        self.optimizer.zero_grad(set_to_none=True)
        for g in gradients:
            weights = self._weights(g.batch, g.losses)
            weights.backward(g.grad.to(weights.dtype))
        self.optimizer.step()
        return self.weights(gradients[0].batch, gradients[0].losses)

    def state_dict(self):
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


@hookimpl
def register_strategies(register):
    register("meta_weight_net", MetaWeightNet)
