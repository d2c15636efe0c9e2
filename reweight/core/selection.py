"""Model selection: the evaluation with the best validation accuracy, its step, its test
accuracy and the model's state then, so that a run reports both its last and its selected
model. Equal accuracies (frequent on a small validation part) are told apart by the
validation loss; a complete tie keeps the earlier step."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class BestState:
    def __init__(self) -> None:
        self.step = -1
        self.val_accuracy = -1.0
        self.val_loss = float("inf")
        self.test_accuracy = float("nan")
        self.model: dict[str, torch.Tensor] | None = None
        self.since = 0  # evaluations since the best one

    def update(self, step: int, metrics: dict[str, float], model: nn.Module) -> dict[str, float]:
        """Take this evaluation into account; returns the metrics of the best one so far."""
        better = metrics["val_accuracy"] > self.val_accuracy or (
            metrics["val_accuracy"] == self.val_accuracy and metrics["val_loss"] < self.val_loss)
        if better:
            self.step, self.val_accuracy, self.test_accuracy = step, metrics["val_accuracy"], metrics["test_accuracy"]
            self.val_loss = metrics["val_loss"]
            self.model = {name: value.detach().clone() for name, value in model.state_dict().items()}
            self.since = 0
        else:
            self.since += 1
        return {"best_step": float(self.step), "val_accuracy_at_best": self.val_accuracy,
                "test_accuracy_at_best": self.test_accuracy}

    def best_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the selected step's parameters and buffers."""
        chosen = copy.deepcopy(model)
        if self.model is not None:
            chosen.load_state_dict(self.model)
        return chosen

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss,
                "test_accuracy": self.test_accuracy, "model": self.model, "since": self.since}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.val_accuracy, self.test_accuracy = state["step"], state["val_accuracy"], state["test_accuracy"]
        self.model, self.since, self.val_loss = state["model"], state["since"], state["val_loss"]
