"""projects/llama: pretrain, export to Hugging Face, continue from the own checkpoint and from
the export with the same losses, generate through the pipeline, and SFT with packing."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.runs import REPO, losses_by_iter, read_metrics, train_sh

transformers = pytest.importorskip("transformers")

PRETRAIN = os.path.join(REPO, "projects/llama/pretrain.py")
FROM_HF = os.path.join(REPO, "projects/llama/from_huggingface.py")
SFT = os.path.join(REPO, "projects/llama/sft.py")
RUN = ("dataloader.train.dataset.0.max_seq_length=32", "train.train_iter=6", "train.log_period=1",
       "train.evaluation.enabled=False", "train.train_micro_batch_size=2", "train.global_batch_size=4")
TINY = ("model.cfg.hidden_size=32", "model.cfg.ffn_hidden_size=64", "model.cfg.max_position_embeddings=32", *RUN)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("llama") / "pretrain")
    train_sh(1, out, *TINY, config=PRETRAIN)
    return out


def test_continues_the_same_from_its_checkpoint_and_from_a_hugging_face_export(pretrained, tmp_path):
    hf_dir = str(tmp_path / "hf")
    subprocess.run([sys.executable, os.path.join(REPO, "tools/export_huggingface.py"), "--model-path",
                    os.path.join(pretrained, "model_final"), "--out", hf_dir], check=True, cwd=REPO,
                   capture_output=True)
    assert json.load(open(os.path.join(hf_dir, "config.json")))["num_key_value_heads"] == 2
    assert transformers.LlamaForCausalLM.from_pretrained(hf_dir).config.hidden_size == 32

    own = str(tmp_path / "own")
    train_sh(1, own, *TINY, f"train.load_weight={os.path.join(pretrained, 'model_final')}", config=PRETRAIN)
    from_hf = str(tmp_path / "from_hf")
    train_sh(1, from_hf, *RUN, f"model.pretrained_model_path={hf_dir}", config=FROM_HF)
    own_losses, hf_losses = losses_by_iter(own), losses_by_iter(from_hf)
    assert sorted(own_losses) == list(range(6))
    assert own_losses == pytest.approx(hf_losses, rel=1e-6)
    # Continuing starts where pretraining ended, not from a random model.
    assert own_losses[0] < losses_by_iter(pretrained)[0]


def test_predict_generates_through_the_pipeline(pretrained):
    from projects.llama.pipeline import predict

    text = predict("ROMEO:", model_path=os.path.join(pretrained, "model_final"), config_file=None, max_new_tokens=6)
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:")


def test_sft_with_packing_trains_and_evaluates_on_responses(pretrained, tmp_path):
    out = str(tmp_path / "sft")
    pairs = str(tmp_path / "pairs.jsonl")
    train_sh(
        1, out, *TINY[:3], "train.train_iter=10", "train.log_period=1", "train.train_micro_batch_size=2",
        "train.global_batch_size=4", "train.evaluation.eval_period=10", "train.evaluation.eval_iter=2",
        f"train.load_weight={os.path.join(pretrained, 'model_final')}",
        f"dataloader.train.dataset.0.path.path={pairs}", "dataloader.train.dataset.0.path.max_pairs=300",
        "dataloader.train.dataset.0.max_seq_length=32",
        config=SFT,
    )
    records = read_metrics(out)
    assert len([r for r in records if "lm_loss" in r]) == 10
    (evaluation,) = [r for r in records if "PPL" in r]
    assert 1.0 < evaluation["PPL"] < 60000
    assert os.path.isdir(os.path.join(out, "model_best"))  # judged by the PPL of the responses
    assert sum(1 for _ in open(pairs)) == 300
