"""Tests for libai.scheduler: closed forms, warmup variants, resume, config building."""

import json
import logging
import math
import warnings

import pytest
import torch

from libai.scheduler import (
    WarmupCosineAnnealingLR,
    WarmupCosineLR,
    WarmupExponentialLR,
    WarmupMultiStepLR,
    WarmupPolynomialLR,
    WarmupStepLR,
    build_lr_scheduler,
)

BASE_LRS = (0.1, 0.02)  # two param groups with different base lrs


def make_optimizer(base_lrs=BASE_LRS):
    """SGD over one tiny parameter per group, one group per base lr."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in base_lrs]
    return torch.optim.SGD(groups, lr=1.0)


def run_lrs(scheduler, optimizer, n):
    """lrs of every group for iterations 0..n-1, stepping like the trainer (opt, then sched)."""
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def warmup(base, s, factor, iters, method):
    """Independent reference for the warmup phase (None when past warmup)."""
    if s >= iters:
        return None
    if method == "constant":
        return base * factor
    return base * (factor + (1 - factor) * s / iters)


# Reference closed forms, written from LiBai/OneFlow's documented formulas.
def ref_cosine(base, s, max_iter, alpha):
    s = min(s, max_iter)
    return base * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * s / max_iter)) + alpha)


def ref_annealing(base, s, max_iter, eta_min):
    return eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * s / max_iter))


def ref_step(base, s, step_size, gamma):
    return base * gamma ** (s // step_size)


def ref_multistep(base, s, milestones, gamma):
    return base * gamma ** sum(1 for m in milestones if m <= s)


def ref_exp(base, s, gamma):
    return base * gamma**s


def ref_poly(base, s, max_iter, end, power, cycle):
    if cycle:
        decay = max_iter * max(1, math.ceil(s / max_iter))
    else:
        decay, s = max_iter, min(s, max_iter)
    return (base - end) * (1 - s / decay) ** power + end


MAX_ITER = 60
N_STEPS = 80  # past max_iter on purpose: the tail of each schedule is checked too

CASES = [
    (
        "cosine",
        lambda opt, wf, wi, wm: WarmupCosineLR(opt, MAX_ITER, wf, wi, alpha=0.01, warmup_method=wm),
        lambda b, s: ref_cosine(b, s, MAX_ITER, 0.01),
    ),
    (
        "annealing",
        lambda opt, wf, wi, wm: WarmupCosineAnnealingLR(
            opt, MAX_ITER, wf, wi, eta_min=1e-4, warmup_method=wm
        ),
        lambda b, s: ref_annealing(b, s, MAX_ITER, 1e-4),
    ),
    (
        "step",
        lambda opt, wf, wi, wm: WarmupStepLR(
            opt, MAX_ITER, 7, gamma=0.5, warmup_factor=wf, warmup_iter=wi, warmup_method=wm
        ),
        lambda b, s: ref_step(b, s, 7, 0.5),
    ),
    (
        "multistep",
        lambda opt, wf, wi, wm: WarmupMultiStepLR(
            opt, MAX_ITER, [15, 30, 45], 0.3, warmup_factor=wf, warmup_iter=wi, warmup_method=wm
        ),
        lambda b, s: ref_multistep(b, s, [15, 30, 45], 0.3),
    ),
    (
        "exponential",
        lambda opt, wf, wi, wm: WarmupExponentialLR(
            opt, MAX_ITER, gamma=0.95, warmup_factor=wf, warmup_iter=wi, warmup_method=wm
        ),
        lambda b, s: ref_exp(b, s, 0.95),
    ),
    (
        "polynomial",
        lambda opt, wf, wi, wm: WarmupPolynomialLR(
            opt, MAX_ITER, wf, wi, end_learning_rate=1e-3, power=2.0, warmup_method=wm
        ),
        lambda b, s: ref_poly(b, s, MAX_ITER, 1e-3, 2.0, False),
    ),
    (
        "polynomial_cycle",
        lambda opt, wf, wi, wm: WarmupPolynomialLR(
            opt, MAX_ITER, wf, wi, end_learning_rate=1e-3, power=1.5, cycle=True, warmup_method=wm
        ),
        lambda b, s: ref_poly(b, s, MAX_ITER, 1e-3, 1.5, True),
    ),
]
WARMUPS = [(0.001, 10, "linear"), (0.25, 10, "constant"), (0.5, 0, "linear")]


@pytest.mark.parametrize("name,make,ref", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("wf,wi,wm", WARMUPS, ids=["linear", "constant", "nowarmup"])
def test_matches_closed_form(name, make, ref, wf, wi, wm):
    opt = make_optimizer()
    sched = make(opt, wf, wi, wm)
    got = run_lrs(sched, opt, N_STEPS)
    for s, lrs in enumerate(got):
        for base, lr in zip(BASE_LRS, lrs):
            w = warmup(base, s, wf, wi, wm)
            expected = w if w is not None else ref(base, s)
            assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15), (name, s)
    assert sched.last_epoch == N_STEPS


def test_oneflow_documented_example():
    """OneFlow's WarmUpLR docstring: lr 0.001, CosineDecayLR(decay_steps=5, alpha=0.1),
    warmup_factor 0.5 over 2 iterations -> 0.0005, 0.00075, 0.000689, 0.000410."""
    opt = make_optimizer([0.001])
    sched = WarmupCosineLR(opt, max_iter=5, warmup_factor=0.5, warmup_iter=2, alpha=0.1)
    lrs = [lr[0] for lr in run_lrs(sched, opt, 7)]
    assert lrs[:4] == pytest.approx([0.0005, 0.00075, 0.000689, 0.000410], abs=1e-6)
    # at and past max_iter the cosine stays at base * alpha
    assert lrs[5] == pytest.approx(0.0001) and lrs[6] == pytest.approx(0.0001)


def test_warmup_values_exact():
    """Linear warmup reaches exactly factor 1 at warmup_iter; constant holds the factor."""
    opt = make_optimizer([1.0])
    sched = WarmupStepLR(opt, 100, step_size=1000, warmup_factor=0.2, warmup_iter=4)
    assert [lr[0] for lr in run_lrs(sched, opt, 6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    opt = make_optimizer([1.0])
    sched = WarmupStepLR(
        opt, 100, step_size=1000, warmup_factor=0.2, warmup_iter=3, warmup_method="constant"
    )
    assert [lr[0] for lr in run_lrs(sched, opt, 5)] == pytest.approx([0.2, 0.2, 0.2, 1.0, 1.0])


def test_warmup_does_not_shift_schedule():
    """After warmup the wrapped schedule is evaluated at the global step (OneFlow semantics)."""
    opt = make_optimizer([1.0])
    sched = WarmupMultiStepLR(opt, 100, milestones=[5], gamma=0.1, warmup_factor=0.5, warmup_iter=3)
    assert [lr[0] for lr in run_lrs(sched, opt, 7)] == pytest.approx(
        [0.5, 0.5 + 0.5 / 3, 0.5 + 1.0 / 3, 1.0, 1.0, 0.1, 0.1]
    )


def test_milestone_ratios_become_iterations():
    opt = make_optimizer([1.0])
    sched = WarmupMultiStepLR(opt, max_iter=200, milestones=[0.5, 0.75], gamma=0.1, warmup_iter=0)
    assert sched.milestones == [100, 150]
    lrs = [lr[0] for lr in run_lrs(sched, opt, 160)]
    assert lrs[99] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.1)
    assert lrs[149] == pytest.approx(0.1) and lrs[150] == pytest.approx(0.01)
    # int(ratio * max_iter), as LiBai scales them
    assert WarmupMultiStepLR(make_optimizer(), 10, [0.67]).milestones == [6]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(milestones=[0.5, 100]), "mix ratios"),
        (dict(milestones=[30, 10]), "increasing"),
        (dict(milestones=[1.5]), "ratio"),
        (dict(milestones=[-0.1]), "milestone"),
    ],
)
def test_bad_milestones(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WarmupMultiStepLR(make_optimizer(), 100, **kwargs)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda o: WarmupCosineLR(o, 100, 0.1, 5, warmup_method="exp"), "warmup_method"),
        (lambda o: WarmupCosineLR(o, 0, 0.1, 0), "max_iter"),
        (lambda o: WarmupCosineLR(o, 100, 0.1, -1), "warmup_iter"),
        (lambda o: WarmupCosineLR(o, 100, 0.1, 2.5), "warmup_iter"),
        (lambda o: WarmupCosineLR(o, 100, 0.1, 5, alpha=2.0), "alpha"),
        (lambda o: WarmupStepLR(o, 100, step_size=0), "step_size"),
        (lambda o: WarmupPolynomialLR(o, 0, 0.1, 0), "max_iter"),
    ],
)
def test_bad_arguments_raise_clear_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build(make_optimizer())


def test_float_iteration_counts_accepted():
    """Configs may compute iterations as floats (e.g. 100.0); whole floats are accepted."""
    sched = WarmupCosineLR(make_optimizer(), 100.0, 0.1, 10.0)
    assert sched.max_iter == 100 and sched.warmup_iter == 10


def test_warmup_longer_than_run_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="libai.scheduler.lr_scheduler"):
        WarmupCosineLR(make_optimizer(), max_iter=5, warmup_factor=0.1, warmup_iter=10)
    assert "larger than max_iter" in caplog.text


def test_no_torch_step_order_warnings():
    opt = make_optimizer()
    sched = WarmupCosineLR(opt, 20, 0.1, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_lrs(sched, opt, 20)


@pytest.mark.parametrize("name,make,ref", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("optimizer_first", [True, False], ids=["opt_then_sched", "sched_then_opt"])
def test_resume_mid_schedule_gives_identical_lrs(name, make, ref, optimizer_first):
    """Stop at iteration 23 (inside/after warmup), save, rebuild, load, continue."""
    opt_a = make_optimizer()
    sched_a = make(opt_a, 0.01, 10, "linear")
    full = run_lrs(sched_a, opt_a, N_STEPS)

    opt_b = make_optimizer()
    sched_b = make(opt_b, 0.01, 10, "linear")
    first = run_lrs(sched_b, opt_b, 23)
    # the scheduler state must survive a JSON round trip (checkpoint 'extra' data)
    sched_state = json.loads(json.dumps(sched_b.state_dict()))
    opt_state = opt_b.state_dict()

    opt_c = make_optimizer()
    sched_c = make(opt_c, 0.01, 10, "linear")  # a fresh build resets lrs to iteration 0
    if optimizer_first:
        opt_c.load_state_dict(opt_state)
        sched_c.load_state_dict(sched_state)
    else:
        sched_c.load_state_dict(sched_state)
        opt_c.load_state_dict(opt_state)
    rest = run_lrs(sched_c, opt_c, N_STEPS - 23)
    assert first + rest == full
    assert sched_c.last_epoch == N_STEPS


def test_resume_without_optimizer_state_sets_lr():
    """Loading only the scheduler state writes the right lr into the optimizer at once."""
    opt = make_optimizer()
    sched = WarmupCosineLR(opt, 50, 0.001, 5)
    run_lrs(sched, opt, 17)
    state = sched.state_dict()
    opt2 = make_optimizer()
    sched2 = WarmupCosineLR(opt2, 50, 0.001, 5)
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_resume_with_longer_run_uses_new_max_iter():
    """Hyperparameters come from the config, progress from the checkpoint."""
    opt = make_optimizer([1.0])
    sched = WarmupCosineLR(opt, 50, 0.001, 0)
    run_lrs(sched, opt, 20)
    opt2 = make_optimizer([1.0])
    sched2 = WarmupCosineLR(opt2, 100, 0.001, 0)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(ref_cosine(1.0, 20, 100, 0.0))


def test_load_state_dict_errors():
    sched = WarmupCosineLR(make_optimizer(), 50, 0.001, 5)
    with pytest.raises(KeyError, match="last_epoch"):
        sched.load_state_dict({"foo": 1})
    with pytest.raises(ValueError, match="param groups"):
        sched.load_state_dict({"last_epoch": 3, "base_lrs": [0.1]})


def test_build_lr_scheduler_from_lazy_config():
    from libai.config import LazyCall

    opt = make_optimizer()
    cfg = LazyCall(WarmupCosineLR)(warmup_factor=0.001, alpha=0.01, warmup_method="linear")
    cfg.max_iter = 40  # the trainer fills these two
    cfg.warmup_iter = 4
    sched = build_lr_scheduler(cfg, opt)
    assert isinstance(sched, WarmupCosineLR)
    assert sched.optimizer is opt
    lrs = run_lrs(sched, opt, 41)
    assert lrs[2][0] == pytest.approx(0.1 * (0.001 + 0.999 * 2 / 4))
    assert lrs[40][1] == pytest.approx(0.02 * 0.01)


def test_build_lr_scheduler_plain_dictconfig():
    """A hand-made DictConfig without allow_objects also works."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "_target_": "libai.scheduler.WarmupMultiStepLR",
            "max_iter": 10,
            "milestones": [0.5],
            "warmup_iter": 0,
        }
    )
    sched = build_lr_scheduler(cfg, make_optimizer([1.0]))
    assert sched.milestones == [5]
    with pytest.raises(ValueError, match="_target_"):
        build_lr_scheduler(OmegaConf.create({"max_iter": 3}), make_optimizer())


def test_build_default_scheduler_from_packaged_train_config():
    """configs/common/train.py's scheduler, with the two fields the trainer fills."""
    from libai.config import get_config

    cfg = get_config("common/train.py").train.scheduler
    cfg.max_iter, cfg.warmup_iter = 100, 10
    opt = make_optimizer([1.0])
    sched = build_lr_scheduler(cfg, opt)
    lrs = [lr[0] for lr in run_lrs(sched, opt, 101)]
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[5] == pytest.approx(0.001 + 0.999 * 0.5)
    assert lrs[50] == pytest.approx(ref_cosine(1.0, 50, 100, 0.01))
    assert lrs[100] == pytest.approx(0.01)


def test_warmup_is_one_shared_object():
    """`Warmup` holds the warm-up of all six schedulers; its numbers are the formula's."""
    from libai.scheduler import Warmup

    linear = Warmup(0.2, 4)
    assert [linear.multiplier(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert linear.covers(3) and not linear.covers(4)
    assert Warmup(0.25, 3, "constant").multiplier(2) == 0.25
    assert not Warmup(0.5, 0).covers(0)  # iters 0: no warm-up
    assert Warmup(0.5, 10.0).iters == 10 and isinstance(Warmup(0.5, 10.0).iters, int)
    for args, match in [((0.1, -1), "warmup_iter"), ((-0.1, 2), "warmup_factor"), ((0.1, 2, "exp"), "warmup_method")]:
        with pytest.raises(ValueError, match=match):
            Warmup(*args)
    for name, make, _ in CASES:
        sched = make(make_optimizer(), 0.25, 10, "constant")
        assert sched.warmup == Warmup(0.25, 10, "constant"), name
        assert (sched.warmup_factor, sched.warmup_iter, sched.warmup_method) == (0.25, 10, "constant")
