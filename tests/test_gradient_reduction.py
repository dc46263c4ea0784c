"""Data-parallel gradient reduction: DDP-style buckets started during backward (the
default) against the exact float64 reducer and a one-process reference, on 2 gloo ranks."""
import torch
from torch import nn

from libai.utils import distributed as dist
from tests.helpers.dist import run_on_ranks

MICRO_BATCHES, ROWS = 2, 4


class _WithUnused(nn.Module):
    """An MLP plus a parameter no forward uses (its gradient must come out zero, no hang)."""

    def __init__(self):
        super().__init__()
        # Registered first, so it is in the last bucket (buckets go in reverse order).
        self.unused = nn.Parameter(torch.ones(5))
        self.mlp = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x):
        return self.mlp(x).pow(2).mean()


def _global_batch() -> torch.Tensor:
    """Every rank's micro-batches: [dp, micro-batches, rows, 6], the same on every rank."""
    return torch.randn(2, MICRO_BATCHES, ROWS, 6, generator=torch.Generator().manual_seed(1))


def _mean_grads(exact: bool, bucket_cap_mb: float) -> tuple[dict, int, int]:
    """This rank's step over its micro-batches; (mean gradients, buckets, buckets started in backward)."""
    torch.manual_seed(0)
    model = _WithUnused()
    reducer = dist.make_gradient_reducer(model, MICRO_BATCHES, exact=exact, bucket_cap_mb=bucket_cap_mb)
    for x in _global_batch()[dist.get_data_parallel_rank()]:
        model(x).backward()
        reducer.accumulate()
    reducer.reduce()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    buckets = len(getattr(reducer, "buckets", []))
    return grads, buckets, getattr(reducer, "launched_in_backward", 0)


def _worker() -> dict:
    dist.setup_dist_util({}, device="cpu")
    return dict(
        # 0 MB: one bucket per parameter, so several start while backward runs.
        small=_mean_grads(exact=False, bucket_cap_mb=0.0),
        one_bucket=_mean_grads(exact=False, bucket_cap_mb=25.0),
        exact=_mean_grads(exact=True, bucket_cap_mb=25.0),
    )


def _one_process_mean_grads() -> dict:
    torch.manual_seed(0)
    model = _WithUnused()
    batches = _global_batch().flatten(0, 1)
    sum(model(x) for x in batches).div(len(batches)).backward()
    return {name: p.grad if p.grad is not None else torch.zeros_like(p) for name, p in model.named_parameters()}


def test_buckets_start_during_backward_and_average_like_one_process():
    reference = _one_process_mean_grads()
    rank0, rank1 = run_on_ranks(_worker, 2)
    for result in (rank0, rank1):
        grads, buckets, launched = result["small"]
        assert buckets == 7, buckets
        # Every bucket but the last, which holds the unused parameter (started in reduce()),
        # starts inside backward.
        assert launched == buckets - 1, (launched, buckets)
        for name, want in reference.items():
            torch.testing.assert_close(grads[name], want, rtol=1e-6, atol=1e-7, msg=name)
            torch.testing.assert_close(result["one_bucket"][0][name], want, rtol=1e-6, atol=1e-7, msg=name)
            torch.testing.assert_close(result["exact"][0][name], want, rtol=1e-6, atol=1e-7, msg=name)
        assert torch.equal(grads["unused"], torch.zeros(5))
    for name in reference:
        assert torch.equal(rank0["small"][0][name], rank1["small"][0][name]), name  # replicas agree bit for bit
