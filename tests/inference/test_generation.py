"""generate() against transformers' own generate, token for token, on a random GPT-2; its
processors, warpers and stopping criteria against their transformers counterparts; the KV
cache, padding, seeding, T5, streamers and argument errors."""
from __future__ import annotations

import time

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as hf_lp  # noqa: E402
from transformers.generation import stopping_criteria as hf_sc  # noqa: E402

from libai.inference import generation as lg  # noqa: E402
from libai.inference.generation import GenerationError  # noqa: E402

VOCAB = 1000


@pytest.fixture(scope="module")
def gpt_pair(tmp_path_factory):
    """A random Hugging Face GPT-2 and the same weights loaded into GPTForPreTraining."""
    from libai.models import GPTForPreTraining
    from libai.models.utils.model_loader import load_huggingface_gpt2

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2,
        pad_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    # No EOS unless a test asks for one (generate() reads the model's generation_config).
    hf.generation_config.eos_token_id = None
    path = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(path)
    ours = load_huggingface_gpt2(path, GPTForPreTraining).eval()
    return hf, ours


@pytest.fixture(scope="module")
def prompts():
    return torch.randint(3, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))


def hf_generate(hf, ids, **kwargs):
    # Everything explicit, so that the model's generation_config defaults (top_k=50) play no part.
    kwargs.setdefault("do_sample", False)
    kwargs.setdefault("top_k", None)
    kwargs.setdefault("pad_token_id", 0)
    with torch.no_grad():
        return hf.generate(ids, **kwargs)


def frequent_tokens(ours, prompts, count=2):
    """Tokens greedy decoding makes often, so that choosing them as EOS ends sequences early."""
    out = ours.generate(prompts, max_new_tokens=12)[:, prompts.shape[1] :]
    values, counts = out.reshape(-1).unique(return_counts=True)
    return values[counts.argsort(descending=True)][:count].tolist()


# ---- processors, warpers, criteria ------------------------------------------------------


def _scores_and_ids():
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(4, 50, generator=gen) * 3
    ids = torch.randint(0, 50, (4, 12), generator=gen)
    ids[:, 6:9] = ids[:, 2:5]  # repeated n-grams
    ids[:, 10:12] = ids[:, 2:4]  # ... and a suffix that an earlier n-gram starts with
    return ids, scores


PROCESSOR_PAIRS = [
    (lambda: lg.RepetitionPenaltyLogitsProcessor(1.3), lambda: hf_lp.RepetitionPenaltyLogitsProcessor(1.3)),
    (lambda: lg.RepetitionPenaltyLogitsProcessor(0.7), lambda: hf_lp.RepetitionPenaltyLogitsProcessor(0.7)),
    (lambda: lg.NoRepeatNGramLogitsProcessor(2), lambda: hf_lp.NoRepeatNGramLogitsProcessor(2)),
    (lambda: lg.NoRepeatNGramLogitsProcessor(3), lambda: hf_lp.NoRepeatNGramLogitsProcessor(3)),
    (lambda: lg.MinLengthLogitsProcessor(20, [3, 4]), lambda: hf_lp.MinLengthLogitsProcessor(20, [3, 4])),
    (lambda: lg.MinLengthLogitsProcessor(5, 3), lambda: hf_lp.MinLengthLogitsProcessor(5, 3)),
    (
        lambda: lg.MinNewTokensLengthLogitsProcessor(8, 6, 3),
        lambda: hf_lp.MinNewTokensLengthLogitsProcessor(8, 6, 3),
    ),
    (lambda: lg.TemperatureLogitsWarper(0.7), lambda: hf_lp.TemperatureLogitsWarper(0.7)),
    (lambda: lg.TopKLogitsWarper(5), lambda: hf_lp.TopKLogitsWarper(5)),
    (lambda: lg.TopKLogitsWarper(1, min_tokens_to_keep=3), lambda: hf_lp.TopKLogitsWarper(1, min_tokens_to_keep=3)),
    (lambda: lg.TopPLogitsWarper(0.8), lambda: hf_lp.TopPLogitsWarper(0.8)),
    (lambda: lg.TopPLogitsWarper(0.1, min_tokens_to_keep=2), lambda: hf_lp.TopPLogitsWarper(0.1, min_tokens_to_keep=2)),
    (lambda: lg.SuppressTokensLogitsProcessor([1, 7]), lambda: hf_lp.SuppressTokensLogitsProcessor([1, 7])),
]


@pytest.mark.parametrize("ours, theirs", PROCESSOR_PAIRS)
def test_processor_matches_transformers(ours, theirs):
    ids, scores = _scores_and_ids()
    expected = theirs()(ids, scores.clone())
    got = ours()(ids, scores)
    assert torch.equal(got, expected)
    assert not torch.equal(got, scores) or isinstance(ours(), lg.MinLengthLogitsProcessor)


def test_processor_list_applies_in_order():
    ids, scores = _scores_and_ids()
    ours = lg.LogitsProcessorList([lg.TemperatureLogitsWarper(0.5), lg.TopKLogitsWarper(3)])
    theirs = hf_lp.LogitsProcessorList([hf_lp.TemperatureLogitsWarper(0.5), hf_lp.TopKLogitsWarper(3)])
    assert torch.equal(ours(ids, scores), theirs(ids, scores))


def test_stopping_criteria_match_transformers():
    ids = torch.tensor([[5, 6, 2], [5, 6, 7], [1, 1, 9]])
    assert torch.equal(lg.EosTokenCriteria([2, 9])(ids), hf_sc.EosTokenCriteria([2, 9])(ids, None))
    for length in (2, 3, 4):
        assert torch.equal(lg.MaxLengthCriteria(length)(ids), hf_sc.MaxLengthCriteria(length)(ids, None))
    past = time.time() - 10
    assert lg.MaxTimeCriteria(5, past)(ids).all() and hf_sc.MaxTimeCriteria(5, past)(ids, None).all()
    assert not lg.MaxTimeCriteria(60)(ids).any()
    combined = lg.StoppingCriteriaList([lg.MaxLengthCriteria(10), lg.EosTokenCriteria(2)])
    assert combined(ids).tolist() == [True, False, False] and combined.max_length == 10


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: lg.TopPLogitsWarper(1.5), "top_p"),
        (lambda: lg.TopPLogitsWarper(0.0), "top_p"),
        (lambda: lg.TopKLogitsWarper(0), "top_k"),
        (lambda: lg.TemperatureLogitsWarper(0.0), "temperature"),
        (lambda: lg.RepetitionPenaltyLogitsProcessor(-1.0), "repetition_penalty"),
        (lambda: lg.NoRepeatNGramLogitsProcessor(0), "no_repeat_ngram_size"),
    ],
)
def test_processor_arguments_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---- generate() against transformers -------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(repetition_penalty=1.5),
        dict(no_repeat_ngram_size=2),
        dict(num_beams=3),
        dict(num_beams=4, num_return_sequences=2),
        dict(num_beams=3, length_penalty=0.3),
        dict(num_beams=3, length_penalty=2.0, no_repeat_ngram_size=3),
    ],
    ids=repr,
)
def test_generate_equals_transformers(gpt_pair, prompts, kwargs):
    hf, ours = gpt_pair
    expected = hf_generate(hf, prompts, max_new_tokens=12, **kwargs)
    got = ours.generate(prompts, max_new_tokens=12, pad_token_id=0, **kwargs)
    assert got.shape == expected.shape and torch.equal(got, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(min_new_tokens=6),
        dict(num_beams=3),
        dict(num_beams=3, early_stopping=True),
        dict(num_beams=3, early_stopping="never", length_penalty=1.5),
        dict(num_beams=4, num_return_sequences=3, length_penalty=0.5),
    ],
    ids=repr,
)
def test_generate_with_eos_equals_transformers(gpt_pair, prompts, kwargs):
    """EOS ids the model actually makes: sequences finish early and are padded."""
    hf, ours = gpt_pair
    eos = frequent_tokens(ours, prompts)
    expected = hf_generate(hf, prompts, max_new_tokens=12, eos_token_id=eos, **kwargs)
    got = ours.generate(prompts, max_new_tokens=12, eos_token_id=eos, pad_token_id=0, **kwargs)
    assert got.shape == expected.shape and torch.equal(got, expected)
    if not kwargs:
        assert got.shape[1] < prompts.shape[1] + 12 or (got == 0).any()  # EOS did end something


def test_padded_batch_equals_transformers_and_one_at_a_time(gpt_pair):
    hf, ours = gpt_pair
    gen = torch.Generator().manual_seed(3)
    lengths = [7, 4, 2]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.long)
    singles = []
    for row, n in enumerate(lengths):
        prompt = torch.randint(3, VOCAB, (1, n), generator=gen)
        ids[row, 7 - n :], mask[row, 7 - n :] = prompt[0], 1  # left padding
        singles.append(ours.generate(prompt, max_new_tokens=10))
    for kwargs in (dict(), dict(num_beams=3)):
        got = ours.generate(ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0, **kwargs)
        assert torch.equal(got, hf_generate(hf, ids, attention_mask=mask, max_new_tokens=10, **kwargs))
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0)
    for row, n in enumerate(lengths):
        assert torch.equal(got[row, 7 - n :], singles[row][0])


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, eos_token_id=5), dict(repetition_penalty=1.2)], ids=repr)
def test_cached_equals_uncached(gpt_pair, prompts, kwargs):
    _, ours = gpt_pair
    cached = ours.generate(prompts, max_new_tokens=12, **kwargs)
    uncached = ours.generate(prompts, max_new_tokens=12, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_seeded_sampling_is_reproducible_and_equals_transformers(gpt_pair, prompts):
    hf, ours = gpt_pair
    sample = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, max_new_tokens=12)
    first = ours.generate(prompts, generator=torch.Generator().manual_seed(7), **sample)
    again = ours.generate(prompts, generator=torch.Generator().manual_seed(7), **sample)
    other = ours.generate(prompts, generator=torch.Generator().manual_seed(8), **sample)
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.manual_seed(11)
    expected = hf_generate(hf, prompts, num_return_sequences=2, **sample)
    torch.manual_seed(11)
    got = ours.generate(prompts, num_return_sequences=2, pad_token_id=0, **sample)
    assert got.shape == (6, 19) and torch.equal(got, expected)


def test_max_length_and_default_length(gpt_pair, prompts):
    _, ours = gpt_pair
    assert ours.generate(prompts, max_length=10).shape == (3, 10)
    assert ours.generate(prompts).shape == (3, lg.utils.DEFAULT_MAX_LENGTH)


def test_user_processor_and_stopping_criterion(gpt_pair, prompts):
    _, ours = gpt_pair

    class OnlyToken(lg.LogitsProcessor):
        def __call__(self, input_ids, scores):
            forced = torch.full_like(scores, -float("inf"))
            forced[:, 42] = 0
            return forced

    class StopAtLength(lg.StoppingCriteria):
        def __call__(self, input_ids, scores=None):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 10, dtype=torch.bool)

    out = ours.generate(prompts, max_new_tokens=12, logits_processor=[OnlyToken()], stopping_criteria=[StopAtLength()])
    assert out.shape == (3, 10) and (out[:, 7:] == 42).all()


def test_max_time_stops(gpt_pair, prompts):
    _, ours = gpt_pair
    out = ours.generate(prompts, max_new_tokens=50, max_time=0.0)
    assert out.shape[1] == prompts.shape[1] + 1


class Collector(lg.BaseStreamer):
    def __init__(self):
        self.calls, self.ended = [], False

    def put(self, value):
        self.calls.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


def test_streamer_gets_prompt_then_each_token(gpt_pair, prompts):
    _, ours = gpt_pair
    streamer = Collector()
    out = ours.generate(prompts[:1], max_new_tokens=5, streamer=streamer)
    assert streamer.calls[0] == prompts[0].tolist() and streamer.ended
    assert [c[0] for c in streamer.calls[1:]] == out[0, 7:].tolist()


def test_text_streamer_prints_words(capsys):
    class Chars:
        def decode(self, ids, **kwargs):
            return "".join(chr(i) for i in ids)

    streamer = lg.TextStreamer(Chars(), skip_prompt=True)
    streamer.put(torch.tensor([[ord("x")]]))
    for ch in "hi there":
        streamer.put(torch.tensor([ord(ch)]))
    assert capsys.readouterr().out == "hi "
    streamer.end()
    assert capsys.readouterr().out == "there\n"
    iterator = lg.TextIteratorStreamer(Chars())
    for ch in "ab c":
        iterator.put(torch.tensor([ord(ch)]))
    iterator.end()
    assert "".join(iterator) == "ab c"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "prompt is empty"),
        (dict(input_ids=[[5, 6, 7]]), r"input_ids must be a \[batch, length\] tensor"),
        (dict(max_new_tokens=0), "max_new_tokens must be at least 1"),
        (dict(max_new_tokens=-3), "max_new_tokens must be at least 1"),
        (dict(do_sample=True, top_p=1.5), "top_p must be in"),
        (dict(do_sample=True, top_p=0.0), "top_p must be in"),
        (dict(num_beams=2, num_return_sequences=3), "cannot exceed num_beams"),
        (dict(num_return_sequences=2), "greedy decoding gives one sequence"),
        (dict(input_ids=torch.ones(1, 70, dtype=torch.long)), "prompt has 70 tokens but the model has 64 positions"),
        (dict(max_new_tokens=60), "exceeds the model's 64 positions"),
        (dict(max_new_tokens=None, max_length=5), "leaves no room"),
        (dict(num_beams=2, do_sample=True), "beam sampling"),
        (dict(early_stopping="sometimes"), "early_stopping"),
    ],
)
def test_generate_errors_name_the_fix(gpt_pair, prompts, kwargs, message):
    _, ours = gpt_pair
    kwargs = {"input_ids": prompts, "max_new_tokens": 5, **kwargs}
    with pytest.raises(GenerationError, match=message):
        ours.generate(**kwargs)


# ---- T5 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def t5():
    from libai.models import T5ForPreTraining

    torch.manual_seed(0)
    cfg = dict(
        vocab_size=64, hidden_size=16, hidden_layers=2, num_attention_heads=4, intermediate_size=32,
        embedding_dropout_prob=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=32,
    )
    return T5ForPreTraining(cfg).eval()


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, eos_token_id=4, num_return_sequences=2)], ids=repr)
def test_t5_cached_equals_uncached(t5, kwargs):
    enc = torch.randint(3, 64, (3, 9), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(enc)
    mask[1, 6:] = 0
    cached = t5.generate(enc, attention_mask=mask, max_new_tokens=10, decoder_start_token_id=1, **kwargs)
    uncached = t5.generate(
        enc, attention_mask=mask, max_new_tokens=10, decoder_start_token_id=1, use_cache=False, **kwargs
    )
    assert torch.equal(cached, uncached) and (cached[:, 0] == 1).all()
    assert cached.shape[0] == 3 * kwargs.get("num_return_sequences", 1)
    # Padding of the encoder input does not change that prompt's tokens.
    alone = t5.generate(enc[1:2, :6], max_new_tokens=10, decoder_start_token_id=1, **kwargs)
    rows = kwargs.get("num_return_sequences", 1)
    assert torch.equal(alone, cached[rows : 2 * rows, : alone.shape[1]])


def test_kv_cache_appends_reorders_and_grows():
    from libai.layers import KVCache

    cache = KVCache(max_length=4)
    k1, v1 = torch.randn(2, 3, 3, 5), torch.randn(2, 3, 3, 5)
    keys, values = cache.update(0, k1, v1)
    assert torch.equal(keys, k1) and torch.equal(values, v1) and cache.get_seq_length() == 3
    k2, v2 = torch.randn(2, 3, 2, 5), torch.randn(2, 3, 2, 5)  # past the preallocated 4 positions
    keys, values = cache.update(0, k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], dim=2)) and cache.get_seq_length() == 5
    cache.reorder(torch.tensor([1, 1]))
    keys, _ = cache.update(0, k2[:, :, :1], v2[:, :, :1])
    assert torch.equal(keys[0, :, :5], torch.cat([k1, k2], dim=2)[1]) and len(cache) == 1
    assert KVCache().get_seq_length() == 0


def test_beam_only_arguments_are_logged_when_ignored(gpt_pair, prompts, caplog):
    _, ours = gpt_pair
    with caplog.at_level("WARNING"):
        greedy = ours.generate(prompts, max_new_tokens=4, length_penalty=2.0)
    assert "length_penalty and early_stopping only apply to beam search" in caplog.text
    assert torch.equal(greedy, ours.generate(prompts, max_new_tokens=4))
