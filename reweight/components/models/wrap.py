"""Any ``nn.Module`` as a bilevel network: its classifier becomes the source head, everything
before it the representation θ, and the target head is either the same classifier or a new
linear layer on the same features.

The classifier is taken out of the module and an ``nn.Identity`` put in its place, so the
module's own ``forward`` computes the features; ``unwrap`` puts a head back and returns the
user's module, trained in place (its parameters are the ones the engine trained).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from reweight.core.errors import ConfigError
from reweight.core.models import BilevelNet

TargetHead = Literal["shared", "separate"]


class WrappedNet(BilevelNet):
    """A ``BilevelNet`` made from a user's module by ``bilevel``."""

    def __init__(self, module: nn.Module, head_path: str, source_head: nn.Module,
                 target_head: nn.Module | None) -> None:
        super().__init__(module, source_head, target_head)
        self.head_path = head_path

    @property
    def module(self) -> nn.Module:
        """The user's module (its head out of place until ``unwrap``)."""
        return self.representation

    def unwrap(self, head: Literal["target", "source"] = "target") -> nn.Module:
        """The user's module with a head back in its place (the target head by default: the
        classifier of the target task) — the trained model, as the user built it."""
        module = self.representation
        set_submodule(module, self.head_path, self.target_head if head == "target" else self.source_head)
        return module


def set_submodule(module: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, name, value)


def find_classifier(module: nn.Module) -> str:
    """The dotted name of the module's last ``nn.Linear`` (in registration order)."""
    linear = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear) and name]
    if not linear:
        raise ConfigError(f"{type(module).__name__} has no nn.Linear to use as its classifier; name the head "
                          "with head=... (a dotted submodule name, e.g. 'fc' or 'classifier.3')")
    return linear[-1]


def bilevel(module: nn.Module, head: str | None = None, target: TargetHead | nn.Module = "shared",
            target_classes: int | None = None) -> WrappedNet:
    """Split ``module`` into representation and heads.

    ``head`` names the classifier submodule (default: the last ``nn.Linear``). ``target``:
    ``"shared"`` — one classifier for source and target (one label space, as in noisy labels);
    ``"separate"`` — a new ``nn.Linear`` on the same features with ``target_classes`` outputs
    (default: as many as the classifier's); or a module of your own. The module must compute
    its output by applying the head last, as classifiers do.
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"the model must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, BilevelNet):
        raise ConfigError("the model is already a BilevelNet; pass it as it is")
    path = head or find_classifier(module)
    if path == "":
        raise ConfigError("the head cannot be the whole module")
    try:
        classifier = module.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in module.named_children()]
        raise ConfigError(f"{type(module).__name__} has no submodule {path!r} (its children: "
                          f"{', '.join(names) or 'none'})") from None
    head_params = {id(p) for p in classifier.parameters()}
    if all(id(p) in head_params for p in module.parameters()):
        raise ConfigError(f"{type(module).__name__} without its head {path!r} has no parameters: there is no "
                          "representation to train; name an earlier layer as the head, or add layers")
    width = getattr(classifier, "in_features", None)
    if target == "shared":
        target_head = None
    elif target == "separate":
        if width is None:
            raise ConfigError(f"head {path!r} is a {type(classifier).__name__}, not an nn.Linear: give the target "
                              "head as a module (target=nn.Linear(features, classes))")
        outputs = target_classes or getattr(classifier, "out_features")
        target_head = nn.Linear(width, outputs).to(next(classifier.parameters()).device)
    elif isinstance(target, nn.Module):
        wanted = getattr(target, "in_features", None)
        if width is not None and wanted is not None and wanted != width:
            raise ConfigError(f"the target head takes {wanted} features, but the representation gives {width} "
                              f"(the input width of {path!r})")
        target_head = target
    else:
        raise ConfigError(f"target must be 'shared', 'separate' or an nn.Module, got {target!r}")
    set_submodule(module, path, nn.Identity())  # only now, once nothing can fail: the module stays whole on errors
    return WrappedNet(module, path, classifier, target_head)


def check_features(net: BilevelNet, x: torch.Tensor) -> None:
    """One forward of a few examples through the representation and both heads, so that a
    width mismatch is a one-line error before training, not a matmul error at the first step."""
    with torch.no_grad():
        try:
            features = net.representation(x[:2])
        except RuntimeError as error:
            raise ConfigError(f"the model's representation fails on the data's inputs of shape "
                              f"{tuple(x.shape[1:])}: {' '.join(str(error).split())[:200]}") from None
        for name in ("source_head", "target_head"):
            head = getattr(net, name)
            wanted = getattr(head, "in_features", None)
            if features.dim() == 2 and wanted is not None and features.shape[1] != wanted:
                raise ConfigError(f"the {name.replace('_', ' ')} takes {wanted} features, but the representation "
                                  f"gives {features.shape[1]}")
