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


def slot_means(weights: torch.Tensor, slot_of: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Mean weight of each slot's members (NaN for a slot without members)."""
    weights = weights.detach().double()
    sums = torch.zeros(num_slots, dtype=torch.float64, device=weights.device).index_add_(0, slot_of, weights)
    counts = torch.bincount(slot_of, minlength=num_slots).to(sums)
    return sums / counts


def rank_auc(high: torch.Tensor, low: torch.Tensor) -> float:
    """P(a value of ``high`` > a value of ``low``), ties counting one half: 1 means every
    entry of ``high`` outranks every entry of ``low``."""
    difference = high[:, None] - low[None, :]
    return ((difference > 0).double() + 0.5 * (difference == 0).double()).mean().item()


def slot_summary(weights: torch.Tensor, granularity, source) -> dict[str, float]:
    """``weight_<slot name>`` per slot for granularities that name their slots, and, when the
    source marks its harmful examples (a boolean ``harmful`` meta column: ground truth the
    training never sees), how well the slot weights rank helpful slots above harmful ones:
    ``weight_harmful_auc`` (1 = every harmful slot has a lower weight than every helpful one)."""
    names = granularity.slot_names()
    if names is None:
        return {}
    slot_of = granularity.slots(source.all())
    means = slot_means(weights, slot_of, len(names))
    summary = {f"weight_{name}": value for name, value in zip(names, means.tolist()) if value == value}
    harmful = source.meta.get("harmful")
    if harmful is not None:
        share = slot_means(harmful.to(weights.device).double(), slot_of, len(names))
        filled = ~torch.isnan(share)
        bad, good = filled & (share >= 0.5), filled & (share < 0.5)
        if bad.any() and good.any():
            summary["weight_harmful_auc"] = rank_auc(means[good], means[bad])
            summary["weight_harmful_mean"] = means[bad].mean().item()
            summary["weight_helpful_mean"] = means[good].mean().item()
    return summary
