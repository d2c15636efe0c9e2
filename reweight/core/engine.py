"""The bilevel loop. It knows the contracts (Strategy, Hypergradient, BilevelNet), never a
particular strategy, granularity or method.

One step, following SOSELETO's order:

1. draw a source batch and a target batch (by default the whole, small target set);
2. target loss at the current θ: its gradient trains φᵗ and gives v = ∇_θ L_t — it never
   trains θ;
3. if the strategy learns its weights: hypergradient dL_t/dw for the batches of the
   method's look-ahead, then the strategy's update, which yields the weights of this step
   (updated *before* the step that uses them);
4. weighted inner step on θ and φˢ with (1/B) Σ wⱼ ℓⱼ (SGD, Adam or AdamW);
5. target-head step on φᵗ (its own optimizer);
6. the learning-rate schedulers, if any, advance.

Data-parallel (``parallel``, see ``reweight.core.distributed``): every rank draws the same
global batches and trains on its shard of each; the target loss and the inner loss are shares
of the global means, their gradients (θ, φˢ, φᵗ) are summed over the ranks in one all-reduce,
and the strategy sees the global batch on every rank (``reweight.core.sharded_strategy``).

A strategy may also let the target loss train θ directly (``representation_target_weight``,
0 for the bilevel methods); the baselines use it for joint, target-only and fine-tuned training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch.optim.lr_scheduler import LRScheduler

from reweight.core.augment import Augmentation
from reweight.core.contracts import (
    HiddenStateWatch,
    check_checkpointable,
    check_hypergradient,
    check_weights,
    state_if_any,
    strategy_state,
)
from reweight.core.data import BilevelData
from reweight.core.distributed import SINGLE, DataParallel, check_shardable
from reweight.core.engine_state import EngineState
from reweight.core.errors import ConfigError
from reweight.core.evaluation import Evaluation
from reweight.core.hypergrad import Hypergradient, HypergradientProblem
from reweight.core.losses import CrossEntropy
from reweight.core.models import BilevelNet, buffers_preserved
from reweight.core.optimizers import OptimizerSettings, build_optimizer
from reweight.core.selection import BestState
from reweight.core.sharded_strategy import ShardedStrategy
from reweight.core.strategy import Strategy
from reweight.core.streaming import make_sampler


@dataclass(frozen=True)
class TrainSettings:
    """The engine's knobs (validated upstream by ``reweight.experiment.config.TrainConfig``, whose
    defaults are these)."""

    source_batch_size: int = 32
    target_batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    target_lr: float = 0.1
    # the optimizers of θ and φˢ, and of φᵗ (a bare name, e.g. "adam", is accepted); SGD by default
    optimizer: OptimizerSettings | str = OptimizerSettings()
    target_optimizer: OptimizerSettings | str = OptimizerSettings()
    # builds each optimizer's learning-rate scheduler (None: a constant rate)
    schedule: Callable[[torch.optim.Optimizer], LRScheduler | None] = lambda optimizer: None
    # random crops, flips and transforms of one's own, of the source (and the target) batches
    augment: Augmentation = field(default_factory=Augmentation)


def check_placement(model: BilevelNet, data: BilevelData) -> None:
    """The model's parameters and the data on one device, and, for cross-entropy, labels that
    are class indices: one line here instead of a device or dtype error deep in the first step."""
    where = {str(p.device) for p in model.parameters()}
    data_device = str(data.source.y.device)
    if where and where != {data_device}:
        raise ConfigError(f"the model is on {', '.join(sorted(where))} and the data on {data_device}; move both to "
                          "one device (model.to(device), data.to(device))")
    if not isinstance(model.example_loss, CrossEntropy):
        return  # a loss of the user's own may take other targets (multi-label, regression)
    for name in ("source", "target", "test"):
        labels = getattr(data, name).y
        if labels.dtype != torch.long:
            raise ConfigError(f"the {name} labels are {labels.dtype}; cross-entropy needs int64 class indices "
                              "(y.long())")


class Engine(Evaluation, EngineState):
    """The bilevel loop over one model, strategy, hypergradient method and data set.

    ``step`` runs one bilevel step and ``fit`` trains to a given step, evaluating on the way;
    evaluation (``evaluate``, ``source_weights``) and checkpoint state (``state_dict``) are in
    ``reweight.core.evaluation`` and ``reweight.core.engine_state``.
    """

    def __init__(
        self,
        model: BilevelNet,
        strategy: Strategy,
        hypergradient: Hypergradient,
        data: BilevelData,
        settings: TrainSettings,
        seed: int,
        parallel: DataParallel = SINGLE,
    ) -> None:
        self.model, self.strategy, self.hypergradient = model, strategy, hypergradient
        check_placement(model, data)
        self.data, self.settings = data, settings
        self.parallel, self.sharded = parallel, ShardedStrategy(strategy, parallel)
        inner = [*model.representation.parameters(), *model.source_head.parameters()]
        self.inner_params = inner
        self.inner_optimizer = build_optimizer(inner, settings.lr, settings.optimizer, settings.momentum,
                                               settings.weight_decay, "optimizer")
        self.target_optimizer = build_optimizer(model.target_head.parameters(), settings.target_lr,
                                                settings.target_optimizer, settings.momentum, 0.0, "target_optimizer")
        schedulers = (settings.schedule(self.inner_optimizer), settings.schedule(self.target_optimizer))
        self.schedulers = [s for s in schedulers if s is not None]
        augment = settings.augment
        self.source_sampler = make_sampler(data.source, settings.source_batch_size, seed, augment.for_source(),
                                           "source")
        self.target_sampler = make_sampler(data.target, settings.target_batch_size, seed + 1, augment.for_target(),
                                           "target")
        check_shardable(parallel, data, self.source_sampler.batch_size, self.target_sampler.batch_size)
        self.unlabeled_sampler = None  # draws the unlabeled target inputs of each step, if any
        if data.unlabeled is not None and model.unlabeled_loss is not None:
            if not parallel.single:
                raise ConfigError("unlabeled: unlabeled target data is not supported in a data-parallel run yet; "
                                  "train it in one process")
            self.unlabeled_sampler = make_sampler(data.unlabeled, model.unlabeled_loss.batch_size, seed + 2, None,
                                                  "unlabeled")
        # every rank starts from rank 0's model (the same seed built the same one: this is a guard)
        parallel.broadcast_([*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())])
        device = data.source.y.device
        self.last_weights = torch.ones(len(data.source), device=device)  # last weight each example trained with
        self.step_count = 0
        # Kept on the device so that a step needs no host sync: the source and target losses
        # summed since the last evaluation, and the first step whose losses were not finite
        # (-1: none). A non-finite weight makes the weighted source loss non-finite too.
        self.loss_sums = torch.zeros(2, device=device)
        self.loss_count = 0
        self.first_bad_step = torch.tensor(-1, device=device)
        self._weights: torch.Tensor | None = None  # source_weights() at the current state, once computed
        self._checked = False  # the first step's contract checks (values, hidden state) have run
        self.best = BestState() if data.validation is not None else None  # model selection, if any
        initial_state = state_if_any(strategy)  # before training; one made by the first update: after it
        if initial_state is not None:
            check_checkpointable(initial_state, "state_dict()")

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One bilevel step; returns (weighted source loss, target loss), both detached."""
        model, strategy, parallel, sharded = self.model, self.strategy, self.parallel, self.sharded
        whole_source = self.source_sampler.next()
        source, target = parallel.shard(whole_source), parallel.shard(self.target_sampler.next())
        if self.unlabeled_sampler is not None:
            target = replace(target, unlabeled=self.unlabeled_sampler.next().x)
        model.train()
        strategy.begin_step(self.step_count)
        direct = strategy.representation_target_weight()

        with buffers_preserved(model):  # only the inner step's forward moves running statistics
            target_loss = parallel.share(model.target_loss(target), target)
        head = list(model.target_head.parameters())
        theta = list(model.representation.parameters()) if direct else []
        keep = strategy.needs_hypergradient and self.hypergradient.uses_target_graph
        grads = torch.autograd.grad(target_loss, head + theta, retain_graph=keep, allow_unused=True)
        head_grads, theta_grads = grads[: len(head)], grads[len(head):]

        first = not self._checked
        watch = HiddenStateWatch(strategy) if first else None
        if strategy.needs_hypergradient:
            problem = HypergradientProblem(
                model, source, target, target_loss, self.inner_optimizer, sharded.weights, self.upcoming, parallel
            )
            result = self.hypergradient(problem)
            check_hypergradient(result, source)
            losses = result.losses
            whole_weights = sharded.update(result.gradients)
            check_weights(whole_weights, whole_source, "update()", first)
            if first:  # the standing weights, which evaluation and the weights file read
                with torch.no_grad():
                    check_weights(sharded.whole_weights(source, losses.detach()), whole_source, "weights()", first,
                                  optional=True)
        else:
            losses = model.source_losses(source)
            whole_weights = sharded.whole_weights(source, losses.detach())
            check_weights(whole_weights, whole_source, "weights()", first)
        whole_weights = whole_weights.detach()
        weights = parallel.local(whole_weights, source)

        source_loss = parallel.mean(weights * losses, source)
        self.inner_optimizer.zero_grad(set_to_none=True)
        source_loss.backward()
        for p, g in zip(theta, theta_grads):  # the target loss's direct share of θ's step, if any
            if g is not None:
                p.grad = direct * g if p.grad is None else p.grad.add_(g, alpha=direct)
        totals = torch.stack([source_loss.detach(), target_loss.detach()]).to(self.loss_sums)
        # data-parallel: the shares' gradients and losses summed over the ranks, in one all-reduce
        parallel.sum_([*(p.grad for p in self.inner_params), *head_grads, totals])
        self.inner_optimizer.step()

        for p, g in zip(head, head_grads):
            p.grad = None if g is None else g.detach()
        self.target_optimizer.step()
        for scheduler in self.schedulers:
            scheduler.step()

        if not parallel.single:  # running statistics (BatchNorm) as rank 0 has them, as DDP does
            parallel.broadcast_([b for b in model.buffers() if b.is_floating_point()])

        self.last_weights[whole_source.index] = whole_weights.to(self.last_weights.dtype)
        self.loss_sums += totals
        self.loss_count += 1
        self._weights = None
        healthy = torch.isfinite(totals).all() | (self.first_bad_step >= 0)
        self.first_bad_step = torch.where(healthy, self.first_bad_step, self.step_count)
        self.step_count += 1
        if watch is not None:
            state = strategy_state(strategy)
            watch.check(state)
            check_checkpointable(state, "state_dict()")
            self._checked = True
        return totals[0], totals[1]

    def upcoming(self, n: int) -> list:
        """The next ``n`` source batches (this rank's shards of them), without consuming them."""
        return [self.parallel.shard(batch) for batch in self.source_sampler.peek(n)]

    def fit(
        self,
        until: int,
        eval_every: int,
        on_eval: Callable[[int, dict[str, float]], None] = lambda step, metrics: None,
        progress: Callable[[int], None] = lambda advance: None,
        after_step: Callable[[int], None] = lambda step: None,
        patience: int | None = None,
    ) -> dict[str, float]:
        """Train until step ``until`` (from wherever the engine stands: 0, or a restored
        checkpoint's step), evaluating every ``eval_every`` steps and at the end.
        ``after_step`` runs after each step and its evaluation (checkpoints, interrupts).
        With a validation set, each evaluation also reports the best one so far, and
        ``patience`` stops training after that many evaluations without a better one."""
        metrics: dict[str, float] = {}
        while self.step_count < until and not self.patience_ran_out(patience):
            self.step()
            progress(1)
            if self.step_count % eval_every == 0 or self.step_count == until:
                metrics = self.evaluate()
                means = (self.loss_sums / max(self.loss_count, 1)).tolist()
                metrics["source_loss"], metrics["train_target_loss"] = means
                if self.schedulers:  # the rate of θ and φˢ for the next step
                    metrics["lr"] = self.inner_optimizer.param_groups[0]["lr"]
                self.loss_sums.zero_()
                self.loss_count = 0
                if self.best is not None:
                    metrics.update(self.best.update(self.step_count, metrics, self.model))
                on_eval(self.step_count, metrics)
            after_step(self.step_count)
        return metrics

    def patience_ran_out(self, patience: int | None) -> bool:
        return patience is not None and self.best is not None and self.best.since >= patience
