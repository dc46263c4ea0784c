"""`generate()`: greedy, sampling and beam search over any model that follows the contract.

The contract (what `GenerationMixin` gives a decoder-only model, and what a model overrides
when it differs):

* `forward(**inputs)` returns a dict whose `"logits"` (or `"prediction_scores"`) is
  [n, s, vocab] over the FULL vocabulary on every rank;
* `prepare_inputs_for_generation(input_ids, attention_mask, past_key_values, use_cache,
  **encoder_inputs)` turns the sequences so far into `forward`'s keyword inputs (only the
  new positions when a cache holds the past, and asking for the last position's logits);
* `new_generation_cache(max_length)` returns the cache of one `generate` call (or None);
* `reorder_cache(cache, beam_idx)` keeps row `beam_idx[i]`'s past for row i (beam search);
* `is_encoder_decoder`: True for a model whose `input_ids` feed an encoder; generation then
  makes decoder ids starting with `decoder_start_token_id`;
* `generation_max_positions` (optional): the most positions the model can take.

Hugging Face's meaning holds for every argument; the loops follow `transformers`'
`GenerationMixin` step for step so that the same model gives the same tokens.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from libai.layers.kv_cache import KVCache
from libai.utils import distributed as dist

from .logits_process import (
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TokenIds,
    TopKLogitsWarper,
    TopPLogitsWarper,
    as_token_tensor,
)
from .stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
)
from .streamers import BaseStreamer

logger = logging.getLogger(__name__)

# Hugging Face's GenerationConfig default when neither max_length nor max_new_tokens is given.
DEFAULT_MAX_LENGTH = 20

Forward = Callable[[dict], Mapping[str, Any]]


class GenerationError(ValueError):
    """A generation argument or input that cannot work; the message names the fix."""


class GenerationMixin:
    """`generate()` for a decoder-only model whose forward takes `input_ids`,
    `attention_mask`, `position_ids`, `past_key_values` (a `KVCache`) and `use_cache`.

    See the module docstring for the contract an encoder-decoder model (T5) overrides.
    """

    is_encoder_decoder: bool = False

    def new_generation_cache(self, max_length: Optional[int] = None) -> Any:
        """A fresh `KVCache` sized for sequences of `max_length` positions."""
        return KVCache(max_length)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Any = None,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> dict:
        """The forward inputs of one step: the positions the cache does not hold yet, with
        position ids counted over the attended tokens (so left padding does not shift them)."""
        position_ids = None
        if attention_mask is not None:
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
        past = past_key_values.get_seq_length() if isinstance(past_key_values, KVCache) else 0
        if past:
            input_ids = input_ids[:, past:]
            position_ids = position_ids[:, past:] if position_ids is not None else None
        return dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            logits_to_keep=1,  # the next token needs the last position's logits only
        )

    def reorder_cache(self, past_key_values: Any, beam_idx: torch.Tensor) -> Any:
        """Row i continues the past of row `beam_idx[i]`."""
        if past_key_values is not None:
            past_key_values.reorder(beam_idx)
        return past_key_values

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Generate token ids; see `libai.inference.generation.generate` for the arguments."""
        return generate(self, input_ids, **kwargs)


@torch.no_grad()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    max_new_tokens: Optional[int] = None,
    max_length: Optional[int] = None,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    num_beams: int = 1,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    eos_token_id: Optional[TokenIds] = None,
    pad_token_id: Optional[int] = None,
    num_return_sequences: int = 1,
    length_penalty: float = 1.0,
    early_stopping: Union[bool, str] = False,
    use_cache: bool = True,
    logits_processor: Optional[list] = None,
    stopping_criteria: Optional[list] = None,
    generator: Optional[torch.Generator] = None,
    streamer: Optional[BaseStreamer] = None,
    min_length: int = 0,
    max_time: Optional[float] = None,
    decoder_start_token_id: Optional[int] = None,
    forward: Optional[Forward] = None,
) -> torch.Tensor:
    """Generate token ids with `model` (see the module docstring for the model contract).

    Arguments have Hugging Face's meaning: `max_new_tokens` (or the total `max_length`,
    default 20), `min_new_tokens` / `min_length` (no EOS before), `do_sample` (multinomial
    sampling from the processed scores, drawn with `generator`), `num_beams` (beam search
    with `length_penalty` and `early_stopping` True / False / "never"), `temperature`,
    `top_k`, `top_p` (sampling only), `repetition_penalty`, `no_repeat_ngram_size`,
    `eos_token_id` (one or several; finished rows are padded with `pad_token_id`, default
    the first EOS), `num_return_sequences`, `use_cache` (False recomputes every position),
    user `logits_processor` / `stopping_criteria` lists (run after the built-in ones),
    `max_time` (seconds), `streamer` (gets the prompt, then each step's tokens).

    `forward(inputs) -> output dict` replaces `model(**inputs)` (the inference pipelines
    pass one that runs the pipeline stages). Under several processes every rank must call
    `generate` with the same arguments; the tokens rank 0 picks are given to all ranks.

    Returns [batch * num_return_sequences, prompt + new] ids: the prompt followed by the new
    tokens for a decoder-only model, the decoder ids (starting with
    `decoder_start_token_id`) for an encoder-decoder model.
    """
    if forward is None:
        forward = lambda inputs: model(**inputs)  # noqa: E731
    _check_arguments(
        input_ids, max_new_tokens, do_sample, num_beams, temperature, top_k, top_p,
        num_return_sequences, length_penalty, early_stopping, streamer,
    )
    eos = as_token_tensor(eos_token_id, input_ids.device)
    if pad_token_id is None and eos is not None:
        pad_token_id = int(eos[0])
    encoder_decoder = bool(getattr(model, "is_encoder_decoder", False))
    batch = input_ids.shape[0]
    expand = num_beams if num_beams > 1 else num_return_sequences
    model_kwargs: dict[str, Any] = {}
    if encoder_decoder:
        start = _decoder_start(model, decoder_start_token_id, pad_token_id)
        model_kwargs["encoder_input_ids"] = input_ids.repeat_interleave(expand, dim=0)
        if attention_mask is not None:
            model_kwargs["encoder_attention_mask"] = attention_mask.repeat_interleave(expand, dim=0)
        sequences = torch.full((batch * expand, 1), start, dtype=torch.long, device=input_ids.device)
        attention_mask = None
    else:
        sequences = input_ids.repeat_interleave(expand, dim=0)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(expand, dim=0)
    prompt_length = sequences.shape[1]
    max_length = _resolve_max_length(max_new_tokens, max_length, prompt_length)
    _check_positions(model, input_ids, max_length, encoder_decoder)

    processors = _build_processors(
        prompt_length, min_length, min_new_tokens, eos, repetition_penalty, no_repeat_ngram_size,
        logits_processor, do_sample, temperature, top_k, top_p,
    )
    criteria = _build_criteria(max_length, max_time, eos, stopping_criteria)
    cache = model.new_generation_cache(max_length) if use_cache else None
    step = _Stepper(model, forward, model_kwargs, use_cache, cache)
    if streamer is not None:
        streamer.put(sequences.cpu())
    if num_beams > 1:
        return _beam_search(
            step, sequences, attention_mask, processors, criteria, batch, num_beams, num_return_sequences,
            length_penalty, early_stopping, max_length, eos, pad_token_id,
        )
    return _sample(step, sequences, attention_mask, processors, criteria, do_sample, generator, eos, pad_token_id, streamer)


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


def _check_arguments(
    input_ids, max_new_tokens, do_sample, num_beams, temperature, top_k, top_p,
    num_return_sequences, length_penalty, early_stopping, streamer,
) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise GenerationError(
            f"input_ids must be a [batch, length] tensor of token ids, got "
            f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__}"
        )
    if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        raise GenerationError(
            "the prompt is empty: give at least one token (e.g. the tokenizer's BOS / EOS id) to generate from"
        )
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise GenerationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not (isinstance(num_beams, int) and num_beams >= 1):
        raise GenerationError(f"num_beams must be a positive integer, got {num_beams!r}")
    if not (isinstance(num_return_sequences, int) and num_return_sequences >= 1):
        raise GenerationError(f"num_return_sequences must be a positive integer, got {num_return_sequences!r}")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise GenerationError(
            f"num_return_sequences ({num_return_sequences}) cannot exceed num_beams ({num_beams}): "
            f"raise num_beams or ask for fewer sequences"
        )
    if num_beams == 1 and not do_sample and num_return_sequences > 1:
        raise GenerationError(
            f"greedy decoding gives one sequence per prompt, not num_return_sequences={num_return_sequences}: "
            f"set do_sample=True or num_beams >= {num_return_sequences}"
        )
    if num_beams > 1 and do_sample:
        raise GenerationError(
            "beam sampling (do_sample=True with num_beams > 1) is not supported: use beam search "
            "(do_sample=False) or sampling (num_beams=1)"
        )
    if early_stopping not in (True, False, "never"):
        raise GenerationError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise GenerationError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None and not (isinstance(top_k, int) and top_k >= 0):
        raise GenerationError(f"top_k must be a non-negative integer (0 = off), got {top_k!r}")
    if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise GenerationError(f"temperature must be > 0 when sampling, got {temperature!r}")
    if num_beams == 1 and (length_penalty != 1.0 or early_stopping is not False):
        logger.warning("length_penalty and early_stopping only apply to beam search (num_beams > 1); they are ignored")
    if streamer is not None and (num_beams > 1 or input_ids.shape[0] > 1 or num_return_sequences > 1):
        raise GenerationError("a streamer receives one sequence: use batch size 1, num_beams=1 and num_return_sequences=1")


def _resolve_max_length(max_new_tokens: Optional[int], max_length: Optional[int], prompt_length: int) -> int:
    if max_new_tokens is not None:
        if max_length is not None:
            logger.warning("both max_new_tokens and max_length are set: max_new_tokens (%d) wins", max_new_tokens)
        return prompt_length + max_new_tokens
    if max_length is None:
        logger.warning(
            "neither max_new_tokens nor max_length is set: generating up to Hugging Face's default "
            "max_length=%d", DEFAULT_MAX_LENGTH
        )
        max_length = DEFAULT_MAX_LENGTH
    if max_length <= prompt_length:
        raise GenerationError(
            f"max_length ({max_length}) leaves no room after the {prompt_length}-token prompt: "
            f"raise max_length or pass max_new_tokens"
        )
    return max_length


def _check_positions(model: Any, input_ids: torch.Tensor, max_length: int, encoder_decoder: bool) -> None:
    positions = getattr(model, "generation_max_positions", None)
    if positions is None:
        return
    prompt = input_ids.shape[1]
    if prompt > positions:
        raise GenerationError(
            f"the prompt has {prompt} tokens but the model has {positions} positions: shorten the prompt"
        )
    if max_length > positions:
        raise GenerationError(
            f"{'decoder ' if encoder_decoder else ''}length {max_length} (prompt + max_new_tokens) exceeds the "
            f"model's {positions} positions: lower max_new_tokens to at most "
            f"{positions - (1 if encoder_decoder else prompt)}"
        )


def _decoder_start(model: Any, decoder_start_token_id: Optional[int], pad_token_id: Optional[int]) -> int:
    start = decoder_start_token_id
    if start is None:
        start = getattr(model, "decoder_start_token_id", None)
    if start is None:
        start = pad_token_id
    if start is None:
        raise GenerationError(
            "an encoder-decoder model needs decoder_start_token_id (or pad_token_id) to start the decoder"
        )
    return int(start)


def _build_processors(
    prompt_length, min_length, min_new_tokens, eos, repetition_penalty, no_repeat_ngram_size,
    user_processors, do_sample, temperature, top_k, top_p,
) -> LogitsProcessorList:
    """Hugging Face's order: penalties, length constraints, the user's, then the warpers."""
    processors = LogitsProcessorList()
    if repetition_penalty is not None and repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if eos is None and (min_length > 0 or min_new_tokens > 0):
        logger.warning("min_new_tokens / min_length have no effect without eos_token_id")
    if eos is not None and min_length > 0:
        processors.append(MinLengthLogitsProcessor(min_length, eos))
    if eos is not None and min_new_tokens > 0:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, eos))
    for processor in user_processors or []:
        if not callable(processor):
            raise GenerationError(f"logits_processor entries must be callables (input_ids, scores), got {processor!r}")
        processors.append(processor)
    if do_sample:  # (beam sampling, which would keep 2 tokens, is refused by _check_arguments)
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k:
            processors.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
    elif temperature != 1.0 or top_k or (top_p is not None and top_p < 1.0):
        logger.warning("temperature, top_k and top_p only apply with do_sample=True; they are ignored")
    return processors


def _build_criteria(max_length: int, max_time: Optional[float], eos, user_criteria) -> StoppingCriteriaList:
    criteria = StoppingCriteriaList([MaxLengthCriteria(max_length)])
    if max_time is not None:
        criteria.append(MaxTimeCriteria(max_time))
    if eos is not None:
        criteria.append(EosTokenCriteria(eos))
    for criterion in user_criteria or []:
        if not callable(criterion):
            raise GenerationError(f"stopping_criteria entries must be callables (input_ids, scores), got {criterion!r}")
        criteria.append(criterion)
    return criteria


# --------------------------------------------------------------------------------------
# One model step
# --------------------------------------------------------------------------------------


class _Stepper:
    """Runs the model on the sequences so far and returns the next-token logits [n, vocab]."""

    def __init__(self, model, forward: Forward, model_kwargs: dict, use_cache: bool, cache: Any) -> None:
        self.model = model
        self.forward = forward
        self.model_kwargs = model_kwargs
        self.use_cache = use_cache
        self.cache = cache

    def __call__(self, sequences: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        inputs = self.model.prepare_inputs_for_generation(
            sequences,
            attention_mask=attention_mask,
            past_key_values=self.cache,
            use_cache=self.use_cache,
            **self.model_kwargs,
        )
        output = self.forward(inputs)
        logits = output["logits"] if "logits" in output else output["prediction_scores"]
        # float32, as Hugging Face does, so processors and sampling see the same numbers.
        return logits[:, -1, :].to(dtype=torch.float32, copy=True)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Beam search moved rows: make each row's cache follow its beam. (The encoder
        inputs need no reordering: a beam only moves within its prompt's rows, which hold
        the same encoder input.)"""
        if self.use_cache:
            self.cache = self.model.reorder_cache(self.cache, beam_idx)


def _agree(tokens: torch.Tensor) -> torch.Tensor:
    """Every rank continues with rank 0's choice (same ids into every part of the model)."""
    return dist.broadcast_tensor(tokens.contiguous(), src=0)


# --------------------------------------------------------------------------------------
# Greedy search and sampling
# --------------------------------------------------------------------------------------


def _sample(
    step: _Stepper,
    sequences: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    processors: LogitsProcessorList,
    criteria: StoppingCriteriaList,
    do_sample: bool,
    generator: Optional[torch.Generator],
    eos: Optional[torch.Tensor],
    pad_token_id: Optional[int],
    streamer: Optional[BaseStreamer],
) -> torch.Tensor:
    unfinished = torch.ones(sequences.shape[0], dtype=torch.bool, device=sequences.device)
    while True:
        scores = processors(sequences, step(sequences, attention_mask))
        if do_sample:
            probs = F.softmax(scores, dim=-1)
            next_tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        if eos is not None:
            # Rows already finished only grow padding.
            next_tokens = torch.where(unfinished, next_tokens, pad_token_id)
        next_tokens = _agree(next_tokens)
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=-1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=-1)
        if streamer is not None:
            streamer.put(next_tokens.cpu())
        unfinished = unfinished & ~criteria(sequences, scores)
        if not bool(unfinished.any()):
            break
    if streamer is not None:
        streamer.end()
    return sequences


# --------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------


def _gather_beams(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tensor[b, indices[b, j], ...] for [batch, beams, ...] tensors."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def _beam_search(
    step: _Stepper,
    sequences: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    processors: LogitsProcessorList,
    criteria: StoppingCriteriaList,
    batch: int,
    num_beams: int,
    num_return_sequences: int,
    length_penalty: float,
    early_stopping: Union[bool, str],
    max_length: int,
    eos: Optional[torch.Tensor],
    pad_token_id: Optional[int],
) -> torch.Tensor:
    """Beam search as `transformers` runs it: each step keeps the `keep` best continuations
    over all beams (enough that `num_beams` of them are still running when some finish),
    continues the best `num_beams` unfinished ones, and files finished ones (scored by
    log-probability / generated_length ** length_penalty) among the `num_beams` best.

    The loop ends when no running beam can beat the finished ones (the heuristic that
    `early_stopping` chooses), when every beam finished and `early_stopping=True`, or when
    every continuation hits a stopping criterion (e.g. max_length).
    """
    device = sequences.device
    prompt = sequences.shape[1]
    n_eos = 0 if eos is None else eos.shape[0]
    keep = max(2, 1 + n_eos) * num_beams
    top_beam_mask = torch.arange(keep, device=device) < num_beams
    fill = (pad_token_id if pad_token_id else int(eos[0])) if eos is not None else -1

    running = torch.full((batch, num_beams, max_length), fill, dtype=torch.long, device=device)
    running[:, :, :prompt] = sequences.view(batch, num_beams, prompt)
    finished = running.clone()
    # Only beam 0 starts alive, so the first step does not pick the same token num_beams times.
    running_scores = torch.zeros(batch, num_beams, dtype=torch.float32, device=device)
    running_scores[:, 1:] = -1e9
    finished_scores = torch.full((batch, num_beams), -1e9, dtype=torch.float32, device=device)
    finished_lengths = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
    is_finished = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(batch, device=device).view(-1, 1) * num_beams
    length = prompt
    while True:
        flat = running[:, :, :length].reshape(batch * num_beams, length)
        mask = attention_mask
        if mask is not None and mask.shape[1] < length:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], length - mask.shape[1])], dim=-1)
        log_probs = F.log_softmax(step(flat, mask), dim=-1)
        log_probs = processors(flat, log_probs)
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, -1)

        # The `keep` best continuations over all beams.
        top_scores, top_indices = torch.topk(totals, keep)
        top_indices = _agree(top_indices)
        source_beams = top_indices // vocab
        candidates = _gather_beams(running, source_beams)
        candidates[:, :, length] = top_indices % vocab
        hits = criteria(candidates[:, :, : length + 1].reshape(batch * keep, length + 1), None).view(batch, keep)

        # The best `num_beams` unfinished continuations run on.
        alive_scores = top_scores + hits.to(torch.float32) * -1.0e9
        chosen = torch.topk(alive_scores, num_beams)[1]
        running = _gather_beams(candidates, chosen)
        running_scores = _gather_beams(alive_scores, chosen)
        beam_idx = (_gather_beams(source_beams, chosen) + batch_offset).view(-1)

        # Finished continuations among the top `num_beams` compete for the finished slots.
        just_finished = hits & top_beam_mask[None, :]
        scores = top_scores / ((length + 1 - prompt) ** length_penalty)
        full = torch.all(is_finished, dim=-1, keepdim=True) & (early_stopping is True)
        scores += full.to(torch.float32) * -1.0e9
        scores += (~can_improve).to(torch.float32) * -1.0e9
        scores += (~just_finished) * -1.0e9
        merged_scores = torch.cat((finished_scores, scores), dim=1)
        best = torch.topk(merged_scores, num_beams)[1]
        finished = _gather_beams(torch.cat((finished, candidates), dim=1), best)
        finished_scores = _gather_beams(merged_scores, best)
        new_lengths = torch.full_like(top_scores, length + 1 - prompt, dtype=torch.long)
        finished_lengths = _gather_beams(torch.cat((finished_lengths, new_lengths), dim=1), best)
        is_finished = _gather_beams(torch.cat((is_finished, just_finished), dim=1), best)

        step.reorder(beam_idx)
        length += 1
        can_improve = _can_still_improve(
            can_improve, running_scores, finished_scores, is_finished, length, max_length, prompt,
            early_stopping, length_penalty,
        )
        open_beams = not (bool(torch.all(is_finished)) and early_stopping is True)
        if not (bool(torch.any(can_improve)) and open_beams and not bool(torch.all(hits))):
            break

    best_sequences = finished[:, :num_return_sequences].reshape(batch * num_return_sequences, max_length)
    generated = int(finished_lengths[:, :num_return_sequences].max())
    return best_sequences[:, : prompt + generated]


def _can_still_improve(
    can_improve, running_scores, finished_scores, is_finished, length, max_length, prompt, early_stopping, length_penalty
) -> torch.Tensor:
    """Whether the best running beam could still beat the worst finished one (per prompt).

    `early_stopping=False` judges it at the current length, "never" at the longest length a
    positive length penalty could reach (exact); True stops as soon as the slots are full.
    """
    if early_stopping == "never" and length_penalty > 0.0:
        best_length = max_length - prompt
    else:
        best_length = length - prompt
    best_running = running_scores[:, :1] / (best_length**length_penalty)
    worst_finished = torch.where(is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], -1.0e9)
    return can_improve & torch.any(best_running > worst_finished, dim=-1, keepdim=True)


__all__ = ["DEFAULT_MAX_LENGTH", "GenerationError", "GenerationMixin", "generate"]
