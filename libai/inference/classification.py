"""`ClassificationPipeline`: what the text and image classifiers share (scores -> labels)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from libai.evaluation.cls_evaluator import CLASS_SCORE_KEYS, class_scores

from .basic import BasePipeline, PipelineError


class ClassificationPipeline(BasePipeline):
    """A pipeline whose model returns class scores (`prediction_scores` or `logits`
    [n, classes]);
    subclasses turn raw inputs into `{"inputs": model kwargs, "single": bool}`."""

    def forward(self, model_inputs: dict) -> dict:
        """The class scores [n, classes]."""
        output = self.model_forward(model_inputs["inputs"], keys=CLASS_SCORE_KEYS)
        return {"scores": class_scores(output), "single": model_inputs["single"]}

    def postprocess(
        self, model_outputs: dict, labels: Optional[Sequence[str]] = None, return_all_scores: bool = False
    ) -> Union[dict, list[dict]]:
        """`{"label", "score"}` (and `"scores"`) per input."""
        results = scores_to_labels(model_outputs["scores"], labels, return_all_scores)
        return results[0] if model_outputs["single"] else results


def scores_to_labels(scores: torch.Tensor, labels: Optional[Sequence[str]], return_all_scores: bool) -> list[dict]:
    """Softmax each row of class scores; the best class's label (its name in `labels`, else
    its index) and probability, plus every probability with `return_all_scores`."""
    probs = torch.softmax(scores.float(), dim=-1).cpu()
    if labels is not None and len(labels) != probs.shape[-1]:
        raise PipelineError(f"labels has {len(labels)} names but the model scores {probs.shape[-1]} classes")
    names = list(labels) if labels is not None else list(range(probs.shape[-1]))
    results = []
    for row in probs:
        best = int(row.argmax())
        result = {"label": names[best], "score": float(row[best])}
        if return_all_scores:
            result["scores"] = {names[i]: float(p) for i, p in enumerate(row)}
        results.append(result)
    return results
