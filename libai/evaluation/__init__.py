"""Evaluators and the evaluation loop (`inference_on_dataset`)."""
from libai.evaluation.cls_evaluator import ClsEvaluator
from libai.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    flatten_results_dict,
    inference_context,
    inference_on_dataset,
    print_csv_format,
)
from libai.evaluation.ppl_evaluator import PPLEvaluator

__all__ = [
    "ClsEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "flatten_results_dict",
    "inference_context",
    "inference_on_dataset",
    "PPLEvaluator",
    "print_csv_format",
]
