"""The training loop: a minimal `TrainerBase` with hooks, and the step that trains.

`TrainerBase.train` runs `before_step -> run_step -> after_step` for every iteration and
lets hooks do everything else (timing, LR schedule, checkpoints, evaluation, logging).
`EagerTrainer.run_step` is one optimizer step over `grad_acc_steps` micro-batches; the
trainer draws them from its loader and turns each into the model's keyword arguments
with the `batch_fn` it was built with, so a trainer trains by itself:

    EagerTrainer(model, loader, optimizer).train(0, 100)
"""
from __future__ import annotations

import gc
import logging
import math
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Optional

import torch
import torch.distributed as torch_dist
from torch import nn

from libai.data.structures import DistTensorData, Instance
from libai.engine.hooks import HookBase  # noqa: F401  (LiBai's import path: libai.engine.trainer.HookBase)
from libai.utils import distributed as dist
from libai.utils.events import EventStorage, get_event_storage

logger = logging.getLogger(__name__)

BatchFn = Callable[[Any], dict]


def default_batch_fn(data: Any) -> dict:
    """A loader's batch as the model's keyword arguments, on this rank's device.

    `data` is an `Instance` (its fields, keyed by field name, which LiBai's datasets make
    the model's `forward` argument names) or a mapping of tensors or `DistTensorData`.
    A `DistTensorData` becomes `model_input(name)`: under pipeline parallelism only the
    stage its `placement_idx` names gets the data (the others a stand-in without data),
    laid out per its `sbp_list`. Other values pass unchanged.
    """
    fields = data.get_fields() if isinstance(data, Instance) else data
    if not isinstance(fields, Mapping):
        raise TypeError(
            f"the train loader yielded a {type(data).__name__}: a batch must be an Instance or a "
            f"dict of tensors, or give the trainer a batch_fn that turns it into the model's "
            f"keyword arguments"
        )
    device = dist.get_device()
    return {key: _model_input(key, value, device) for key, value in fields.items()}


def _model_input(name: str, value: Any, device: torch.device) -> Any:
    if isinstance(value, DistTensorData):
        return value.model_input(name)
    return value.to(device, non_blocking=True) if torch.is_tensor(value) else value


def _sum_in_order(terms: list[torch.Tensor]) -> torch.Tensor:
    """`terms[0] + terms[1] + ...` (the value `sum(terms)` gives, without its `0 +` kernel)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _reads_metrics(hook: Any) -> bool:
    """`hook.reads_metrics()`; a hook without that method (not a `HookBase`) may read the
    storage in any `after_step`, so it is given every step's metrics."""
    reads = getattr(hook, "reads_metrics", None)
    return True if reads is None else bool(reads())


@contextmanager
def frozen_heap(enabled: bool = True) -> Iterator[None]:
    """Keep Python's cyclic garbage collector off the objects that exist before training.

    A training step allocates many short-lived container objects (an `Instance` and its
    fields per sample), so the collector runs often, and each of its full passes would
    walk every object of the run (model, configs, hooks, loaders) again. `gc.freeze()`
    moves those into the permanent generation for the duration; new objects are
    collected as usual, and `gc.unfreeze()` gives the old ones back at the end. Measured
    on the MNIST tutorial's MLP (`benchmarks/trainer_overhead.py`): the per-round spread
    of the trainer's speed shrinks and the trainer/plain ratio rises by a few percent.
    A heap that is already frozen (by the caller) is left as it is.
    """
    if not enabled or gc.get_freeze_count() > 0:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class TrainerBase:
    """Iterate from `start_iter` to `max_iter`, calling the registered hooks around each step.

    Attributes:
        iter: the current iteration.
        start_iter: the iteration training starts (or resumes) from.
        max_iter: the iteration to stop at (exclusive).
        storage: the `EventStorage` of this run.
    """

    def __init__(self) -> None:
        self._hooks: list = []
        self.iter: int = 0
        self.start_iter: int = 0
        self.max_iter: int = 0
        self.storage: Optional[EventStorage] = None
        # Set by `stop_training`; the loop ends after the current step's hooks.
        self.stop_reason: Optional[str] = None
        # Whether `train` runs inside `frozen_heap` (DefaultTrainer: `train.gc_freeze`).
        self.freeze_heap: bool = True

    def register_hooks(self, hooks: list) -> None:
        """Append hooks; they run in the order given. `None` entries are skipped."""
        hooks = [h for h in hooks if h is not None]
        for hook in hooks:
            # A weak reference avoids a cycle trainer -> hook -> trainer.
            hook.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations `start_iter .. max_iter - 1`."""
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage, frozen_heap(self.freeze_heap):
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self.stop_reason is not None:
                        logger.info("Training stopped after iteration %d: %s", self.iter, self.stop_reason)
                        break
                # Steps after the last read (no hook read them) still reach the storage.
                self.read_metrics()
                # After a normal finish `iter` is one past the last step, as in detectron2.
                self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def stop_training(self, reason: str) -> None:
        """End training after the current iteration's `after_step` hooks (early stopping).
        Every rank must call it at the same iteration."""
        self.stop_reason = reason

    def before_train(self) -> None:
        for hook in self._hooks:
            hook.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.before_step()

    def after_step(self) -> None:
        if any(_reads_metrics(hook) for hook in self._hooks):
            self.read_metrics()
        for hook in self._hooks:
            hook.after_step()

    def run_step(self) -> None:
        """One training iteration; subclasses define it."""
        raise NotImplementedError

    def read_metrics(self) -> None:
        """Put the metrics of the steps not read yet into the storage. The loop calls it
        before the hooks of an iteration where one of them `reads_metrics()`, and after the
        last step; every rank calls it at the same iterations (it may be a collective).
        `TrainerBase` records nothing; `EagerTrainer` reads its losses here."""

    def state_dict(self) -> dict:
        """The loop's state: the iteration and every hook's `state_dict()` (JSON-able values).

        Hooks are keyed by class name (`Name#1`, `Name#2`, ... from the second hook of the
        same class on); hooks with an empty state are left out.
        """
        hooks = {}
        for key, hook in self._hook_keys():
            state = hook.state_dict()
            if state:
                hooks[key] = state
        return {"iteration": self.iter, "hooks": hooks}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved into this trainer and its registered hooks.

        A saved hook state that no registered hook claims is logged and skipped (the run
        was resumed with other hooks), so is a registered hook the state does not mention.
        """
        self.iter = int(state["iteration"])
        saved = dict(state.get("hooks", {}))
        for key, hook in self._hook_keys():
            if key in saved:
                hook.load_state_dict(saved.pop(key))
        if saved:
            logger.warning("Saved state of hooks that this trainer does not have, ignored: %s", sorted(saved))

    def _hook_keys(self) -> list[tuple[str, Any]]:
        seen: dict[str, int] = {}
        keys = []
        for hook in self._hooks:
            name = type(hook).__qualname__
            count = seen[name] = seen.get(name, 0) + 1
            keys.append((name if count == 1 else f"{name}#{count}", hook))
        return keys


class EagerTrainer(TrainerBase):
    """One optimizer step over `grad_acc_steps` micro-batches, in eager PyTorch.

    The model follows LiBai's contract: `model(**batch)` returns a dict and every value
    whose key contains "loss" is summed into the loss. When a step sums several
    micro-batch gradients (accumulation or data parallelism), the gradient reducer averages
    them: by default in buckets that overlap backward, as DDP does (the update equals the
    one of a single global batch on one process up to float32 rounding), or with
    `train.dist.exact_reduction` in float64, bit for bit over any data-parallel split and
    micro-batching. Gradients are clipped per `clip_grad_max_norm` / `clip_grad_norm_type` found in the
    optimizer's parameter groups (see `get_default_optimizer_params`).

    Args:
        model: the module to train (or its compiled `GraphBase`).
        data_loader: yields batches; iterated forever.
        optimizer: a torch optimizer.
        grad_acc_steps: micro-batches per optimizer step.
        autocast_dtype: run forward under `torch.autocast` with this dtype (None: fp32).
        grad_scaler: a `torch.amp.GradScaler` for fp16, else None.
        grad_reducer: averages micro-batch gradients over data-parallel ranks
            (`distributed.make_gradient_reducer`, or ZeRO's); None when a step has
            a single micro-batch on a single replica.
        batch_fn: turns one batch of the loader into the model's keyword arguments
            (default `default_batch_fn`: an `Instance`'s fields on this rank's device).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        grad_acc_steps: int = 1,
        autocast_dtype: Optional[torch.dtype] = None,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        grad_reducer=None,
        batch_fn: Optional[BatchFn] = None,
    ) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter = iter(data_loader)
        self.optimizer = optimizer
        self.grad_acc_steps = int(grad_acc_steps)
        self.grad_scaler = grad_scaler
        self._autocast_dtype = autocast_dtype
        self._clip_groups = _clip_groups(optimizer)
        self._found_inf: Optional[torch.Tensor] = None
        self._reducer = grad_reducer
        self.batch_fn: BatchFn = batch_fn or default_batch_fn
        # Steps whose losses are still on the device: (iteration, loss names, loss means,
        # data time, the GradScaler's overflow flag), read by `read_metrics`.
        self._unread: list[tuple[int, list[str], torch.Tensor, float, Optional[torch.Tensor]]] = []
        # How many times the losses were read to the host (one transfer each).
        self.metric_reads = 0

    def _autocast(self):
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(dist.get_device().type, dtype=self._autocast_dtype)

    def next_batch(self) -> dict:
        """The next micro-batch of the loader, as the model's keyword arguments."""
        return self.batch_fn(next(self._data_loader_iter))

    def run_step(self) -> None:
        """Forward and backward `grad_acc_steps` micro-batches, clip, step the optimizer."""
        data_time = 0.0
        loss_sums: dict[str, torch.Tensor] = {}
        for _ in range(self.grad_acc_steps):
            start = time.perf_counter()
            batch = self.next_batch()
            data_time += time.perf_counter() - start
            with self._autocast():
                loss_dict = self.model(**batch)
            terms = {k: v for k, v in loss_dict.items() if "loss" in k}
            if not terms:
                raise ValueError(
                    f"{type(self.model).__name__}.forward returned keys {sorted(loss_dict)} and none "
                    f"contains 'loss': the trainer needs a loss to train"
                )
            losses = _sum_in_order(list(terms.values()))
            if self.grad_scaler is not None:
                losses = self.grad_scaler.scale(losses)
            losses.backward()
            if self._reducer is not None:
                self._reducer.accumulate()
            for key, value in terms.items():
                value = value.detach().double()
                loss_sums[key] = loss_sums[key] + value if key in loss_sums else value
        if self._reducer is not None:
            self._reducer.reduce()
        self._step_optimizer()
        if self.grad_acc_steps > 1:
            loss_sums = {k: v / self.grad_acc_steps for k, v in loss_sums.items()}
        self.write_metrics(loss_sums, data_time)

    def _step_optimizer(self) -> None:
        # The GradScaler's overflow flag of this step (a tensor: read only if a loss is
        # non-finite, so no host sync per step); None without fp16 loss scaling.
        self._found_inf = None
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
            self._found_inf = sync_found_inf(self.grad_scaler, self.optimizer)
        for params, max_norm, norm_type in self._clip_groups:
            dist.clip_grad_norm_(params, max_norm, norm_type)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def write_metrics(self, loss_means: dict, data_time: float) -> None:
        """Keep the step's losses (tensors: means over this rank's micro-batches) and data
        time until `read_metrics`, which puts them into the storage: no host sync per step."""
        keys = list(loss_means)
        # One loss (the usual case) is only reshaped: no stacking kernel per step.
        losses = loss_means[keys[0]].reshape(1) if len(keys) == 1 else torch.stack([loss_means[k] for k in keys])
        self._unread.append((get_event_storage().iter, keys, losses, data_time, self._found_inf))

    def read_metrics(self) -> None:
        """Average the unread steps' losses over data-parallel ranks (one collective and
        one transfer for all of them), check each step's losses are finite, and put them
        into the storage at their own iterations, as if each step had put its own."""
        if not self._unread:
            return
        unread, self._unread = self._unread, []
        means = dist.all_reduce_mean_data_parallel(torch.cat([losses for _, _, losses, _, _ in unread])).tolist()
        self.metric_reads += 1
        storage = get_event_storage()
        offset = 0
        for iteration, keys, _, data_time, found_inf in unread:
            metrics = dict(zip(keys, means[offset : offset + len(keys)]))
            offset += len(keys)
            self._check_finite(metrics, iteration, found_inf)
            storage.put_scalar("total_loss", sum(metrics.values()), iteration=iteration)
            for name, value in dict(data_time=data_time, **metrics).items():
                storage.put_scalar(name, value, iteration=iteration)

    @staticmethod
    def _check_finite(metrics: dict, iteration: int, found_inf: Optional[torch.Tensor]) -> None:
        """Stop on a NaN or infinite loss, except in an fp16 step the GradScaler skipped
        (`found_inf`, its overflow flag, read only here).

        The values are the data-parallel means, so every rank takes the same decision. It
        runs before the hooks of any iteration that saves or evaluates, so nothing is saved
        from a state that followed a non-finite loss.
        """
        bad = [key for key, value in metrics.items() if not math.isfinite(value)]
        if not bad:
            return
        if found_inf is not None and bool(found_inf.item()):
            return  # the GradScaler skipped this step and lowers its scale
        values = ", ".join(f"{key} = {metrics[key]}" for key in bad)
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration} ({values}): training stopped and nothing was "
            f"saved after it; lower optim.lr, set train.amp / clipping (clip_grad_max_norm), or check "
            f"the data of this iteration, then resume from the last checkpoint with --resume"
        )


class NonFiniteLossError(FloatingPointError):
    """A loss that is NaN or infinite: training stops before anything is saved from it."""


class PipelineTrainer(EagerTrainer):
    """The step under pipeline parallelism: one schedule run over `grad_acc_steps`
    micro-batches (`libai.engine.pipeline.PipelineEngine`), then the same reduction,
    clipping and optimizer step as `EagerTrainer`.

    The micro-batches are the loader's, handed to the engine as they are (no copy), so
    every layout sees the same micro-batches. Weights held by the first and the last stage
    (tied word embeddings) get their two gradients summed before clipping. With fp16 the
    last stage's schedule loss is multiplied by the GradScaler's scale, and every rank
    unscales its own gradients and skips the step when any rank found an overflow.
    """

    def __init__(self, engine, data_loader, optimizer: torch.optim.Optimizer, grad_acc_steps: int = 1, **kwargs) -> None:
        super().__init__(engine.model, data_loader, optimizer, grad_acc_steps, **kwargs)
        self.engine = engine
        if self._reducer is not None:
            engine.on_microbatch_backward = self._reducer.accumulate
        if self.grad_scaler is not None:
            engine.loss_scale = self.grad_scaler.scale

    def run_step(self) -> None:
        """Run the schedule over one global step's micro-batches, then step the optimizer."""
        start = time.perf_counter()
        micro_batches = [self.next_batch() for _ in range(self.grad_acc_steps)]
        data_time = time.perf_counter() - start
        if self.grad_scaler is not None:
            # Only the last stage scales a loss; this makes the scale exist on every rank,
            # which `unscale_` needs (the same value everywhere: the overflow flag is shared).
            self.grad_scaler.scale(torch.zeros((), device=dist.get_device()))
        with self._autocast():
            loss_means = self.engine.step(micro_batches)
        if self._reducer is not None:
            self._reducer.reduce()
        dist.sync_first_last_grads(self.engine.shared_parameters())
        self._step_optimizer()
        self.write_metrics(loss_means, data_time)


def sync_found_inf(grad_scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Make every rank skip the step when any rank found an inf/nan gradient; return that
    flag (a one-element float tensor on this rank's device, 1.0 = the step is skipped).

    `GradScaler.unscale_` checks only this rank's gradient shards (tensor-, pipeline- or
    ZeRO-split), so ranks could disagree and the model replicas drift apart; the max of
    the flags over all ranks is what one process would have found. (GradScaler keeps the
    flags per optimizer in `_per_optimizer_states`; there is no public accessor.)
    """
    found = grad_scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]
    flag = torch.zeros(1, dtype=torch.float32, device=dist.get_device())
    for value in found.values():
        flag = torch.maximum(flag, value.to(flag.device, flag.dtype).reshape(1))
    if not torch_dist.is_initialized() or torch_dist.get_world_size() == 1:
        return flag
    torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
    for value in found.values():
        value.copy_(flag.reshape(value.shape).to(value.dtype))
    if not found:
        # No local gradient at all (e.g. a rank whose parameters got none): record the flag
        # on this rank's device so `step` sees it.
        found[flag.device] = flag.reshape(())
    return flag


def _clip_groups(optimizer: torch.optim.Optimizer) -> list[tuple[list, float, float]]:
    """Parameters to clip together, keyed by their groups' (max_norm, norm_type).

    Groups that share the same clipping settings are clipped on one global norm, so the
    default optimizer (several weight-decay groups, one clip setting) clips like
    `clip_grad_norm_(model.parameters())`.
    """
    by_setting: dict[tuple[float, float], list] = {}
    for group in optimizer.param_groups:
        max_norm = group.get("clip_grad_max_norm")
        if max_norm is None or max_norm <= 0:
            continue
        norm_type = float(group.get("clip_grad_norm_type") or 2.0)
        by_setting.setdefault((float(max_norm), norm_type), []).extend(group["params"])
    return [(params, max_norm, norm_type) for (max_norm, norm_type), params in by_setting.items()]
