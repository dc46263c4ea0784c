"""Evaluators and inference_on_dataset on 1 and 3 processes."""
import math
import pytest
import torch
from torch import nn

from libai.evaluation import (
    ClsEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    flatten_results_dict,
    inference_on_dataset,
)
from libai.utils import distributed as dist_utils
from tests.helpers.dist import run_on_ranks

NUM_SAMPLES = 23  # not a multiple of ranks x micro batch (3 x 4): the last step is padded
NUM_CLASSES = 5
MICRO_BATCH = 4


# --------------------------------------------------------------------------------------
# ClsEvaluator
# --------------------------------------------------------------------------------------


def test_cls_evaluator_topk_percent():
    logits = torch.tensor(
        [
            [0.9, 0.5, 0.1, 0.0],  # label 0: top-1 hit
            [0.9, 0.5, 0.1, 0.0],  # label 1: 2nd guess
            [0.9, 0.5, 0.1, 0.0],  # label 3: 4th guess
            [0.1, 0.2, 0.3, 0.4],  # label 2: 2nd guess
        ]
    )
    labels = torch.tensor([0, 1, 3, 2])
    evaluator = ClsEvaluator(topk=(1, 2, 5))
    evaluator.process({"labels": labels[:2]}, {"prediction_scores": logits[:2]})
    evaluator.process({"labels": labels[2:]}, {"prediction_scores": logits[2:]})
    # k=5 is capped at 4 classes, as in LiBai.
    assert evaluator.evaluate() == {"Acc@1": 25.0, "Acc@2": 75.0, "Acc@5": 100.0}
    evaluator.reset()
    assert evaluator.evaluate() == {"Acc@1": 0.0, "Acc@2": 0.0, "Acc@5": 0.0}
    # LiBai's BertForClassification names its scores "logits".
    evaluator.process({"labels": labels}, {"logits": logits})
    assert evaluator.evaluate() == {"Acc@1": 25.0, "Acc@2": 75.0, "Acc@5": 100.0}


def test_cls_evaluator_clear_errors():
    evaluator = ClsEvaluator()
    with pytest.raises(KeyError, match="'prediction_scores' or 'logits'"):
        evaluator.process({"labels": torch.zeros(2)}, {"scores": torch.zeros(2, 3)})
    with pytest.raises(KeyError, match="inputs\\['labels'\\]"):
        evaluator.process({"label": torch.zeros(2)}, {"logits": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        evaluator.process({"labels": torch.zeros(2)}, {"prediction_scores": torch.zeros(3, 3)})


class _Constant(DatasetEvaluator):
    def __init__(self, result):
        self.result = result

    def evaluate(self):
        return self.result


def test_dataset_evaluators_merge_and_reject_clashes():
    merged = DatasetEvaluators([_Constant({"a": 1}), _Constant({"b": 2})]).evaluate()
    assert merged == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="'a'"):
        DatasetEvaluators([_Constant({"a": 1}), _Constant({"a": 2})]).evaluate()
    assert flatten_results_dict({"x": {"Acc@1": 1.0, "y": {"z": 2}}, "w": 3}) == {
        "x/Acc@1": 1.0,
        "x/y/z": 2,
        "w": 3,
    }


# --------------------------------------------------------------------------------------
# inference_on_dataset
# --------------------------------------------------------------------------------------


class _Dataset(torch.utils.data.Dataset):
    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(NUM_SAMPLES, 6, generator=gen)
        self.y = torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=gen)

    def __len__(self):
        return NUM_SAMPLES

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i], "idx": torch.tensor(i)}


class _StreamSampler:
    """SingleRoundSampler's layout (spec section C), used until libai.data provides it.

    Step s covers stream positions [s*mbs*dp, (s+1)*mbs*dp); dp rank r takes its
    [r*mbs, (r+1)*mbs) part; positions >= N are padding and read index p % N.
    """

    def __init__(self, dataset, micro_batch_size, data_parallel_rank=0, data_parallel_size=1):
        self.n, self.mbs = len(dataset), micro_batch_size
        self.rank, self.dp = data_parallel_rank, data_parallel_size

    def __len__(self):
        return -(-self.n // (self.mbs * self.dp))

    def __iter__(self):
        for step in range(len(self)):
            start = step * self.mbs * self.dp + self.rank * self.mbs
            yield [p % self.n for p in range(start, start + self.mbs)]


def _sampler(dataset):
    try:
        from libai.data.samplers import SingleRoundSampler
    except ImportError:
        SingleRoundSampler = _StreamSampler
    return SingleRoundSampler(
        dataset,
        micro_batch_size=MICRO_BATCH,
        data_parallel_rank=dist_utils.get_data_parallel_rank(),
        data_parallel_size=dist_utils.get_data_parallel_size(),
    )


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(6, NUM_CLASSES)
        self.dropout = nn.Dropout(0.5)  # must be off in eval mode, or ranks would disagree

    def forward(self, x, labels, idx):
        scores = self.dropout(self.linear(x))
        correct = scores.argmax(1) == labels  # a bool tensor, gathered like the others
        return {"prediction_scores": scores, "correct": correct, "mean": scores.mean()}


class _Recorder(DatasetEvaluator):
    """Records which samples the evaluator saw and the pass-through scalar."""

    def reset(self):
        self.ids, self.correct, self.scalars = [], [], []

    def process(self, inputs, outputs):
        self.ids += inputs["idx"].tolist()
        self.correct += outputs["correct"].tolist()
        self.scalars.append(outputs["mean"].ndim)

    def evaluate(self):
        return {"ids": self.ids, "num_correct": sum(self.correct), "scalar_dims": set(self.scalars)}


def _evaluate(eval_iter):
    dataset = _Dataset()
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_sampler(dataset))
    model = _Model()
    model.train()
    results = inference_on_dataset(
        model,
        loader,
        MICRO_BATCH,
        eval_iter,
        lambda batch, device: batch,
        "cpu",
        [ClsEvaluator(topk=(1, 3)), _Recorder()],
    )
    assert model.training, "inference_on_dataset must give the model its train mode back"
    return results


def _expected():
    data, model = _Dataset(), _Model().eval()
    with torch.no_grad():
        top = model.linear(data.x).topk(3, dim=1).indices
    hits = top.eq(data.y[:, None])
    return 100.0 * hits[:, :1].sum().item() / NUM_SAMPLES, 100.0 * hits.sum().item() / NUM_SAMPLES


def _check(results, eval_iter_results, dp):
    top1, top3 = _expected()
    assert results["Acc@1"] == pytest.approx(top1)
    assert results["Acc@3"] == pytest.approx(top3)
    assert results["ids"] == list(range(NUM_SAMPLES))  # each sample once, padding dropped
    assert results["num_correct"] == round(top1 * NUM_SAMPLES / 100)
    assert results["scalar_dims"] == {0}  # non-batch outputs pass through ungathered
    # eval_iter=1: one global batch of micro batch x dp samples, in stream order
    assert eval_iter_results["ids"] == list(range(MICRO_BATCH * dp))


def _worker():
    dist_utils.setup_dist_util({}, device="cpu")  # gloo: several ranks, CPU tensors
    return _evaluate(None), _evaluate(1)


def test_inference_on_dataset_one_process():
    dist_utils.setup_dist_util({})
    _check(_evaluate(1e5), _evaluate(1), dp=1)


def test_inference_on_dataset_three_processes_same_accuracy():
    for results, first_step in run_on_ranks(_worker, 3):
        _check(results, first_step, dp=3)


def test_ppl_evaluator_is_exp_of_the_mean_token_loss_over_the_dataset():
    from libai.evaluation import PPLEvaluator

    evaluator = PPLEvaluator()
    # Two batches of different sizes: the mean is over tokens, not over batches.
    evaluator.process({}, {"lm_loss": torch.tensor([[1.0, 2.0], [3.0, 4.0]])})
    evaluator.process({"loss_mask": torch.tensor([[1, 0]])}, {"lm_loss": torch.tensor([[5.0, 100.0]])})
    assert evaluator.evaluate()["PPL"] == pytest.approx(math.exp(15.0 / 5))
    evaluator.reset()
    with pytest.raises(KeyError, match="containing 'loss'"):
        evaluator.process({}, {"prediction_scores": torch.zeros(1, 2)})
    with pytest.raises(ValueError, match="per-token"):
        evaluator.process({}, {"lm_loss": torch.tensor(1.0)})
