"""Evaluator interface and the evaluation loop over a test data loader.

`inference_on_dataset` runs the model on every data-parallel rank, gathers each step's
inputs and outputs over the data-parallel ranks (in rank order, which is the order of the
samples in the global batch), drops the padding the test sampler added at the end of the
epoch, and feeds the result to the evaluators. Every rank therefore sees every sample
exactly once and computes the same metrics, whatever the number of processes.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict, abc
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch

from libai.data.placement import UnplacedField
from libai.data.structures import DistTensorData, Instance
from libai.utils import distributed as dist_utils

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "inference_context",
    "print_csv_format",
    "flatten_results_dict",
]


class DatasetEvaluator:
    """Base class: accumulate (inputs, outputs) pairs with `process`, then `evaluate`.

    `process` receives the gathered, de-padded batch of the whole data-parallel group, so
    an evaluator needs no communication of its own and returns the same result on every
    rank.
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation (called before the first `process`)."""

    def process(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Accumulate one batch: `inputs` are the model's forward kwargs, `outputs` its dict."""

    def evaluate(self) -> dict:
        """Return the metrics, e.g. ``{"Acc@1": 93.5}``."""
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Run several evaluators as one; their result dicts are merged (keys must not clash)."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        """Reset every evaluator."""
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Pass the batch to every evaluator."""
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict:
        """Merged results of all evaluators."""
        results: OrderedDict = OrderedDict()
        for evaluator in self._evaluators:
            for key, value in (evaluator.evaluate() or {}).items():
                if key in results:
                    raise ValueError(
                        f"two evaluators both report {key!r}: give them distinct metric names"
                    )
                results[key] = value
        return results


@contextmanager
def inference_context(model: torch.nn.Module) -> Iterator[None]:
    """Put `model` in eval mode for the block, then restore its previous train/eval mode."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _dataset_size(data_loader) -> Optional[int]:
    try:
        return len(data_loader.dataset)
    except (AttributeError, TypeError):
        return None  # an iterable without a length: nothing to trim


def _num_steps(data_loader, eval_iter) -> Optional[int]:
    steps = None
    try:
        steps = len(data_loader)
    except TypeError:
        pass
    if eval_iter is not None:
        steps = int(eval_iter) if steps is None else min(steps, int(eval_iter))
    return steps


def _local_batch_size(inputs: Mapping[str, Any]) -> int:
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            return value.shape[0]
    raise ValueError(
        "inference_on_dataset: get_batch returned no tensor with a batch dimension; it must "
        "return the model's forward kwargs as batch-first tensors"
    )


def _check_equal_batches(local_batch: int, device: torch.device) -> None:
    """All data-parallel ranks must hold equally sized batches for the all-gather."""
    if dist_utils.get_data_parallel_size() == 1:
        return
    sizes = dist_utils.gather_data_parallel(torch.tensor([local_batch], device=device))
    if len(set(sizes.tolist())) != 1:
        raise ValueError(
            f"inference_on_dataset: data-parallel ranks got batches of sizes {sizes.tolist()}; "
            f"use a test loader whose sampler pads the last batch (build_*_test_loader / "
            f"SingleRoundSampler)"
        )


def _gather_batch(values: Mapping[str, Any], local_batch: int, keep: int) -> dict:
    """Gather batch-first tensors over data-parallel ranks and keep the first `keep` rows.

    Values that are not batch-first tensors (scalars such as a mean loss, non-tensors) are
    passed through as this rank's value.
    """
    result = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == local_batch:
            result[key] = dist_utils.gather_data_parallel(value.detach())[:keep]
        else:
            result[key] = value
    return result


def _evaluator_inputs(model_inputs: dict, batch: Any) -> dict:
    """What the evaluator reads: the model's inputs, where a pipeline stage got a stand-in
    for a field placed elsewhere (`UnplacedField`) the loader's data of that field, since
    every rank evaluates the outputs it receives from the last stage."""
    fields = batch.get_fields() if isinstance(batch, Instance) else batch
    inputs = dict(model_inputs)
    for key, value in model_inputs.items():
        if isinstance(value, UnplacedField):
            field = fields[key]
            tensor = field.tensor if isinstance(field, DistTensorData) else field
            inputs[key] = tensor.to(dist_utils.get_device())
    return inputs


def inference_on_dataset(
    model: torch.nn.Module,
    data_loader,
    batch_size: int,
    eval_iter: Optional[Union[int, float]],
    get_batch: Callable[[Any, str], dict],
    input_placement_device: str,
    evaluator: Optional[Union[DatasetEvaluator, Sequence[DatasetEvaluator]]] = None,
) -> dict:
    """Evaluate `model` on `data_loader` and return the evaluator's results (on every rank).

    Args:
        model: called as ``model(**get_batch(batch, input_placement_device))``; returns a dict.
        data_loader: a test loader; ``len(data_loader.dataset)`` is the number of real
            samples (the sampler's padding beyond it is dropped).
        batch_size: per-rank micro batch size (LiBai's signature; the actual size is read
            from each batch and used for the throughput log).
        eval_iter: evaluate at most this many steps (None: the whole loader).
        get_batch: turns a loader batch into the model's forward kwargs (batch-first
            tensors; these are also the evaluator's `inputs`).
        input_placement_device: passed on to `get_batch`.
        evaluator: one evaluator or a list of them (None: no metrics, returns {}).

    The model runs in eval mode under ``torch.no_grad`` and gets its previous mode back.
    Each step gathers every batch-first input and output tensor over the data-parallel
    ranks and keeps only the samples not seen yet, so each sample counts exactly once.
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, abc.Sequence):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    total = _dataset_size(data_loader)
    max_steps = _num_steps(data_loader, eval_iter)
    seen, steps = 0, 0
    start = time.perf_counter()
    with inference_context(model), torch.no_grad():
        for batch in data_loader:
            if max_steps is not None and steps >= max_steps:
                break
            if total is not None and seen >= total:
                break  # only padding left
            model_inputs = get_batch(batch, input_placement_device)
            inputs = _evaluator_inputs(model_inputs, batch)
            local_batch = _local_batch_size(inputs)
            device = next(v for v in inputs.values() if isinstance(v, torch.Tensor)).device
            _check_equal_batches(local_batch, device)
            outputs = model(**model_inputs)
            if not isinstance(outputs, Mapping):
                raise TypeError(
                    f"inference_on_dataset: the model returned {type(outputs).__name__}; in eval "
                    f"mode it must return a dict such as {{'prediction_scores': logits}}"
                )
            global_batch = local_batch * dist_utils.get_data_parallel_size()
            keep = global_batch if total is None else min(global_batch, total - seen)
            evaluator.process(
                _gather_batch(inputs, local_batch, keep), _gather_batch(outputs, local_batch, keep)
            )
            seen += keep
            steps += 1

    elapsed = time.perf_counter() - start
    logger.info(
        f"Inference done on {seen} samples in {steps} steps "
        f"(micro batch {batch_size} x {dist_utils.get_data_parallel_size()} data-parallel ranks): "
        f"{elapsed:.2f} s, {seen / max(elapsed, 1e-9):.1f} samples/s"
    )
    results = evaluator.evaluate()
    return results if results is not None else {}


def flatten_results_dict(results: Mapping[str, Any], separator: str = "/") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``, e.g. to log nested results as scalars."""
    flat = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_results_dict(value, separator).items():
                flat[f"{key}{separator}{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat


def print_csv_format(results: Mapping[str, Any]) -> None:
    """Log results so they can be pasted into a spreadsheet (LiBai's "copypaste" lines)."""
    for task, res in results.items():
        if isinstance(res, Mapping):
            # Keys with "-" are per-category details; keep the headline metrics.
            important = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info(f"copypaste: Task: {task}")
            logger.info("copypaste: " + ",".join(k for k, _ in important))
            logger.info("copypaste: " + ",".join(f"{float(v):.4f}" for _, v in important))
        else:
            logger.info(f"copypaste: {task}={res}")
