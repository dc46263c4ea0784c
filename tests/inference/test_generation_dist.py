"""The GPT text-generation pipeline under tp2, pp2 and tp2·pp2 (4 gloo processes) gives the
one-process tokens, which equal transformers' own generate on the same weights."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.dist import run_on_ranks

transformers = pytest.importorskip("transformers")

CONFIG = "tests/configs/gpt2_generation.py"
PROMPTS = ["ROMEO: wherefore art", "To be, or not"]
REAL_VOCAB = 50257
LAYOUTS = [dict(tensor_parallel=2), dict(pipeline_parallel=2), dict(tensor_parallel=2, pipeline_parallel=2)]
SETTINGS = {
    "greedy": dict(max_new_tokens=8),
    "beams": dict(max_new_tokens=6, num_beams=3, num_return_sequences=2),
    "sampled": dict(max_new_tokens=8, do_sample=True, top_k=20, temperature=0.9),
}


def generate_all(pipe) -> dict:
    """Token ids of every setting for PROMPTS (sampling seeded the same way everywhere)."""
    inputs = pipe.preprocess(PROMPTS)
    out = {}
    for name, kwargs in SETTINGS.items():
        if kwargs.get("do_sample"):
            kwargs = dict(kwargs, generator=torch.Generator().manual_seed(5))
        out[name] = pipe.forward(inputs, **kwargs)["ids"]
    return out


def _worker(hf_dir: str, ckpt_dir: str) -> list:
    from libai.inference import TextGenerationPipeline

    results = []
    for layout, (mode, path) in zip(LAYOUTS, [("huggingface", hf_dir), ("libai", ckpt_dir), ("huggingface", hf_dir)]):
        pipe = TextGenerationPipeline(CONFIG, model_path=path, mode=mode, **layout)
        results.append(generate_all(pipe))
    return results


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random Hugging Face GPT-2 folder and the same weights as a LiBai checkpoint."""
    from libai.inference import TextGenerationPipeline
    from libai.utils.checkpoint import Checkpointer

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50304, n_positions=64, n_embd=32, n_layer=4, n_head=4)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.generation_config.eos_token_id = None
    hf_dir = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(hf_dir)
    pipe = TextGenerationPipeline(CONFIG, model_path=str(hf_dir), mode="huggingface")
    run_dir = tmp_path_factory.mktemp("run")
    Checkpointer(pipe.model, str(run_dir)).save("model_final")
    return hf, str(hf_dir), str(run_dir / "model_final"), pipe


def test_one_process_equals_transformers(weights):
    hf, _, _, pipe = weights
    ours = generate_all(pipe)
    inputs = pipe.preprocess(PROMPTS)
    eos = pipe.tokenizer.eos_token_id
    for name in ("greedy", "beams"):
        kwargs = {k: v for k, v in SETTINGS[name].items()}
        with torch.no_grad():
            expected = hf.generate(
                inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False, top_k=None,
                eos_token_id=eos, pad_token_id=eos, suppress_tokens=list(range(REAL_VOCAB, 50304)), **kwargs,
            )
        assert torch.equal(ours[name], expected), name


def test_layouts_give_the_one_process_tokens(weights):
    _, hf_dir, ckpt_dir, pipe = weights
    expected = generate_all(pipe)
    results = run_on_ranks(_worker, 4, hf_dir, ckpt_dir, timeout=600)
    for layout_index, layout in enumerate(LAYOUTS):
        for rank, per_rank in enumerate(results):
            for name in SETTINGS:
                assert torch.equal(per_rank[layout_index][name], expected[name]), (layout, rank, name)
