"""Each project's predict() on a checkpoint trained here, the command-line generator (one
process and tensor-parallel through tools/infer.sh), and every user error of inference:
one clear message, a non-zero exit from the tools, and checkpoints left untouched."""
from __future__ import annotations

import hashlib
import os
import subprocess

import numpy as np
import pytest
import torch

from libai.config import LazyConfig
from libai.inference import PipelineError, TextGenerationPipeline
from libai.inference.generation import GenerationError
from tests.helpers.dist import free_port
from tests.helpers.runs import REPO, train_sh

TINY = os.path.join(REPO, "tests/configs/gpt2_generation.py")
SHORT_RUN = ("train.train_epoch=0", "train.train_iter=3", "train.evaluation.enabled=False", "train.log_period=1")


def trained(tmp_path_factory, config: str, *overrides: str) -> str:
    """model_final of a 3-iteration one-process run of `config`."""
    out = str(tmp_path_factory.mktemp("run"))
    train_sh(1, out, *SHORT_RUN, *overrides, config=os.path.join(REPO, config))
    return os.path.join(out, "model_final")


def digest(directory: str) -> str:
    """A hash of every file's name, size, mtime and bytes under `directory`."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            path = os.path.join(root, name)
            st = os.stat(path)
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def digits():
    from libai.data.datasets import MNISTDataset

    data = MNISTDataset(root=None, train=False)
    return data.images[:3], [int(label) for label in data.labels[:3]]


@pytest.mark.parametrize("project", ["mnist", "vit_mnist"])
def test_digit_predict(tmp_path_factory, tmp_path, digits, project):
    from PIL import Image

    module = __import__(f"projects.{project}.pipeline", fromlist=["predict"])
    model_path = trained(tmp_path_factory, f"projects/{project}/config.py")
    before = digest(model_path)
    images, _ = digits
    png = tmp_path / "digit.png"
    Image.fromarray(np.asarray(images[0])).save(png)
    from_file = module.predict(str(png), model_path=model_path)
    from_array = module.predict(np.asarray(images[0]), model_path=model_path, return_all_scores=True)
    assert from_file["label"] in range(10) and 0.0 < from_file["score"] <= 1.0
    assert from_file["label"] == from_array["label"] and from_file["score"] == pytest.approx(from_array["score"])
    assert len(from_array["scores"]) == 10 and sum(from_array["scores"].values()) == pytest.approx(1.0)
    batch = module.predict([np.asarray(image) for image in images], model_path=model_path)
    assert len(batch) == 3 and batch[0]["label"] == from_file["label"]
    assert digest(model_path) == before  # inference never writes into a checkpoint


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory):
    return trained(tmp_path_factory, "projects/shakespeare/gpt2_pretrain.py", "train.dist.pipeline_num_layers=4")


def test_shakespeare_predict_and_generate_tool(gpt2_checkpoint):
    from projects.shakespeare.pipeline import predict

    before = digest(gpt2_checkpoint)
    text = predict("ROMEO:", model_path=gpt2_checkpoint, max_new_tokens=8)
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:")
    assert isinstance(predict("ROMEO:", model_path=gpt2_checkpoint, max_new_tokens=8, do_sample=True, top_p=0.9), str)
    args = ["--model-path", gpt2_checkpoint, "--prompt", "ROMEO:", "--max-new-tokens", "8"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PORT=str(free_port()))
    one = subprocess.run(["python", "tools/generate.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.strip() == text.strip()  # config.yaml next to the checkpoint, streamed to stdout
    tp = subprocess.run(
        ["bash", "tools/infer.sh", "tools/generate.py", "2", *args, "--tensor-parallel", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert tp.returncode == 0, tp.stderr[-3000:]
    assert tp.stdout.strip() == text.strip()
    assert digest(gpt2_checkpoint) == before


def test_genre_predict(tmp_path_factory):
    from projects.shakespeare.folio_genre import GENRES
    from projects.shakespeare.pipeline import predict_genre

    model_path = trained(tmp_path_factory, "projects/shakespeare/bert_classification.py")
    result = predict_genre("Now is the winter of our discontent made glorious summer", model_path=model_path)
    assert result["label"] in GENRES and 0.0 < result["score"] <= 1.0
    scores = predict_genre("To be, or not to be", model_path=model_path, return_all_scores=True)["scores"]
    assert sorted(scores) == sorted(GENRES)


# ---- errors ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_pipe():
    return TextGenerationPipeline(TINY, mode="random")


@pytest.mark.parametrize(
    "prompt, kwargs, error, message",
    [
        ("word" * 1 + " word" * 79, dict(max_new_tokens=4), GenerationError, "prompt has 80 tokens but the model has 64 positions"),
        ("ROMEO:", dict(max_new_tokens=70), GenerationError, "exceeds the model's 64 positions"),
        ("", dict(max_new_tokens=4), PipelineError, "has no tokens"),
        ([], dict(max_new_tokens=4), PipelineError, "non-empty list"),
        ("ROMEO:", dict(max_new_tokens=0), GenerationError, "max_new_tokens must be at least 1"),
        ("ROMEO:", dict(max_new_tokens=4, do_sample=True, top_p=1.2), GenerationError, r"top_p must be in \(0, 1\]"),
        ("ROMEO:", dict(max_new_tokens=4, num_beams=2, num_return_sequences=3), GenerationError, "cannot exceed num_beams"),
        ("ROMEO:", dict(max_new_tokens=4, num_beam=2), PipelineError, r"unknown parameter\(s\) \['num_beam'\]"),
    ],
)
def test_generation_errors(random_pipe, prompt, kwargs, error, message):
    with pytest.raises(error, match=message):
        random_pipe(prompt, **kwargs)


def test_model_path_errors(tmp_path, gpt2_checkpoint):
    with pytest.raises(PipelineError, match="is not a LiBai checkpoint.*give a checkpoint directory"):
        TextGenerationPipeline(TINY, model_path=str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PipelineError, match="it is a Hugging Face folder: use mode='huggingface'"):
        TextGenerationPipeline(TINY, model_path=str(tmp_path))
    with pytest.raises(PipelineError, match="is not a Hugging Face folder"):
        TextGenerationPipeline(TINY, model_path=gpt2_checkpoint, mode="huggingface")
    from libai.models.utils.model_loader import HuggingFaceCheckpointError

    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(HuggingFaceCheckpointError, match="cannot be read as safetensors"):
        TextGenerationPipeline(TINY, model_path=str(tmp_path), mode="huggingface")
    with pytest.raises(PipelineError, match="needs model_path"):
        TextGenerationPipeline(TINY)
    with pytest.raises(PipelineError, match="mode='best' is not one of"):
        TextGenerationPipeline(TINY, mode="best")


def test_layout_and_vocabulary_errors():
    from libai.engine.default import VocabSizeError
    from libai.utils.distributed import DistLayoutError

    with pytest.raises(DistLayoutError):
        TextGenerationPipeline(TINY, mode="random", tensor_parallel=2)
    cfg = LazyConfig.load(TINY)
    cfg.model.cfg.vocab_size = 1024
    with pytest.raises(VocabSizeError, match="the tokenizer has 50257 tokens"):
        TextGenerationPipeline(cfg, mode="random")


def test_generate_tool_errors_are_one_line(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for args, message in [
        (["--model-path", str(tmp_path)], "is not a LiBai checkpoint"),
        (["--mode", "random", "--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
        (["--mode", "random", "--top-p", "2", "--do-sample"], "top_p must be in (0, 1]"),
    ]:
        proc = subprocess.run(
            ["python", "tools/generate.py", "--config-file", TINY, "--prompt", "hi", *args],
            cwd=REPO, env=env, capture_output=True, text=True,
        )
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and lines[-1].startswith("error: ") and message in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr


def test_random_pipeline_generates_text(random_pipe):
    one = random_pipe("ROMEO:", max_new_tokens=4)
    assert len(one) == 1 and one[0]["generated_text"].startswith("ROMEO:")
    assert len(random_pipe.tokenizer.encode("Hi", add_special_tokens=False)) == 1
    full = random_pipe("Hi", max_new_tokens=4)[0]["generated_text"]  # a one-token prompt too
    assert full == "Hi" + random_pipe("Hi", max_new_tokens=4, return_full_text=False)[0]["generated_text"]
    many = random_pipe(["ROMEO:", "To be, or not"], max_new_tokens=3, num_beams=2, num_return_sequences=2)
    assert [len(group) for group in many] == [2, 2]
    # Each prompt of a padded batch gets the tokens it gets alone.
    assert many[1] == random_pipe("To be, or not", max_new_tokens=3, num_beams=2, num_return_sequences=2)
    ids = random_pipe.forward(random_pipe.preprocess("ROMEO:"), max_new_tokens=20)["ids"]
    assert (ids < 50257).all()  # the vocabulary's padding rows are never generated
    torch.manual_seed(0)
