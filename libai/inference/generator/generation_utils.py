"""LiBai's `generation_utils` names, for projects that import them from here.

`Generator` is `libai.inference.generation.GenerationMixin`: a model that inherits it gets
`generate()` with Hugging Face's arguments once its forward follows that mixin's contract
(`past_key_values` as a `KVCache`, `use_cache`, logits out; see its docstring). The logits
processors and stopping criteria are `libai.inference.generation`'s.
"""
from libai.inference.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    generate,
)
from libai.inference.generation import GenerationMixin as Generator

__all__ = ["Generator", "LogitsProcessor", "LogitsProcessorList", "StoppingCriteria", "StoppingCriteriaList", "generate"]
