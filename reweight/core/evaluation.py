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
        """The weight of every source example under the strategy's current state, as the strategy
        reports them (``Strategy.reported_weights``), or the last weight each was trained with, for
        strategies without standing weights. Computed once per state: the last evaluation and the
        weights file share one pass over the source set."""
        if self._weights is not None:
            return self._weights.clone()
        self.model.eval()
        source = self.data.source
        everything = source.all()
        losses = None
        if self.strategy.weights_need_losses and source.streamed:  # batch by batch, as read
            parts = [self.strategy.reported_weights(batch, self.model.source_losses(batch)) for batch in source.batches()]
            weights = None if any(part is None for part in parts) else torch.cat(parts)
        else:
            if self.strategy.weights_need_losses:
                chunks = everything.index.split(4096)  # one forward over a whole image set would hold all activations
                losses = torch.cat([self.model.source_losses(source.gather(chunk)) for chunk in chunks])
            weights = self.strategy.reported_weights(everything, losses)
        check_weights(weights, everything, "weights()", first=False, optional=True)
        self._weights = self.last_weights.clone() if weights is None else weights.float()
        return self._weights.clone()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.check_finite()
        model, data = self.model, self.data
        model.eval()
        metrics = {}
        for name, split, loss in (("test", data.test, False), ("target", data.target, True),
                                  ("val", data.validation, True)):
            if split is None:
                continue
            correct, mean_loss = self.scores(split, loss)
            if correct is not None:  # other targets (multi-label, for a loss of one's own) have no accuracy
                metrics[f"{name}_accuracy"] = correct
            if mean_loss is not None:
                metrics[f"{name}_loss"] = mean_loss
        weights = self.source_weights()
        if not bool(torch.isfinite(weights).all()):
            raise NumericalError(f"a source weight is NaN or infinite at step {self.step_count}")
        metrics.update(weight_summary(weights, data.source.meta.get("corrupted")))
        metrics.update(slot_summary(weights, self.strategy.granularity, data.source))
        bad = [name for name, value in metrics.items() if name != "weight_noise_auc" and not math.isfinite(value)]
        if bad:
            raise NumericalError(f"non-finite {', '.join(bad)} at step {self.step_count}")
        return metrics

    def scores(self, split, loss: bool) -> tuple[float | None, float | None]:
        """Accuracy (None without class labels) and, if ``loss``, the mean target loss over a
        split: at once for an in-memory split, batch by batch for a streamed one."""
        model, labelled = self.model, class_labels(split.y)
        if not split.streamed:
            whole = split.all()
            correct = accuracy(model.predict_target(whole.x), whole.y) if labelled else None
            return correct, model.target_loss(whole).item() if loss else None
        hits = torch.zeros((), device=split.y.device)
        total = torch.zeros((), device=split.y.device)
        for batch in split.batches():  # sums on the device: one host sync per split
            logits = model.logits(batch.x, "target_head")
            if labelled:
                hits += (logits.argmax(1) == batch.y).sum()
            if loss:
                total += model.example_loss.mean(logits, batch).double() * len(batch)
        return (hits / len(split)).item() if labelled else None, (total / len(split)).item() if loss else None
