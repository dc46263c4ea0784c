#!/usr/bin/env python
"""GPT (or Llama) training tokens/s: LiBai's DefaultTrainer vs a hand-written loop, plus MFU.

`--model llama` compares `LlamaForCausalLM` (configs/common/models/llama.py at the shapes
below, `--kv-heads` key/value heads) with `PlainLlama`, an independent Llama written below
(nn.Embedding, separate bias-free q/k/v/o with rotary positions and grouped-query SDPA,
nn.RMSNorm, SwiGLU, an untied LM head); everything else is as for GPT.

What is compared, per mode ("eager", and "compiled" = `graph.enabled=True`, which wraps the
model in `GraphBase`, i.e. `torch.compile(model)`; the plain loop calls `torch.compile`):

* trainer: `GPTForPreTraining` built from LiBai's GPT config (configs/common/models/gpt.py
  with the shapes below, dropouts 0) and trained by `DefaultTrainer` built in this process
  from a LazyConfig (one process, micro batch = global batch, default hooks: timer, LR
  scheduler, checkpointer, console / metrics.json / TensorBoard writers every `log_period`),
  fed by LiBai's NLP train loader over `SyntheticTokens` (tests/helpers/tiny_gpt.py).
* plain: `PlainGPT`, an independent GPT written below in nanoGPT's style (nn.Embedding,
  nn.Linear, causal `F.scaled_dot_product_attention`, pre-LN blocks, GELU MLP, LM head tied
  to the token embeddings, `F.cross_entropy`) with the same shapes and parameter count,
  trained by a plain loop: random rows of the same token tensor, AdamW with the trainer's
  lr / betas / eps / weight decay (no decay on biases and LayerNorms, as LiBai's groups),
  gradient clipping at the trainer's max norm, a warm-up + cosine LR set by hand each step,
  and `loss.item()` every step (the trainer reads its loss every step too).

The trainer is driven as in benchmarks/trainer_overhead.py (its `before_step`, `run_step`,
`after_step` inside its `EventStorage`, rounds alternating with the hand loop); that
script's helpers are specific to its MNIST config, so none is imported here.

Both run the same number of steps on the same batch (micro batch x sequence). After warm-up
steps (which include compilation), rounds alternate trainer / plain / plain / trainer ...
so that machine noise hits both alike; each round times `--steps` steps (device synchronised
at the end). Tokens/s = batch * seq * steps / seconds; per mode the script prints the median
tokens/s of each side and the median over rounds of the paired ratio trainer/plain, with
PASS when it is >= 1.0 in eager mode and >= 0.98 compiled (the speed issue's targets; exit
status 0 either way: benchmarks are informative). The same
ratio per CPU second of this process (`time.process_time`) follows: on a CPU shared with
other jobs it moves much less than the wall-clock one (on a GPU only the wall clock counts).

MFU (model FLOPs utilisation) = achieved model FLOP/s / measured matmul peak, where

    FLOPs per token = 6 * N + 12 * L * H * S
    N = parameters that take part in matmuls: all parameters but the position embeddings
        (the token-embedding matrix counts once, as the tied LM head's matmul)

i.e. forward 2 FLOPs per parameter per token and backward 4 (6N), plus the attention
scores and weighted sum (QK^T and AV, 2 * 2 * S * H per layer forward, x3 with backward,
counted without the causal saving), as in the PaLM paper and nanoGPT's `estimate_mfu`. The
peak is measured here: the best of several float32 `torch.mm` of two n x n matrices on the
same device and thread count, 2 * n^3 FLOPs each.

    python benchmarks/gpt_throughput.py [--model gpt|llama --layers 4 --hidden 256 --seq 128 --batch 8
        --vocab 8192 --steps 6 --rounds 5 --warmup 3 --modes eager,compiled --device cpu]

Threads: `--threads` (default: OMP_NUM_THREADS, else 1, as benchmarks/trainer_overhead.py).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from torch import nn  # noqa: E402

from libai.config import LazyCall, get_config, merge_update  # noqa: E402
from libai.data.build import build_nlp_train_loader  # noqa: E402
from libai.engine import DefaultTrainer, default_setup  # noqa: E402
from libai.utils import distributed as dist  # noqa: E402
from libai.utils.events import EventStorage  # noqa: E402
from tests.helpers.tiny_gpt import SyntheticTokens  # noqa: E402

# The speed issue's targets, per mode.
REQUIRED_RATIO = {"eager": 1.0, "compiled": 0.98}
DATASET_SIZE = 1024


@dataclass(frozen=True)
class Shape:
    """The model and batch shapes shared by both sides."""

    layers: int
    hidden: int
    heads: int
    seq: int
    vocab: int
    batch: int
    model: str = "gpt"  # or "llama"
    kv_heads: int = 0  # llama: key/value heads (grouped-query attention)

    @property
    def ffn(self) -> int:
        # Llama's SwiGLU width: 8/3 x hidden, rounded up to a multiple of 64.
        return 4 * self.hidden if self.model == "gpt" else 64 * math.ceil(8 * self.hidden / 3 / 64)

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq


# --------------------------------------------------------------------------------------
# The plain side: a nanoGPT-style GPT and its hand-written loop
# --------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Fused QKV projection, causal SDPA over `heads` heads, output projection."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        split = [t.view(b, s, self.heads, h // self.heads).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1)]
        y = F.scaled_dot_product_attention(*split, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, s, h))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads)
        self.ln_mlp = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, ffn)
        self.down = nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.down(F.gelu(self.up(self.ln_mlp(x))))


class PlainGPT(nn.Module):
    """Token + position embeddings, pre-LN blocks, final LayerNorm, LM head tied to the
    token embeddings; `forward(idx, targets)` returns the mean cross entropy."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.tokens = nn.Embedding(shape.vocab, shape.hidden)
        self.positions = nn.Embedding(shape.seq, shape.hidden)
        self.blocks = nn.ModuleList(Block(shape.hidden, shape.heads, shape.ffn) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(shape.hidden)
        self._init_weights(shape.layers)

    def _init_weights(self, layers: int) -> None:
        """GPT-2's: normal(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2L)."""
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(param)
            elif param.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("attn.out.weight", "down.weight")) else 0.02
                nn.init.normal_(param, std=std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tokens(idx) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.tokens.weight)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class PlainLlamaAttention(nn.Module):
    """Separate q/k/v projections, rotary positions (rotate-half pairs), grouped-query
    causal SDPA, output projection; no biases."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, seq: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head = heads, kv_heads, hidden // heads
        self.q = nn.Linear(hidden, hidden, bias=False)
        self.k = nn.Linear(hidden, kv_heads * self.head, bias=False)
        self.v = nn.Linear(hidden, kv_heads * self.head, bias=False)
        self.o = nn.Linear(hidden, hidden, bias=False)
        inv_freq = 1.0 / theta ** (torch.arange(0, self.head, 2).float() / self.head)
        angles = torch.outer(torch.arange(seq).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return x * self.cos + torch.cat((-second, first), dim=-1) * self.sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q = self.q(x).view(b, s, self.heads, self.head).transpose(1, 2)
        k = self.k(x).view(b, s, self.kv_heads, self.head).transpose(1, 2)
        v = self.v(x).view(b, s, self.kv_heads, self.head).transpose(1, 2)
        y = F.scaled_dot_product_attention(self.rotate(q), self.rotate(k), v, is_causal=True, enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(b, s, h))


class PlainLlamaBlock(nn.Module):
    """x + attn(rmsnorm(x)), then x + down(silu(gate(rmsnorm(x))) * up(rmsnorm(x)))."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.norm_attn = nn.RMSNorm(shape.hidden, eps=1e-5)
        self.attn = PlainLlamaAttention(shape.hidden, shape.heads, shape.kv_heads, shape.seq)
        self.norm_mlp = nn.RMSNorm(shape.hidden, eps=1e-5)
        self.gate = nn.Linear(shape.hidden, shape.ffn, bias=False)
        self.up = nn.Linear(shape.hidden, shape.ffn, bias=False)
        self.down = nn.Linear(shape.ffn, shape.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x))
        y = self.norm_mlp(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class PlainLlama(nn.Module):
    """Token embeddings, Llama blocks, final RMSNorm, an untied LM head;
    `forward(idx, targets)` returns the mean cross entropy."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.tokens = nn.Embedding(shape.vocab, shape.hidden)
        self.blocks = nn.ModuleList(PlainLlamaBlock(shape) for _ in range(shape.layers))
        self.norm = nn.RMSNorm(shape.hidden, eps=1e-5)
        self.head = nn.Linear(shape.hidden, shape.vocab, bias=False)
        for param in self.parameters():
            if param.dim() >= 2:
                nn.init.normal_(param, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.tokens(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def plain_optimizer(model: nn.Module, optim_cfg: DictConfig) -> torch.optim.AdamW:
    """AdamW with the trainer's hyperparameters; matrices decay, biases and norms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": float(optim_cfg.weight_decay)},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=float(optim_cfg.lr), betas=tuple(optim_cfg.betas), eps=float(optim_cfg.eps))


def cosine_lr(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.01) -> float:
    """Linear warm-up to `base_lr`, then cosine decay to `min_ratio * base_lr`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class PlainRun:
    """Everything the hand-written loop carries from one round to the next."""

    model: nn.Module  # the module the loop calls (compiled or not)
    params: list
    optimizer: torch.optim.Optimizer
    tokens: torch.Tensor  # [rows, seq + 1] on the device
    batch: int
    base_lr: float
    max_norm: float
    warmup: int
    total: int
    step: int = 0
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch` random rows: inputs and next-token targets."""
        rows = self.tokens[torch.randint(len(self.tokens), (self.batch,), generator=self.generator).to(self.tokens.device)]
        return rows[:, :-1], rows[:, 1:]


def plain_steps(run: PlainRun, steps: int) -> None:
    """`steps` optimizer steps of the hand-written loop."""
    for _ in range(steps):
        idx, targets = run.next_batch()
        lr = cosine_lr(run.step, run.base_lr, run.warmup, run.total)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        loss = run.model(idx, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, run.max_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        loss.item()
        run.step += 1


def build_plain(shape: Shape, trainer: DefaultTrainer, compiled: bool) -> tuple[PlainRun, int]:
    """The plain side with the trainer's hyperparameters and tokens; returns it and its
    parameter count."""
    device = dist.get_device()
    model = (PlainGPT if shape.model == "gpt" else PlainLlama)(shape).to(device)
    cfg = trainer.cfg
    dataset = trainer.train_loader.dataset
    tokens = getattr(dataset, "tokens", None)
    if tokens is None:  # a ConcatDataset of one SyntheticTokens
        tokens = dataset.datasets[0].tokens
    groups = trainer.optimizer.param_groups
    run = PlainRun(
        model=torch.compile(model) if compiled else model,
        params=list(model.parameters()),
        optimizer=plain_optimizer(model, cfg.optim),
        tokens=tokens.to(device),
        batch=shape.batch,
        base_lr=float(cfg.optim.lr),
        max_norm=float(groups[0].get("clip_grad_max_norm") or float("inf")),
        warmup=int(cfg.train.warmup_iter),
        total=int(cfg.train.train_iter),
    )
    return run, sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------
# The trainer side: DefaultTrainer from a LazyConfig built here
# --------------------------------------------------------------------------------------


def build_config(shape: Shape, output_dir: str, total_iters: int, compiled: bool, device: str) -> DictConfig:
    """LiBai's train / optim / graph defaults, its GPT (or Llama) config at `shape`, synthetic tokens."""
    cfg = OmegaConf.create()
    cfg.train = get_config("common/train.py").train
    cfg.optim = get_config("common/optim.py").optim
    cfg.graph = get_config("common/models/graph.py").graph
    sizes = dict(hidden_layers=shape.layers, vocab_size=shape.vocab, hidden_size=shape.hidden,
                 ffn_hidden_size=shape.ffn, num_attention_heads=shape.heads)
    if shape.model == "gpt":
        cfg.model = get_config("common/models/gpt.py").pretrain_model
        cfg.model.cfg.update(sizes, max_seq_length=shape.seq, embedding_dropout_prob=0.0,
                             attention_dropout_prob=0.0, output_dropout_prob=0.0)
    else:
        cfg.model = get_config("common/models/llama.py").model
        cfg.model.cfg.update(sizes, num_key_value_heads=shape.kv_heads, max_position_embeddings=shape.seq)
    cfg.dataloader = OmegaConf.create()
    cfg.dataloader.train = LazyCall(build_nlp_train_loader)(
        dataset=[LazyCall(SyntheticTokens)(size=DATASET_SIZE, seq_length=shape.seq, vocab_size=shape.vocab)],
        num_workers=0,  # in-memory data: worker processes would only compete for the cores
    )
    # merge_update: evaluation= and checkpointer= change one key each and keep the rest.
    merge_update(
        cfg.train,
        dict(
            output_dir=output_dir,
            train_micro_batch_size=shape.batch,
            global_batch_size=shape.batch,
            num_accumulation_steps=None,
            train_epoch=0,
            train_iter=total_iters,
            warmup_ratio=0.1,
            device=device,
            evaluation=dict(enabled=False),
            checkpointer=dict(period=total_iters * 10),
        )
    )
    cfg.graph.enabled = compiled
    return cfg


def build_trainer(cfg: DictConfig) -> DefaultTrainer:
    """`default_setup` + `DefaultTrainer(cfg)`, as tools/train_net.py does."""
    default_setup(cfg, argparse.Namespace(resume=False, fast_dev_run=False, config_file=""))
    return DefaultTrainer(cfg)


@dataclass
class TrainerRun:
    """The trainer and the iteration it runs next."""

    trainer: DefaultTrainer
    next_iter: int = 0

    def steps(self, count: int) -> None:
        """`count` of the trainer's own iterations with all its hooks (inside its storage)."""
        trainer = self.trainer
        for trainer.iter in range(self.next_iter, self.next_iter + count):
            trainer.before_step()
            trainer.run_step()
            trainer.after_step()
        self.next_iter += count


def trainer_is_compiled(trainer: DefaultTrainer) -> bool:
    """Whether the trainer's step still calls the compiled model (GraphBase may fall back)."""
    return bool(getattr(trainer._trainer.model, "_use_compiled", False))


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """How long something took: wall-clock and this process's CPU seconds."""

    wall: float
    cpu: float


def timed(fn: Callable[[], None], device: torch.device) -> Timing:
    """The time `fn()` takes, device work included."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def matmul_peak_gflops(device: torch.device, n: int, repeats: int = 5) -> float:
    """Best float32 `torch.mm` rate of two n x n matrices on `device`, in GFLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b), device).wall for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def flops_per_token(shape: Shape, matmul_params: int) -> float:
    """6 N + 12 L H S (see the module docstring)."""
    return 6 * matmul_params + 12 * shape.layers * shape.hidden * shape.seq


@dataclass
class ModeResult:
    """The timings of each side's rounds, in one mode."""

    mode: str
    params: int  # parameters of each model (checked equal)
    tokens_per_round: int
    rounds: dict[str, list[Timing]] = field(default_factory=lambda: {"trainer": [], "plain": []})
    warmup: dict[str, Timing] = field(default_factory=dict)  # untimed steps, compilation included
    compiled_ok: bool = True

    def rates(self, side: str, clock: str = "wall") -> list[float]:
        """Tokens/s of each round of `side`, by the wall clock or per CPU second."""
        return [self.tokens_per_round / getattr(t, clock) for t in self.rounds[side]]

    def median_rate(self, side: str, clock: str = "wall") -> float:
        return statistics.median(self.rates(side, clock))

    def ratios(self, clock: str = "wall") -> list[float]:
        """trainer / plain tokens/s of each round (the two sides of a round ran back to back)."""
        return [t / p for t, p in zip(self.rates("trainer", clock), self.rates("plain", clock))]

    def ratio(self, clock: str = "wall") -> float:
        """Median over rounds of the paired ratio trainer / plain."""
        return statistics.median(self.ratios(clock))


def alternate(rounds: int, sides: dict[str, Callable[[], Timing]]) -> Iterator[tuple[str, Timing]]:
    """Run the two sides in rounds, swapping their order every round (A B, B A, A B ...)."""
    names = list(sides)
    for round_idx in range(rounds):
        for name in names if round_idx % 2 == 0 else names[::-1]:
            yield name, sides[name]()


def measure_mode(shape: Shape, args: argparse.Namespace, mode: str, output_dir: str) -> ModeResult:
    """Warm up, then alternate timed rounds of the trainer and the plain loop in `mode`."""
    compiled = mode == "compiled"
    total_iters = args.warmup + args.rounds * args.steps + 1
    trainer = build_trainer(build_config(shape, output_dir, total_iters, compiled, args.device))
    plain, plain_params = build_plain(shape, trainer, compiled)
    libai_params = sum(p.numel() for p in trainer.model.parameters())
    if libai_params != plain_params:
        raise SystemExit(f"the models differ: LiBai has {libai_params} parameters, the plain {shape.model} {plain_params}")
    device = dist.get_device()
    result = ModeResult(mode, libai_params, shape.tokens_per_step * args.steps)
    with EventStorage(0) as trainer.storage:
        trainer.before_train()
        # Warm-up (compilation, allocator, first-call costs) is not timed.
        run = TrainerRun(trainer)
        result.warmup["trainer"] = timed(lambda: run.steps(args.warmup), device)
        result.warmup["plain"] = timed(lambda: plain_steps(plain, args.warmup), device)
        sides = {
            "trainer": lambda: timed(lambda: run.steps(args.steps), device),
            "plain": lambda: timed(lambda: plain_steps(plain, args.steps), device),
        }
        for name, timing in alternate(args.rounds, sides):
            result.rounds[name].append(timing)
        trainer.after_train()
    result.compiled_ok = trainer_is_compiled(trainer) if compiled else True
    return result


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def report(shape: Shape, args: argparse.Namespace, results: list[ModeResult], peak: float) -> None:
    """Print tokens/s, ratio, PASS/FAIL and MFU per mode (wall clock), then the same ratios
    per CPU second and each round's ratios."""
    params = results[0].params
    # Matmul parameters: all but the position embeddings (GPT; its tied token embeddings
    # count once, as the LM head's matmul) or but the token embeddings (Llama, whose LM
    # head is its own matrix); see the module docstring.
    matmul_params = params - (shape.seq if shape.model == "gpt" else shape.vocab) * shape.hidden
    fpt = flops_per_token(shape, matmul_params)
    heads = f"{shape.heads} heads" + (f" ({shape.kv_heads} key/value)" if shape.model == "llama" else "")
    print()
    print(
        f"{shape.model.upper()}: {shape.layers} layers, hidden {shape.hidden}, {heads}, ffn {shape.ffn}, "
        f"seq {shape.seq}, vocab {shape.vocab}, micro batch {shape.batch} ({shape.tokens_per_step} tokens/step), "
        f"{params / 1e6:.3f}M parameters in both models"
    )
    print(
        f"{args.rounds} rounds x {args.steps} steps per side and mode after {args.warmup} warm-up steps, "
        f"device {dist.get_device()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"FLOPs/token = 6 x {matmul_params / 1e6:.3f}M + 12 x {shape.layers} x {shape.hidden} x {shape.seq} "
        f"= {fpt / 1e6:.1f} MFLOP"
    )
    print(f"matmul peak (float32 torch.mm, n={args.peak_n}, best of 5 before and 5 after): {peak:.1f} GFLOP/s")
    print()
    print(f"{'mode':<9} {'plain tok/s':>12} {'trainer tok/s':>14} {'trainer/plain':>14} {'MFU plain':>10} {'MFU trainer':>12}  verdict")
    for res in results:
        plain, trainer = res.median_rate("plain"), res.median_rate("trainer")
        required = REQUIRED_RATIO[res.mode]
        verdict = "PASS" if res.ratio() >= required else "FAIL"
        print(
            f"{res.mode:<9} {plain:12.0f} {trainer:14.0f} {res.ratio():14.3f} "
            f"{100 * plain * fpt / 1e9 / peak:9.1f}% {100 * trainer * fpt / 1e9 / peak:11.1f}%  "
            f"{verdict} (required >= {required})"
        )
    print()
    for res in results:
        warm = res.warmup
        print(
            f"{res.mode}: per round trainer/plain {' '.join(f'{r:.3f}' for r in res.ratios())}; "
            f"per CPU second (process_time) median {res.ratio('cpu'):.3f}; "
            f"warm-up ({args.warmup} steps, compilation included) trainer {warm['trainer'].wall:.1f} s, "
            f"plain {warm['plain'].wall:.1f} s"
        )
        if not res.compiled_ok:
            print(f"  warning: the trainer's GraphBase fell back to eager in {res.mode} mode")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt", choices=["gpt", "llama"], help="the model on both sides")
    parser.add_argument("--kv-heads", type=int, default=2, help="llama: key/value heads")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="micro batch (= global batch, one process)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak (2048 CPU, 8192 GPU)")
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - {"eager", "compiled"}
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; use eager and/or compiled")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    shape = Shape(args.layers, args.hidden, args.heads, args.seq, args.vocab, args.batch, args.model, args.kv_heads)
    device = torch.device(dist.resolve_device_type(args.device))
    args.peak_n = args.peak_n or (8192 if device.type == "cuda" else 2048)
    # The machine's best: measured before and after the runs, as other jobs may share it.
    peak_before = matmul_peak_gflops(device, args.peak_n)
    with tempfile.TemporaryDirectory() as output_dir:
        results = [measure_mode(shape, args, mode, os.path.join(output_dir, mode)) for mode in args.modes]
    peak = max(peak_before, matmul_peak_gflops(device, args.peak_n))
    report(shape, args, results, peak)


if __name__ == "__main__":
    main()
