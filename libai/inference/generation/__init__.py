"""Text generation with Hugging Face's options: `generate()`, `GenerationMixin`, logits
processors and warpers, stopping criteria and streamers."""
from .logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from .stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteria,
    StoppingCriteriaList,
)
from .streamers import BaseStreamer, TextIteratorStreamer, TextStreamer
from .utils import GenerationError, GenerationMixin, generate

__all__ = [
    "BaseStreamer",
    "EosTokenCriteria",
    "GenerationError",
    "GenerationMixin",
    "LogitsProcessor",
    "LogitsProcessorList",
    "MaxLengthCriteria",
    "MaxTimeCriteria",
    "MinLengthLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor",
    "NoRepeatNGramLogitsProcessor",
    "RepetitionPenaltyLogitsProcessor",
    "StoppingCriteria",
    "StoppingCriteriaList",
    "SuppressTokensLogitsProcessor",
    "TemperatureLogitsWarper",
    "TextIteratorStreamer",
    "TextStreamer",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
    "generate",
]
