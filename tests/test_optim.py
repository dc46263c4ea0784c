"""Tests for libai.optim: param-group rules, merging, overrides and build_optimizer."""

import pytest
import torch
from torch import nn

from libai.optim import (
    build_optimizer,
    get_default_optimizer_params,
    is_norm_module,
    reduce_param_groups,
)


class RMSNorm(nn.Module):
    """A project-style norm layer that is not a torch class (matched by its name)."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class TinyNet(nn.Module):
    """Every kind of parameter the grouping rules care about, with tiny sizes."""

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 3))
        self.embed = nn.Embedding(5, 3)
        self.fc = nn.Linear(3, 4)
        self.ln = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.rms = RMSNorm(4)
        self.head = nn.Linear(4, 5)
        self.tied = nn.Linear(4, 4, bias=False)
        self.tied2 = nn.Linear(4, 4, bias=False)
        self.tied2.weight = self.tied.weight  # one parameter owned by two modules
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def names_by_group(model, groups):
    """For each group, the sorted parameter names it holds."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [sorted(name_of[id(p)] for p in g["params"]) for g in groups]


def hyper_of(model, groups):
    """{param name: hyperparameters of its group}."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in groups:
        hyper = {k: v for k, v in g.items() if k != "params"}
        for p in g["params"]:
            out[name_of[id(p)]] = hyper
    return out


TRAINABLE = {
    "pos_embed", "embed.weight", "fc.weight", "fc.bias", "ln.weight", "ln.bias",
    "bn.weight", "bn.bias", "rms.weight", "head.weight", "head.bias", "tied.weight",
}  # fmt: skip
# parameters of norm layers and biases: weight_decay_norm / weight_decay_bias apply
NO_DECAY = {"fc.bias", "ln.weight", "ln.bias", "bn.weight", "bn.bias", "rms.weight", "head.bias"}


def test_each_trainable_param_exactly_once():
    model = TinyNet()
    groups = get_default_optimizer_params(model, weight_decay_norm=0.0, weight_decay_bias=0.0)
    names = [n for g in names_by_group(model, groups) for n in g]
    assert sorted(names) == sorted(TRAINABLE)  # frozen params left out, tied weight once


def test_no_weight_decay_on_bias_and_norm():
    model = TinyNet()
    groups = get_default_optimizer_params(
        model,
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
        clip_grad_max_norm=1.0,
        clip_grad_norm_type=2.0,
    )
    hyper = hyper_of(model, groups)
    for name in TRAINABLE:
        if name in NO_DECAY:
            assert hyper[name]["weight_decay"] == 0.0, name
        else:
            # no entry: the optimizer's own weight_decay applies
            assert "weight_decay" not in hyper[name], name
        assert hyper[name]["clip_grad_max_norm"] == 1.0
        assert hyper[name]["clip_grad_norm_type"] == 2.0
    # equal hyperparameters are merged: one group with decay, one without
    assert len(groups) == 2
    assert sorted(len(g["params"]) for g in groups) == [5, 7]


def test_norm_module_detection():
    assert is_norm_module(nn.LayerNorm(2)) and is_norm_module(nn.GroupNorm(1, 2))
    assert is_norm_module(nn.BatchNorm2d(2)) and is_norm_module(nn.InstanceNorm1d(2, affine=True))
    assert is_norm_module(RMSNorm(2))

    class MyLayerNorm(nn.LayerNorm):
        pass

    class Normalizer(nn.Module):
        pass

    assert is_norm_module(MyLayerNorm(2))  # base class counts
    assert not is_norm_module(nn.Linear(2, 2)) and not is_norm_module(Normalizer())


def test_base_lr_and_weight_decay_defaults():
    model = TinyNet()
    groups = get_default_optimizer_params(
        model, base_lr=0.5, weight_decay=0.1, weight_decay_norm=0.0
    )
    hyper = hyper_of(model, groups)
    assert hyper["fc.weight"] == {"lr": 0.5, "weight_decay": 0.1}
    assert hyper["fc.bias"] == {"lr": 0.5, "weight_decay": 0.1}  # no weight_decay_bias given
    assert hyper["ln.bias"] == {"lr": 0.5, "weight_decay": 0.0}  # a norm param, not a "bias" rule
    assert len(groups) == 2


def test_overrides_by_short_and_full_name():
    model = TinyNet()
    groups = get_default_optimizer_params(
        model,
        weight_decay_bias=0.0,
        overrides={
            "pos_embed": {"weight_decay": 0.0},
            "head.weight": {"lr": 1e-3},
            "weight": {"lr": 2e-3},
        },
    )
    hyper = hyper_of(model, groups)
    assert hyper["pos_embed"] == {"weight_decay": 0.0}
    assert hyper["fc.weight"] == {"lr": 2e-3}  # short name "weight"
    assert hyper["head.weight"] == {"lr": 1e-3}  # full name wins over the short one
    assert hyper["fc.bias"] == {"weight_decay": 0.0}
    # pos_embed and the biases share hyperparameters -> the same group
    assert len(groups) == 3


def test_overrides_from_omegaconf_and_list_values_merge():
    from omegaconf import OmegaConf

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    overrides = OmegaConf.create({"bias": {"betas": [0.9, 0.95]}})
    groups = get_default_optimizer_params(model, overrides=overrides)
    assert len(groups) == 2
    bias_group = next(g for g in groups if "betas" in g)
    assert len(bias_group["params"]) == 2 and list(bias_group["betas"]) == [0.9, 0.95]
    assert "bias" in overrides and len(overrides) == 1  # the caller's dict is not modified


def test_bias_conflict_raises():
    with pytest.raises(ValueError, match="bias"):
        get_default_optimizer_params(
            TinyNet(), weight_decay_bias=0.0, overrides={"bias": {"lr": 1.0}}
        )


def test_unknown_override_warns_with_suggestion():
    with pytest.warns(UserWarning, match="pos_embd.*did you mean 'pos_embed'"):
        get_default_optimizer_params(TinyNet(), overrides={"pos_embd": {"weight_decay": 0.0}})


def test_clip_norm_type_defaults_to_two_and_bad_values_raise():
    groups = get_default_optimizer_params(nn.Linear(2, 2), clip_grad_max_norm=0.5)
    assert groups[0]["clip_grad_max_norm"] == 0.5 and groups[0]["clip_grad_norm_type"] == 2.0
    groups = get_default_optimizer_params(nn.Linear(2, 2))
    assert "clip_grad_max_norm" not in groups[0]
    with pytest.raises(ValueError, match="clip_grad_max_norm"):
        get_default_optimizer_params(nn.Linear(2, 2), clip_grad_max_norm=0.0)
    with pytest.raises(ValueError, match="needs the model"):
        get_default_optimizer_params()


def test_reduce_param_groups_later_entries_win():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    groups = reduce_param_groups(
        [{"params": [a, b], "lr": 1.0}, {"params": [b], "lr": 2.0}, {"params": [a], "lr": 2.0}]
    )
    assert len(groups) == 1 and groups[0]["lr"] == 2.0 and len(groups[0]["params"]) == 2


def test_torch_optimizer_accepts_groups_and_decays_only_where_asked():
    """AdamW with zero grads changes a param only by decoupled weight decay: p *= 1 - lr*wd."""
    torch.manual_seed(0)
    model = TinyNet()
    groups = get_default_optimizer_params(
        model,
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
        clip_grad_max_norm=1.0,
        clip_grad_norm_type=2.0,
    )
    opt = torch.optim.AdamW(groups, lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    for name, p in model.named_parameters():
        if name.startswith("frozen"):
            torch.testing.assert_close(p, before[name])
        elif name in NO_DECAY:
            torch.testing.assert_close(p, before[name])
        else:
            torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5))
    # the clip settings stay in the groups and survive the optimizer's state_dict
    state = opt.state_dict()
    assert all(g["clip_grad_max_norm"] == 1.0 for g in state["param_groups"])


def lazy_optim_cfg():
    """The LiBai default optim config (configs/common/optim.py), built with LazyCall."""
    from libai.config import LazyCall

    return LazyCall(torch.optim.AdamW)(
        params=LazyCall(get_default_optimizer_params)(
            clip_grad_max_norm=1.0,
            clip_grad_norm_type=2.0,
            weight_decay_norm=0.0,
            weight_decay_bias=0.0,
        ),
        lr=1e-4,
        weight_decay=0.01,
        betas=(0.9, 0.999),
        eps=1e-8,
    )


def test_build_optimizer_from_lazy_config():
    model = TinyNet()
    cfg = lazy_optim_cfg()
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert cfg.params.model is model  # LiBai semantics: the config node holds the model
    assert len(opt.param_groups) == 2
    decay_group = next(g for g in opt.param_groups if g["weight_decay"] == 0.01)
    no_decay_group = next(g for g in opt.param_groups if g["weight_decay"] == 0.0)
    assert len(decay_group["params"]) == 5 and len(no_decay_group["params"]) == 7
    for g in opt.param_groups:
        assert g["lr"] == 1e-4 and tuple(g["betas"]) == (0.9, 0.999) and g["eps"] == 1e-8
        assert g["clip_grad_max_norm"] == 1.0 and g["clip_grad_norm_type"] == 2.0
    # a real training step runs
    model.train()
    loss = model.head(model.rms.weight * model.fc(model.embed(torch.tensor([1, 2])))).sum()
    loss.backward()
    opt.step()


def test_build_optimizer_plain_dictconfig_and_no_params():
    """A hand-made DictConfig (no allow_objects) and a config without `params` both work."""
    from omegaconf import OmegaConf

    model = nn.Linear(3, 2)
    cfg = OmegaConf.create(
        {
            "_target_": "torch.optim.SGD",
            "params": {
                "_target_": "libai.optim.get_default_optimizer_params",
                "weight_decay_bias": 0.0,
            },
            "lr": 0.1,
            "weight_decay": 0.2,
        }
    )
    opt = build_optimizer(cfg, model)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.2]

    cfg = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1})
    opt = build_optimizer(cfg, model)
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 2


def test_build_optimizer_needs_lazy_config():
    with pytest.raises(ValueError, match="_target_"):
        build_optimizer({"lr": 0.1}, nn.Linear(2, 2))


def test_build_optimizer_from_packaged_default_config():
    """configs/common/optim.py (what LiBai users import) builds the expected AdamW."""
    from libai.config import get_config

    model = TinyNet()
    opt = build_optimizer(get_config("common/optim.py").optim, model)
    assert isinstance(opt, torch.optim.AdamW)
    hyper = {(g["weight_decay"], len(g["params"])) for g in opt.param_groups}
    assert hyper == {(0.01, 5), (0.0, 7)}
    assert all(g["clip_grad_max_norm"] == 1.0 for g in opt.param_groups)


def test_decay_and_no_decay_groups_follow_swin_v2_rule():
    from libai.optim import decay_and_no_decay_groups

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 3)
            self.norm = nn.LayerNorm(3)
            self.logit_scale = nn.Parameter(torch.ones(2, 1, 1))
            self.cpb_mlp = nn.Linear(2, 2)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, 3))

    model = Block()
    decay, no_decay = decay_and_no_decay_groups(
        model, skip_list=("absolute_pos_embed"), skip_keywords=("cpb_mlp", "logit_scale")
    )
    name_of = {id(p): n for n, p in model.named_parameters()}
    assert [name_of[id(p)] for p in decay["params"]] == ["proj.weight"]
    assert sorted(name_of[id(p)] for p in no_decay["params"]) == sorted(
        ["proj.bias", "norm.weight", "norm.bias", "logit_scale", "cpb_mlp.weight", "cpb_mlp.bias", "absolute_pos_embed"]
    )
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    with pytest.raises(ValueError, match="needs the model"):
        decay_and_no_decay_groups()
