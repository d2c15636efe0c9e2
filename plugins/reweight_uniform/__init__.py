"""The no-reweighting baseline: every source example has weight 1.

θ and φˢ train on the plain source loss; φᵗ still trains on the target set, so the
comparison with a reweighting strategy isolates the effect of the weights.
"""

import torch

from reweight import Strategy, hookimpl


class Uniform(Strategy):
    """All weights 1, no hypergradient computed."""

    needs_hypergradient = False

    def weights(self, batch, losses):
        return torch.ones(len(batch), device=batch.y.device)


@hookimpl
def register_strategies(register):
    register("uniform", Uniform)
