"""Metrics shared by every run, named the same across the project."""

from __future__ import annotations

import torch


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return (predictions == labels).float().mean().item()


def weight_noise_auc(weights: torch.Tensor, corrupted: torch.Tensor) -> float:
    """ROC AUC of the weights as a clean-vs-corrupted detector (1 = every clean example
    outweighs every corrupted one, 0.5 = no better than chance)."""
    from sklearn.metrics import roc_auc_score

    clean = (~corrupted.bool()).cpu().numpy()
    if clean.all() or not clean.any():
        return float("nan")
    return float(roc_auc_score(clean, weights.detach().double().cpu().numpy()))


def weight_summary(weights: torch.Tensor, corrupted: torch.Tensor | None) -> dict[str, float]:
    """Mean weight overall and, when the benchmark knows the corrupted labels, per kind and the AUC."""
    summary = {"weight_mean": weights.mean().item()}
    if corrupted is not None and 0 < int(corrupted.sum()) < len(corrupted):
        corrupted = corrupted.bool()
        summary["weight_clean_mean"] = weights[~corrupted].mean().item()
        summary["weight_corrupted_mean"] = weights[corrupted].mean().item()
        summary["weight_noise_auc"] = weight_noise_auc(weights, corrupted)
    return summary
