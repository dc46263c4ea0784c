"""projects/igpt: pixel clusters, the task with either backbone, Acc@1 with classify=True, a
backbone swap by override, and digit completion through the inference pipeline."""
import os

import numpy as np
import pytest
import torch

from projects.igpt.data import PixelSequences, fit_pixel_clusters, load_or_fit_clusters, quantize, shrink_images
from projects.igpt.modeling import CausalConvNet, GenerativePixels, PixelTransformer
from tests.helpers.dist import run_on_ranks
from tests.helpers.runs import REPO, read_metrics, train_sh

CONFIG = os.path.join(REPO, "projects/igpt/config.py")
SMALL = (  # 7 x 7 digits: 49 pixel tokens
    "dataloader.train.dataset.0.image_size=7",
    "dataloader.test.0.dataset.image_size=7",
    "model.backbone.max_positions=49",
)


def test_kmeans_finds_the_centres_of_separated_clusters():
    rng = np.random.default_rng(0)
    true = np.array([0.0, 0.3, 0.7, 1.0])
    pixels = np.concatenate([c + 0.01 * rng.standard_normal(n) for c, n in zip(true, (5000, 300, 200, 800))])
    centres = fit_pixel_clusters(pixels, 4)
    assert np.allclose(centres, true, atol=2e-3)
    assert quantize(np.array([0.02, 0.31, 0.66, 0.99, 0.45]), centres).tolist() == [0, 1, 2, 3, 1]


def test_clusters_are_fitted_once_saved_and_checked(tmp_path):
    path = str(tmp_path / "c.npy")
    first = load_or_fit_clusters(path, None, 7, 16)
    stamp = os.stat(path).st_mtime_ns
    again = load_or_fit_clusters(path, None, 7, 16)
    assert os.stat(path).st_mtime_ns == stamp and np.array_equal(first, again)
    assert np.all(np.diff(first) > 0) and first[0] < 0.01 and first[-1] > 0.95
    with pytest.raises(ValueError, match="holds 16 pixel clusters, not num_clusters=8"):
        load_or_fit_clusters(path, None, 7, 8)


def test_a_sample_is_the_start_token_then_the_pixels_shifted_by_one(tmp_path):
    data = PixelSequences(train=False, image_size=7, clusters_file=str(tmp_path / "c.npy"))
    sample = data[3]
    inputs, targets = sample.get("input_ids").tensor, sample.get("pixel_labels").tensor
    assert inputs.shape == targets.shape == (49,)
    assert inputs[0] == data.start_token == 16 and torch.equal(inputs[1:], targets[:-1])
    expected = quantize(shrink_images(data_images(data)[3:4], 7), data.centres).ravel()
    assert targets.tolist() == expected.tolist() and int(sample.get("labels").tensor) == int(data.labels[3])


def data_images(data):
    from libai.data.datasets import MNISTDataset

    return MNISTDataset(None, train=False).images


@pytest.mark.parametrize("backbone", [PixelTransformer, CausalConvNet])
def test_backbones_are_causal_and_generate_with_and_without_a_cache(backbone):
    torch.manual_seed(0)
    model = GenerativePixels(backbone(17, 49, hidden_size=32, num_layers=3), 32, classify=True).eval()
    ids = torch.randint(0, 17, (2, 49))
    changed = ids.clone()
    changed[:, 20] = (changed[:, 20] + 1) % 17
    logits, logits_changed = model(ids)["logits"], model(changed)["logits"]
    assert torch.equal(logits[:, :20], logits_changed[:, :20]) and not torch.equal(logits[:, 20:], logits_changed[:, 20:])
    prompt = ids[:, :25]
    cached = model.generate(prompt, max_new_tokens=25, use_cache=True)
    recomputed = model.generate(prompt, max_new_tokens=25, use_cache=False)
    assert cached.shape == (2, 50) and torch.equal(cached, recomputed)
    assert int(cached[:, 25:].max()) < 16  # pixels only, never the start token


def test_training_needs_its_labels():
    model = GenerativePixels(PixelTransformer(17, 49, hidden_size=32, num_layers=1), 32, classify=True)
    ids = torch.randint(0, 16, (2, 49))
    with pytest.raises(ValueError, match="labels \\(the digits\\)"):
        model(ids, pixel_labels=ids)
    with pytest.raises(ValueError, match="pixel_labels"):
        model(ids)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The project's config at 7 x 7, 200 iterations on one process."""
    out = str(tmp_path_factory.mktemp("igpt") / "run")
    train_sh(
        1, out, *SMALL,
        "train.train_epoch=0", "train.train_iter=200", "train.log_period=1",
        "train.evaluation.eval_period=200", "train.checkpointer.period=200", "optim.lr=5e-3",
        config=CONFIG,
    )
    return out


def test_pixel_loss_falls_and_classify_reports_acc1(trained):
    records = read_metrics(trained)
    pixel = [r["pixel_loss"] for r in records if "pixel_loss" in r]
    # From ln(16) = 2.77 at the start (16 equally likely clusters) to about 1.2.
    assert pixel[0] == pytest.approx(np.log(16), rel=0.05) and np.mean(pixel[-10:]) < 0.5 * pixel[0], pixel
    assert all("cls_loss" in r for r in records if "pixel_loss" in r)
    (evaluation,) = [r for r in records if "Acc@1" in r]
    # 10 classes: chance is 10%; 200 iterations of the joint loss reach ~30%.
    assert evaluation["Acc@1"] > 20 and evaluation["PPL"] < 4.0, evaluation


def test_backbone_swap_by_override_in_generative_pretraining(tmp_path):
    out = str(tmp_path / "conv")
    train_sh(
        1, out, *SMALL, "model.backbone._target_=projects.igpt.modeling.CausalConvNet",
        "train.train_epoch=0", "train.train_iter=40", "train.log_period=1", "train.evaluation.eval_period=40",
        "train.evaluation.eval_iter=2", "optim.lr=5e-3",
        config=os.path.join(REPO, "projects/igpt/pretrain.py"),
    )
    from libai.config import LazyConfig

    cfg = LazyConfig.load(os.path.join(out, "config.yaml"))
    assert "CausalConvNet" in str(cfg.model.backbone._target_) and "GenerativePixels" in str(cfg.model._target_)
    pixel = [r["pixel_loss"] for r in read_metrics(out) if "pixel_loss" in r]
    assert pixel[0] == pytest.approx(np.log(16), rel=0.05) and np.mean(pixel[-5:]) < 0.6 * pixel[0], pixel
    assert not any("cls_loss" in r or "Acc@1" in r for r in read_metrics(out))
    (evaluation,) = [r for r in read_metrics(out) if "PPL" in r]
    assert 1.0 < evaluation["PPL"] < 6.0


def test_completion_grid_keeps_the_prompt(trained, tmp_path):
    from PIL import Image

    from projects.igpt.pipeline import complete_digits

    out_png = str(tmp_path / "completions.png")
    results = complete_digits(os.path.join(trained, "model_final"), out_png, num_digits=4, do_sample=True, top_k=4)
    with Image.open(out_png) as picture:
        assert picture.mode == "L" and picture.size == ((7 + 2) * 4 * 4 + 8, (7 + 2) * 3 * 4 + 8)
    tokens = PixelSequences(train=False, image_size=7).tokens[np.linspace(0, 999, 4).astype(int)]
    for result, digit in zip(results, tokens):
        assert result["prompt"] == digit[:21].tolist() and len(result["completion"]) == 28
        assert result["image"].shape == (7, 7)


def test_completion_pipeline_names_bad_inputs(trained):
    from libai.inference.basic import PipelineError
    from projects.igpt.pipeline import PixelCompletionPipeline

    pipeline = PixelCompletionPipeline(None, model_path=os.path.join(trained, "model_final"))
    digit = np.zeros((28, 28), dtype=np.uint8)
    with pytest.raises(PipelineError, match="top_rows=7 must be between 1 and 6"):
        pipeline(digit, top_rows=7)
    with pytest.raises(PipelineError, match="a 28 x 28 digit or a stack of them, got shape \\(28,\\)"):
        pipeline(digit[0])
    with pytest.raises(PipelineError, match="unknown parameter"):
        pipeline(digit, temprature=0.5)
    assert len(pipeline(digit)["completion"]) == 28


def _complete(model_path, out_png, layout):
    from projects.igpt.pipeline import complete_digits

    # Sampled (a weak model's greedy completion is all background), from the same seed.
    results = complete_digits(model_path, out_png, num_digits=3, do_sample=True, top_k=4, seed=7, **layout)
    return [r["completion"] for r in results]


def test_sampled_completions_are_the_same_under_pipeline_parallelism(trained, tmp_path):
    # pp2: the KV cache lives on each stage; tensor parallelism is GPT-2's layers, whose
    # generation under tp is tested in tests/inference.
    model_path = os.path.join(trained, "model_final")
    (alone,) = run_on_ranks(_complete, 1, model_path, str(tmp_path / "one.png"), {})
    ranks = run_on_ranks(_complete, 2, model_path, str(tmp_path / "two.png"), dict(pipeline_parallel=2))
    assert ranks[0] == ranks[1] == alone
    assert any(token != 0 for completion in alone for token in completion)
