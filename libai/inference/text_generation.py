"""`TextGenerationPipeline`: prompts in, generated text out (GPT-2, T5, any generating model)."""
from __future__ import annotations

import inspect
from typing import Any, Union

import torch

from libai.layers import VocabEmbedding
from libai.utils import distributed as dist

from .basic import BasePipeline, PipelineError, reject_unknown
from .generation import SuppressTokensLogitsProcessor, generate
from .generation.logits_process import as_token_tensor

# generate()'s own arguments that a caller of the pipeline may set.
GENERATE_PARAMETERS = tuple(
    name for name in inspect.signature(generate).parameters if name not in ("model", "input_ids", "attention_mask", "forward")
)
POSTPROCESS_PARAMETERS = ("return_full_text", "skip_special_tokens")


class TextGenerationPipeline(BasePipeline):
    """`pipe(prompt or [prompts], **generate_kwargs)` -> `[{"generated_text": ...}]` per prompt
    (one dict per returned sequence; a list of such lists for a list of prompts).

    Every `generate` argument can be given to the constructor (defaults) or per call;
    `eos_token_id` and `pad_token_id` default to the tokenizer's. Prompts of a batch are
    left-padded with an attention mask, so each gets the tokens it would get alone. Token
    ids that pad the vocabulary for tensor parallelism (no tokenizer makes them) are never
    generated. For an encoder-decoder model (T5) the prompt feeds the encoder and the text
    is the decoder's, started by the tokenizer's BOS (or [CLS]).

    Postprocess parameters: `return_full_text` (default True: prompt + continuation; only
    for decoder-only models) and `skip_special_tokens` (default True).
    """

    def _parse_parameters(self, **params: Any) -> tuple[dict, dict, dict]:
        forward = {k: params.pop(k) for k in GENERATE_PARAMETERS if k in params}
        post = {k: params.pop(k) for k in POSTPROCESS_PARAMETERS if k in params}
        reject_unknown(type(self).__name__, params)
        return {}, forward, post

    def preprocess(self, inputs: Union[str, list[str]]) -> dict:
        """Token ids [n, longest] (left padded), their attention mask, the unpadded ids and
        whether one prompt came."""
        if self.tokenizer is None:
            raise PipelineError("TextGenerationPipeline needs cfg.tokenization.tokenizer in the config")
        single = isinstance(inputs, str)
        prompts = [inputs] if single else list(inputs)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise PipelineError("give a prompt string or a non-empty list of prompt strings")
        # A decoder continues the raw text; an encoder reads it as it was trained ([CLS] ... [SEP]).
        special = bool(getattr(self.model, "is_encoder_decoder", False))
        encoded = [self.tokenizer.encode(p, add_special_tokens=special) for p in prompts]
        for prompt, ids in zip(prompts, encoded):
            if not ids:
                raise PipelineError(f"prompt {prompt!r} has no tokens: give some text to continue")
        longest = max(len(ids) for ids in encoded)
        pad = self._pad_id()
        input_ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, longest - len(ids) :] = torch.tensor(ids)
            mask[row, longest - len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "prompts": encoded, "single": single}

    def forward(self, model_inputs: dict, **generate_kwargs: Any) -> dict:
        """Generate; returns the ids, the prompt width and the number of prompts."""
        kwargs = dict(generate_kwargs)
        kwargs.setdefault("eos_token_id", getattr(self.tokenizer, "eos_token_id", None))
        kwargs.setdefault("pad_token_id", self._pad_id())
        if getattr(self.model, "is_encoder_decoder", False) and "decoder_start_token_id" not in kwargs:
            kwargs["decoder_start_token_id"] = self._decoder_start_id()
        padding = self._padding_ids()
        if padding:
            kwargs["logits_processor"] = [SuppressTokensLogitsProcessor(padding), *(kwargs.get("logits_processor") or [])]
        ids = generate(
            self.model,
            model_inputs["input_ids"].to(dist.get_device()),
            attention_mask=model_inputs["attention_mask"].to(dist.get_device()),
            forward=lambda inputs: self.model_forward(inputs, keys=("prediction_scores",)),
            **kwargs,
        )
        eos = kwargs["eos_token_id"]
        return {
            "ids": ids.cpu(),
            "prompts": model_inputs["prompts"],
            "prompt_width": model_inputs["input_ids"].shape[1],
            "num_prompts": model_inputs["input_ids"].shape[0],
            "single": model_inputs["single"],
            "eos": [] if eos is None else as_token_tensor(eos).tolist(),
        }

    def postprocess(self, model_outputs: dict, return_full_text: bool = True, skip_special_tokens: bool = True) -> list:
        """Decoded text: `[{"generated_text": ...}, ...]` per prompt (the text stops before
        the first end-of-sequence token)."""
        ids, eos = model_outputs["ids"], model_outputs["eos"]
        encoder_decoder = getattr(self.model, "is_encoder_decoder", False)
        # Decoder ids start with the decoder start token; a decoder-only row with the
        # (left-padded) prompt.
        width = 1 if encoder_decoder else model_outputs["prompt_width"]
        per_prompt = ids.shape[0] // model_outputs["num_prompts"]
        results = []
        for row in range(ids.shape[0]):
            new = ids[row, width:].tolist()
            if eos:
                new = new[: next((i for i, t in enumerate(new) if t in eos), len(new))]
            prompt_ids = model_outputs["prompts"][row // per_prompt] if return_full_text and not encoder_decoder else []
            text = self.tokenizer.decode(prompt_ids + new, skip_special_tokens=skip_special_tokens)
            results.append({"generated_text": text})
        grouped = [results[i : i + per_prompt] for i in range(0, len(results), per_prompt)]
        return grouped[0] if model_outputs["single"] else grouped

    # ---- tokens ----------------------------------------------------------------------

    def _pad_id(self) -> int:
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                return int(value)
        return 0

    def _decoder_start_id(self) -> int:
        for name in ("bos_token_id", "cls_token_id", "pad_token_id"):
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                return int(value)
        raise PipelineError("the tokenizer has no BOS, [CLS] or pad token to start the decoder: pass decoder_start_token_id")

    def _padding_ids(self) -> list[int]:
        """Ids of the rows that pad the vocabulary past the tokenizer's tokens."""
        rows = max((m.num_embeddings for m in self.model.modules() if isinstance(m, VocabEmbedding)), default=0)
        return list(range(len(self.tokenizer), rows))
