"""Generative pixel pretraining (iGPT) as a task that takes its backbone as a config node.

    model = LazyCall(GenerativePixels)(backbone=LazyCall(PixelTransformer)(...), classify=True)

and `model.backbone._target_=projects.igpt.modeling.CausalConvNet` on the command line swaps
the backbone without touching the task. The task owns what the backbones share: the
next-pixel head, the optional classification head, the losses and `generate()`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from libai.inference.generation import GenerationMixin
from libai.layers import KVCache, Linear
from libai.layers.utils import to_local
from libai.models.utils.weight_init import init_method_normal


class GenerativePixels(nn.Module, GenerationMixin):
    """Next-pixel prediction over a backbone's hidden states, and with `classify=True` a
    digit classifier on their mean over positions (iGPT's average pooling), trained on the
    joint loss `pixel_loss + cls_loss_weight * cls_loss`.

    `forward(input_ids, pixel_labels=None, labels=None, ...)`:
      * training: `{"pixel_loss": mean cross entropy}`, plus `"cls_loss"` with `classify`
        (then `labels`, the digits, are required);
      * evaluation: `"logits"` [b, s, num_clusters] (of the last `logits_to_keep`
        positions when > 0), `"lm_loss"` (per-pixel losses [b, s], what `PPLEvaluator`
        reads) with `pixel_labels`, and with `classify` `"prediction_scores"` [b, classes]
        (what `ClsEvaluator` reads) over a whole sequence;
      * with `use_cache` (generation): `"logits"` and `"past_key_values"`.

    Args:
        backbone: a module mapping `input_ids` to causal hidden states (see `backbones`).
        hidden_size: the backbone's output size.
        num_clusters: the pixel vocabulary (the start token is not predicted).
        classify: add the classification head and its loss.
        num_classes: classes of the classification head.
        cls_loss_weight: weight of the classification loss in the joint loss.
        initializer_range: std of the heads' normal initialisation.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_size: int,
        num_clusters: int = 16,
        classify: bool = False,
        num_classes: int = 10,
        cls_loss_weight: float = 1.0,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classify = classify
        self.cls_loss_weight = cls_loss_weight
        init_method = init_method_normal(initializer_range)
        # Heads on the last pipeline stage, replicated over tensor-parallel ranks (16 outputs
        # are too few to split).
        self.pixel_head = Linear(hidden_size, num_clusters, init_method=init_method, layer_idx=-1)
        self.cls_head = Linear(hidden_size, num_classes, init_method=init_method, layer_idx=-1) if classify else None

    @property
    def generation_max_positions(self) -> int:
        """The longest sequence `generate` may make: the backbone's positions plus the last
        pixel, which is predicted but never fed back."""
        return self.backbone.max_positions + 1

    def new_generation_cache(self, max_length: Optional[int] = None) -> Optional[KVCache]:
        """A `KVCache` when the backbone keeps one, else None (each step sees the whole sequence)."""
        return KVCache(max_length) if self.backbone.supports_cache else None

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_labels: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> dict:
        """See the class docstring. `attention_mask` must be all ones (digits have no padding)."""
        if attention_mask is not None and not bool(to_local(attention_mask).all()):
            raise ValueError("GenerativePixels takes whole digits: attention_mask must be all ones (no padding)")
        if use_cache and past_key_values is None and self.backbone.supports_cache:
            past_key_values = KVCache()
        hidden = self.backbone(input_ids, position_ids=position_ids, past_key_values=past_key_values)
        if self.training:
            return self._losses(hidden, pixel_labels, labels)
        outputs: dict[str, Any] = {}
        kept = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        outputs["logits"] = self.pixel_head(kept)
        if pixel_labels is not None:
            logits = outputs["logits"] if logits_to_keep == 0 else self.pixel_head(hidden)
            outputs["lm_loss"] = F.cross_entropy(logits.float().transpose(1, 2), to_local(pixel_labels), reduction="none")
        if self.classify and past_key_values is None and logits_to_keep == 0:
            outputs["prediction_scores"] = self.cls_head(hidden.mean(dim=1))
        if use_cache:
            outputs["past_key_values"] = past_key_values
        return outputs

    def _losses(self, hidden: torch.Tensor, pixel_labels: Optional[torch.Tensor], labels: Optional[torch.Tensor]) -> dict:
        if pixel_labels is None:
            raise ValueError("GenerativePixels trains on pixel_labels (the next pixel at each position): give them")
        logits = self.pixel_head(hidden)
        losses = {"pixel_loss": F.cross_entropy(logits.float().flatten(0, 1), to_local(pixel_labels).flatten())}
        if self.classify:
            if labels is None:
                raise ValueError("GenerativePixels(classify=True) trains on labels (the digits): give them")
            cls_logits = self.cls_head(hidden.mean(dim=1))
            losses["cls_loss"] = self.cls_loss_weight * F.cross_entropy(cls_logits.float(), to_local(labels))
        return losses
