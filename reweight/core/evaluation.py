"""What an engine reports at an evaluation: accuracies, losses and the weights' summaries, and
the guard against NaN or infinite losses (read here, not per step, to avoid a host sync)."""

from __future__ import annotations

import math

import torch

from reweight.core.contracts import check_weights
from reweight.core.data import class_labels
from reweight.core.errors import NumericalError
from reweight.core.metrics import accuracy, slot_summary, weight_summary


class Evaluation:
    """The ``Engine``'s evaluation methods. They read the engine's model, strategy, data,
    ``last_weights``, ``first_bad_step`` and ``step_count``, and cache the source weights in
    ``_weights`` until the next step."""

    def check_finite(self) -> None:
        """Raise ``NumericalError`` if a loss (hence a weight) was NaN or infinite at any step
        so far. One host sync: call it at evaluations and before checkpoints, not per step."""
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise NumericalError(
                f"the loss became NaN or infinite at step {bad + 1} (stopped at step {self.step_count}); "
                "lower train.lr or the strategy's learning rate"
            )

    @torch.no_grad()
    def source_weights(self) -> torch.Tensor:
        """The weight of every source example under the strategy's current state (or the last
        weight each was trained with, for strategies without standing weights). Computed once per
        state: the last evaluation and the weights file share one pass over the source set."""
        if self._weights is not None:
            return self._weights.clone()
        self.model.eval()
        source = self.data.source
        everything = source.all()
        losses = None
        if self.strategy.weights_need_losses:
            chunks = everything.index.split(4096)  # one forward over a whole image set would hold all activations
            losses = torch.cat([self.model.source_losses(source.gather(chunk)) for chunk in chunks])
        weights = self.strategy.weights(everything, losses)
        check_weights(weights, everything, "weights()", first=False, optional=True)
        self._weights = self.last_weights.clone() if weights is None else weights.float()
        return self._weights.clone()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.check_finite()
        model, data = self.model, self.data
        model.eval()
        target = data.target.all()
        metrics = {}
        if class_labels(target.y):  # other targets (multi-label, for a loss of one's own) have no accuracy
            metrics["test_accuracy"] = accuracy(model.predict_target(data.test.x), data.test.y)
            metrics["target_accuracy"] = accuracy(model.predict_target(target.x), target.y)
        metrics["target_loss"] = model.target_loss(target).item()
        if data.validation is not None:
            held = data.validation.all()
            if class_labels(held.y):
                metrics["val_accuracy"] = accuracy(model.predict_target(held.x), held.y)
            metrics["val_loss"] = model.target_loss(held).item()
        weights = self.source_weights()
        if not bool(torch.isfinite(weights).all()):
            raise NumericalError(f"a source weight is NaN or infinite at step {self.step_count}")
        metrics.update(weight_summary(weights, data.source.meta.get("corrupted")))
        metrics.update(slot_summary(weights, self.strategy.granularity, data.source))
        bad = [name for name, value in metrics.items() if name != "weight_noise_auc" and not math.isfinite(value)]
        if bad:
            raise NumericalError(f"non-finite {', '.join(bad)} at step {self.step_count}")
        return metrics
