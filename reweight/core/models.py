"""The bilevel network: a shared representation θ with a source head φˢ and a target head φᵗ.

The split matters to the method: the weighted source loss trains θ and φˢ, the target loss
trains φᵗ and (through the hypergradient) the weights, never θ directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from reweight.core.data import Batch
from reweight.core.losses import CrossEntropy, Loss, PerExampleLoss, as_loss

Params = Mapping[str, torch.Tensor]


class BilevelNet(nn.Module):
    """Representation plus heads. Subclasses only build the three modules.

    Parameters go by their full names (``representation.0.weight``, ``source_head.bias``), so
    a dict of any subset of them can stand in for the module's own through
    ``torch.func.functional_call``: that is how look-ahead and unrolled parameters are
    evaluated without copying the model.
    """

    def __init__(self, representation: nn.Module, source_head: nn.Module, target_head: nn.Module | None = None,
                 loss: Loss | PerExampleLoss | None = None) -> None:
        """``target_head=None`` shares the source head: one classifier for source and target
        (one label space), as in Learning-to-Reweight and Meta-Weight-Net. ``loss`` is the
        per-example loss (cross-entropy by default; see ``use_loss``)."""
        super().__init__()
        self.representation = representation
        self.source_head = source_head
        self.target_head = source_head if target_head is None else target_head
        self.register_buffer("source_label_mask", None)
        self.use_loss(CrossEntropy() if loss is None else loss)
        self.unlabeled_loss = None  # the term on a target batch's unlabeled inputs, if any (``use_unlabeled``)

    def use_loss(self, loss: Loss | PerExampleLoss) -> None:
        """Score examples with ``loss(logits, batch)``, one loss per example, for both the
        source losses and (as their mean) the target loss. A plain callable is wrapped, never
        registered as a submodule, so the model's parameters and state stay its own."""
        self.example_loss = as_loss(loss)

    def use_unlabeled(self, term) -> None:
        """Add ``term(logits)`` of a target batch's unlabeled inputs to the target loss
        (``reweight.core.unlabeled``); like the loss, not a submodule."""
        self.unlabeled_loss = term

    def restrict_source_labels(self, mask: torch.Tensor | None) -> None:
        """Give each source task its own head: ``mask[k]`` marks task k's slice of the source
        head's outputs. The rows of one linear layer are independent heads, and a softmax
        restricted to a task's slice is that head's own cross-entropy, so one masked layer
        computes every task's loss in one vectorised pass."""
        self.source_label_mask = mask

    def mask_source_logits(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Logits outside each example's task slice set to -inf (a no-op for a one-task source)."""
        if self.source_label_mask is None:
            return logits
        return logits.masked_fill(~self.source_label_mask[batch.meta["task"]], float("-inf"))

    def forward(self, x: torch.Tensor, head: str = "target_head") -> torch.Tensor:
        return getattr(self, head)(self.representation(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation's output, e.g. for grouping examples by what the model sees."""
        return self.representation(x)

    def representation_params(self) -> dict[str, torch.Tensor]:
        """θ, by full name."""
        return {f"representation.{name}": p for name, p in self.representation.named_parameters()}

    def inner_params(self) -> dict[str, torch.Tensor]:
        """θ and φˢ, by full name: what the weighted source loss trains."""
        heads = {f"source_head.{name}": p for name, p in self.source_head.named_parameters()}
        return {**self.representation_params(), **heads}

    @property
    def shares_head(self) -> bool:
        return self.target_head is self.source_head

    def coupled_params(self) -> dict[str, torch.Tensor]:
        """The inner parameters the target loss depends on, through which every hypergradient
        flows: θ, plus φˢ when the heads are shared."""
        return self.inner_params() if self.shares_head else self.representation_params()

    def logits(self, x: torch.Tensor, head: str, params: Params | None = None) -> torch.Tensor:
        if params is None:
            return self(x, head)
        # tie_weights=False: a shared head is one module under two names, so replacing it by
        # one name already reaches both; torch's tied-weight handling would restore plain
        # tensors in place of the module's parameters afterwards.
        return functional_call(self, dict(params), (x, head), tie_weights=False)

    def source_losses(self, batch: Batch, params: Params | None = None) -> torch.Tensor:
        """Per-example source losses ℓⱼ, optionally with some parameters replaced by ``params``."""
        logits = self.mask_source_logits(self.logits(batch.x, "source_head", params), batch)
        return self.example_loss(logits, batch)

    def target_loss(self, batch: Batch, params: Params | None = None) -> torch.Tensor:
        """Mean target loss L_t, optionally with some parameters replaced by ``params``; plus the
        unlabeled term on the batch's unlabeled inputs, when both are there."""
        loss = self.example_loss.mean(self.logits(batch.x, "target_head", params), batch)
        if batch.unlabeled is not None and self.unlabeled_loss is not None:
            loss = loss + self.unlabeled_loss(self.logits(batch.unlabeled, "target_head", params))
        return loss

    @torch.no_grad()
    def predict_target(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        return torch.cat([self(part).argmax(1) for part in x.split(chunk)])


@contextmanager
def buffers_preserved(module: nn.Module) -> Iterator[None]:
    """Run look-ahead passes without letting them write buffers (BatchNorm running statistics):
    only the forward of the real inner step may move them.

    The passes write into stand-in copies; the originals are put back untouched. (Copying the
    originals back in place instead would invalidate graphs that saved them for backward.)
    """
    originals = []
    for sub in module.modules():
        for name, buffer in sub.named_buffers(recurse=False):
            originals.append((sub, name, buffer))
            setattr(sub, name, buffer.clone())
    try:
        yield
    finally:
        for sub, name, buffer in originals:
            setattr(sub, name, buffer)
