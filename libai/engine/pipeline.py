"""Pipeline parallelism: turn an ordinary LiBai model into this rank's pipeline stage(s).

A LiBai model only says `layer_idx` on its layers. This module finds the *blocks* (the
outermost modules that carry a `layer_idx`), maps each to a pipeline stage with LiBai's
layer -> stage map (`distributed.get_layer_stage_id`, or `custom_pipeline_stage_id`), and
runs a training step over micro-batches with `torch.distributed.pipelining`'s
`PipelineStage` and one of its schedules ("GPipe", "1F1B", "Interleaved1F1B").

Why a stage wrapper and not the tracer (`pipeline()` + `SplitPoint`)
-------------------------------------------------------------------
The tracer runs `torch.export` on the whole model on every rank. That does not fit LiBai:

* parameters of another stage's layers are DTensor shells on this rank (a rank outside a
  stage's mesh holds an empty local tensor), so tracing the full forward fails on shapes;
* tensor-parallel layers call process-group collectives inside custom autograd Functions,
  which export does not trace;
* the traced graph is specialised to the example micro-batch and loses the module tree
  (state_dict names, hooks, activation checkpointing, `torch.compile` of single layers).

Why not a copy of the model per stage with the other stages' layers deleted (torchtitan)
---------------------------------------------------------------------------------------
torchtitan's models are written for it (`h = self.tok_embeddings(x) if self.tok_embeddings
else x`); a LiBai model's `forward` calls every block unconditionally, with glue code in
between (T5, GPT with tied heads, a project's own model), so a stage without those blocks
cannot run it. The stand-ins below are what lets unchanged model code run on a stage.

What this relies on in torch
----------------------------
* The stock `PipelineStage` and schedules, through public arguments only; the one
  reliance beyond plain use (a per-micro-batch backward hook through `dw_builder`) is
  `make_stage_with_backward_hook`, with its reason and a contract test.
* `nn.Module.__call__` calling the instance's `forward` attribute: a block of another stage
  gets an instance-level `forward` (`_install_stand_ins`); outside a pipeline step it calls
  the block's own forward, so the model still works as a plain module.
* `Module.register_parameter` to put a freed stand-in into another stage's parameter slot.

The wrapper keeps the user's model and module tree unchanged and replays the model's own
`forward(**inputs)` on every stage, with the blocks of other stages replaced *in place* by
cheap stand-ins (their `forward` is swapped; their parameters are freed):

* a block of an **earlier** stage returns, if it is the last such block in registration
  order (the "boundary" block of the previous stage), the activation received from the
  previous stage; any other earlier block returns a `meta` tensor of the same shape, so glue
  code between earlier blocks (adds, dropout, reshapes) costs nothing;
* the first call of a block of a **later** stage ends the replay: the stage sends the output
  of its own boundary block (its last block in registration order; one tensor) to the next
  stage, followed by the outputs of its blocks called *after* the boundary block ("carries",
  e.g. T5's decoder embeddings, computed on the first stage after the encoder); on the next
  stage, the calls of earlier blocks after the boundary block's return those carries in order;
* the **last** stage runs to the end of `forward`, gets the model's output dict and returns
  the values whose key contains "loss"; the schedule's loss function sums them.

So glue code and keyword inputs (masks, labels, position ids) work unchanged: every stage
sees every input. T5 with its encoder on one stage and its decoder on the next trains this
way (the encoder output is the boundary, the decoder embeddings are carried). A model whose
later stage reads another earlier block output (a skip connection across stages, or a
carry needed two stages on, e.g. T5's encoder output when the decoder spans several
stages) meets a `meta` tensor and fails with a clear error instead of training a wrong model.

Ownership and memory: every rank builds the full model from the same seed (the one-process
initialisation); `build_pipeline` then frees the parameters of blocks this rank does not
own (plain tensors become `ForeignParameter`s on `meta`, not trained, that raise a clear
error when computed with; DTensor parameters of another stage are already empty shells).
Parameters outside every block belong to the last stage (where LiBai places heads and
losses, layer -1). A weight tied across stages (an LM head reading the stage-0 word
embedding) is the layer's business: it must give the last stage its own copy.

Gradients: after `step`, every owned parameter's `.grad` holds the SUM of the micro-batch
gradients (the schedules' `scale_grads=False`), i.e. `num_microbatches x` the mean. Set
`engine.on_microbatch_backward = reducer.accumulate` (a reducer of
`distributed.make_gradient_reducer` over `engine.parameters()` with
`num_micro_batches=num_microbatches`, `overlap=False`; with `exact=True` it sums them in
float64 instead); `reducer.reduce()` then leaves the mean over micro-batches and
data-parallel replicas, as in the eager trainer.

Inputs: `step(batch)` takes this rank's data-parallel shard of every field (plain tensors,
or DTensors this rank holds) on every stage, because every stage replays `forward`: either
the whole batch, which the schedule splits into micro-batches (views, no copy), or the
list of micro-batches as the loader made them. A list is not concatenated for the schedule
to split again: the schedule splits a `torch.arange(num_microbatches)` instead (its
documented dim-0 split), and each stage looks its micro-batch up by that index.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from libai.utils import distributed as dist

if TYPE_CHECKING:
    from torch.distributed.pipelining import PipelineStage

logger = logging.getLogger(__name__)

# Schedule name -> class name in `torch.distributed.pipelining`. That module is imported only
# when a pipeline is built: it imports torch._dynamo (about 0.5 s), which no other part of
# a run needs, and every launched process imports this engine.
SCHEDULES = {
    "GPipe": "ScheduleGPipe",
    "1F1B": "Schedule1F1B",
    "Interleaved1F1B": "ScheduleInterleaved1F1B",
}


def _pipelining() -> Any:
    """`torch.distributed.pipelining`, imported on first use (see `SCHEDULES`)."""
    import torch.distributed.pipelining as pipelining

    return pipelining


# The keyword under which `step` hands the schedule micro-batch indices instead of data.
_MICRO_BATCH_INDEX = "_libai_micro_batch_index"


class PipelineError(ValueError):
    """A model or setting that cannot be run as a pipeline."""


# --------------------------------------------------------------------------------------
# Blocks and their stages
# --------------------------------------------------------------------------------------


@dataclass
class Block:
    """An outermost module carrying a `layer_idx`, and the (virtual) stage that runs it."""

    name: str
    module: nn.Module
    layer_idx: int
    stage: int


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """The outermost submodules with an integer `layer_idx`, in registration order.

    LiBai tags both a `TransformerLayer` and its inner Linear/LayerNorm with the same
    `layer_idx`; the outer module is the unit a stage runs. Raises `PipelineError` when
    the model has no tagged module.
    """
    blocks: list[tuple[str, nn.Module, int]] = []
    inside: list[str] = []  # names of blocks already taken; their submodules are skipped
    for name, module in model.named_modules():
        if not name or any(name.startswith(prefix + ".") for prefix in inside):
            continue
        layer_idx = getattr(module, "layer_idx", None)
        if isinstance(layer_idx, int) and not isinstance(layer_idx, bool):
            blocks.append((name, module, layer_idx))
            inside.append(name)
    if not blocks:
        raise PipelineError(
            f"{type(model).__name__} has no submodule with a `layer_idx` attribute, so it cannot be "
            f"split into pipeline stages: build it from libai.layers (which take layer_idx) or set "
            f"`layer_idx` on its embedding, transformer layers and head"
        )
    return blocks


def layer_stage_map(num_virtual_stages: int = 1) -> list[int]:
    """Stage of each layer for `pp x num_virtual_stages` (virtual) stages.

    With one virtual stage per rank this is `distributed`'s map (LiBai's, or
    `custom_pipeline_stage_id`). Interleaved schedules split the layers into
    `pp x num_virtual_stages` stages with the same LiBai rule; virtual stage `k` runs on
    pipeline rank `k % pp`.
    """
    util = dist.get_dist_util()
    if num_virtual_stages == 1:
        return list(util.layer_stage_ids)
    num_stages = util.pipeline_parallel_size * num_virtual_stages
    return dist.get_layer_stage_ids(len(util.layer_stage_ids), num_stages)


def assign_stages(model: nn.Module, num_virtual_stages: int = 1) -> list[Block]:
    """Every block of `model` with its (virtual) stage, in registration order.

    Checks that every stage gets at least one block and that a `layer_idx` is inside
    `pipeline_num_layers`.
    """
    stage_ids = layer_stage_map(num_virtual_stages)
    num_layers = len(stage_ids)
    blocks = []
    for name, module, layer_idx in find_blocks(model):
        if not -num_layers <= layer_idx < num_layers:
            raise PipelineError(
                f"module {name!r} has layer_idx={layer_idx} but train.dist.pipeline_num_layers is "
                f"{num_layers}: set pipeline_num_layers to the model's number of layers"
            )
        blocks.append(Block(name, module, layer_idx, stage_ids[layer_idx]))
    num_stages = dist.get_pipeline_parallel_size() * num_virtual_stages
    empty = sorted(set(range(num_stages)) - {b.stage for b in blocks})
    if empty:
        raise PipelineError(
            f"pipeline stages {empty} own no layer of {type(model).__name__}: lower "
            f"pipeline_parallel_size or change custom_pipeline_stage_id"
        )
    return blocks


# --------------------------------------------------------------------------------------
# Replaying the model's forward on one stage
# --------------------------------------------------------------------------------------


class _StageDone(BaseException):
    """Raised by the first later-stage block: the stage's part of `forward` is over.

    A BaseException so that a model's own `except Exception` cannot swallow it.
    """


@dataclass
class _Replay:
    """State of one stage's forward while the model's `forward` runs."""

    stage: int
    recv_block: Optional[str]  # the previous stage's boundary block (None on stage 0)
    send_block: str  # this stage's boundary block
    received: tuple = ()
    output: Any = None
    sent: bool = False
    placeholders: dict = field(default_factory=dict)
    # Outputs of this stage's blocks called after its boundary block (sent along with it),
    # and how many of the received ones the replay has handed out.
    carries: list = field(default_factory=list)
    received_used: int = 0


def _as_tensors(value: Any, what: str) -> tuple[torch.Tensor, ...]:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(value)
    raise PipelineError(
        f"{what} returns {type(value).__name__}; a block whose output crosses a pipeline stage "
        f"must return a tensor or a tuple of tensors"
    )


def _has_meta(values: Any) -> bool:
    flat = values.values() if isinstance(values, Mapping) else values
    for v in flat:
        if isinstance(v, torch.Tensor) and v.is_meta:
            return True
        if isinstance(v, (tuple, list)) and _has_meta(v):
            return True
    return False


class _StageModule(nn.Module):
    """The `PipelineStage` submodule of one (virtual) stage: replays the model's forward."""

    def __init__(self, engine: "PipelineEngine", stage: int) -> None:
        super().__init__()
        self.model = engine.model
        self._engine = engine
        self.stage = stage
        self.num_stages = engine.num_stages
        own = [b.name for b in engine.blocks if b.stage == stage]
        earlier = [b.name for b in engine.blocks if b.stage == stage - 1]
        self._send_block = own[-1]
        self._recv_block = earlier[-1] if stage > 0 else None

    def forward(self, *received: torch.Tensor, **inputs: Any):
        """The boundary output; on the last stage the losses (for the schedule), or the
        model's whole output dict when the engine evaluates."""
        self._gather_root_parameters()
        output = self.run(received, self._engine._micro_batch_inputs(inputs))
        if self.stage == self.num_stages - 1 and not self._engine.evaluating:
            return self._losses(output)
        return output

    def _gather_root_parameters(self) -> None:
        """With ZeRO and two virtual stages per rank, the FSDP root is the rank's first
        stage module; its forward gathers the parameters it manages directly, some of which
        this (second) stage computes with. Gather them here too (a no-op when gathered)."""
        root = self._engine.stages[0].submod
        if root is not self and isinstance(root, FSDPModule):
            root.unshard()

    def run(self, received: tuple, inputs: Mapping[str, Any]) -> Any:
        """Replay the model's forward for this stage: returns the tensors that cross to the
        next stage, or on the last stage the model's own output (a dict)."""
        replay = _Replay(self.stage, self._recv_block, self._send_block, tuple(received))
        self._engine._active = replay
        try:
            output = self.model(**inputs)
        except _StageDone:
            return self._boundary_output(replay)
        except RuntimeError as err:
            if "meta" in str(err):
                raise PipelineError(
                    f"pipeline stage {self.stage} computed with a value of another stage "
                    f"(a parameter or a block output that does not cross the stage boundary, "
                    f"e.g. a skip connection across stages): {err}"
                ) from err
            raise
        finally:
            self._engine._active = None
        if self.stage != self.num_stages - 1:
            raise PipelineError(
                f"{type(self.model).__name__}.forward ended on pipeline stage {self.stage} without "
                f"calling a layer of stage {self.stage + 1}: check the modules' layer_idx"
            )
        return output

    def _boundary_output(self, replay: _Replay) -> tuple[torch.Tensor, ...]:
        if not replay.sent:
            raise PipelineError(
                f"pipeline stage {self.stage} reached a later stage's layer before calling its "
                f"boundary module {self._send_block!r}: modules must be registered in call order"
            )
        if not isinstance(replay.output, torch.Tensor):
            raise PipelineError(
                f"module {self._send_block!r} returns {type(replay.output).__name__}; the last "
                f"module of a pipeline stage must return one tensor (its output crosses the boundary)"
            )
        # The stage sends these and the next stage receives into buffers shaped like them;
        # both need dense tensors, and a block may return a view (a transposed patch grid).
        outputs = tuple(t.contiguous() for t in (replay.output, *replay.carries))
        if _has_meta(outputs):
            raise PipelineError(
                f"module {self._send_block!r} on stage {self.stage} computed with the output of a "
                f"block of an earlier stage other than {self._recv_block!r}: only the previous "
                f"stage's last block output crosses a stage boundary"
            )
        return outputs

    def _losses(self, output: Any) -> tuple[torch.Tensor, ...]:
        if not isinstance(output, Mapping):
            raise PipelineError(
                f"{type(self.model).__name__}.forward returned {type(output).__name__}; a model "
                f"trained with pipeline parallelism must return a dict of losses"
            )
        keys = self._engine._loss_keys(output)
        losses = tuple(output[k].reshape(1) for k in keys)
        if _has_meta(losses):
            raise PipelineError(
                f"the losses of {type(self.model).__name__} on the last stage depend on a block "
                f"output that did not cross the stage boundary (a skip connection across stages)"
            )
        return losses


def _stand_in_forward(engine: "PipelineEngine", block: Block) -> Callable:
    """The `forward` a block gets: its own on its stage (`engine.block_forward`, compiled
    in graph mode), a stand-in on other stages."""

    def forward(*args, **kwargs):
        replay = engine._active
        original = engine.block_forward[block.name]
        if replay is None:
            return original(*args, **kwargs)
        if block.stage == replay.stage:
            if _has_meta(args) or _has_meta(kwargs):
                raise PipelineError(
                    f"module {block.name!r} on pipeline stage {block.stage} gets the output of a "
                    f"block of an earlier stage other than {replay.recv_block!r}: only the previous "
                    f"stage's last block output crosses a stage boundary"
                )
            out = original(*args, **kwargs)
            if block.name == replay.send_block:
                replay.output, replay.sent = out, True
            elif replay.sent:
                # Called after the boundary (e.g. T5's decoder embedding after the encoder):
                # the next stage needs it too, so it travels with the boundary output.
                replay.carries.extend(_as_tensors(out, f"module {block.name!r}"))
            return out
        if block.stage > replay.stage:
            raise _StageDone()
        if block.name == replay.recv_block and replay.received_used == 0:
            replay.received_used = 1
            return replay.received[0]
        if 0 < replay.received_used < len(replay.received):
            # An earlier stage's block called after its boundary: what that stage carried.
            replay.received_used += 1
            return replay.received[replay.received_used - 1]
        # An earlier block whose output should not matter here: a free meta placeholder.
        return _placeholder(replay)

    return forward


def _install_stand_ins(engine: "PipelineEngine") -> None:
    """Give every block an instance-level `forward` that is its own on its stage and a
    stand-in elsewhere (see the module docstring). `nn.Module.__call__` looks `forward` up
    on the instance, so hooks, activation checkpointing and the module tree stay as they
    were; a call outside a pipeline step runs the block's own forward."""
    for block in engine.blocks:
        engine.block_forward[block.name] = block.module.forward
        block.module.forward = _stand_in_forward(engine, block)


def _placeholder(replay: _Replay):
    if "value" not in replay.placeholders:
        replay.placeholders["value"] = torch.empty_like(replay.received[0], device="meta")
    return replay.placeholders["value"]


class ForeignParameter(nn.Parameter):
    """A parameter of another pipeline stage, freed on this rank (its data is on `meta`).

    Reading its metadata (shape, dtype, `detach`, `repr`) works; computing with it raises
    a `PipelineError` that names it. (A plain `meta` tensor would not be safe: some CPU
    kernels such as `F.linear` accept a `meta` weight and return uninitialised memory.)
    """

    _ALLOWED = {"detach", "size", "dim", "numel", "__repr__", "__format__", "__reduce_ex__", "__deepcopy__"}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        # Clearing an attribute (`param.grad = None`, as PipelineStage does to every FSDP
        # module's parameters after its first step) computes nothing.
        clears = name == "__set__" and len(args) == 2 and args[1] is None
        if name in cls._ALLOWED or isinstance(func, type(torch.Tensor.shape)) or name == "__get__" or clears:
            # The idiom of torch's "Extending torch.Tensor" notes (what the default
            # `Tensor.__torch_function__` does), without converting results back to this class.
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        owner = next((a for a in args if isinstance(a, ForeignParameter)), None)
        label = getattr(owner, "_pipeline_name", "a parameter")
        raise PipelineError(
            f"{label!s} belongs to another pipeline stage but is used on this one (e.g. a weight "
            f"tied across stages): its memory was freed here; give this stage its own copy "
            f"(layer_idx) or keep the use on the owning stage"
        )


def _free_parameters(model: nn.Module, foreign: dict[int, str]) -> None:
    """Release the memory of the parameters whose id is in `foreign` (id -> name).

    Each becomes a `ForeignParameter` on `meta` with `requires_grad=False` in the same
    module slot, so model code that names it still resolves. DTensor parameters of another
    stage are already empty shells on this rank; they only stop requiring gradients.
    """
    replaced: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False, remove_duplicate=False)):
            if id(param) not in foreign:
                continue
            if isinstance(param, DTensor):
                param.requires_grad_(False)
                continue
            if id(param) not in replaced:
                meta = torch.empty_like(param.data, device="meta")
                stand_in = ForeignParameter(meta, requires_grad=False)
                stand_in._pipeline_name = foreign[id(param)]
                replaced[id(param)] = stand_in
            # Replacing a registered parameter through the public API keeps its slot
            # (and its state_dict name).
            module.register_parameter(name, replaced[id(param)])


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# The one place that relies on torch.distributed.pipelining beyond its plain use
# --------------------------------------------------------------------------------------


def make_stage_with_backward_hook(
    submodule: nn.Module,
    stage_index: int,
    num_stages: int,
    device: torch.device,
    group: Optional[torch_dist.ProcessGroup],
    after_backward: Callable[[], None],
) -> PipelineStage:
    """A stock `PipelineStage` that calls `after_backward()` once per micro-batch, right
    after that micro-batch's gradients have been added into `.grad`.

    Why: the exact gradient sum (`GradientReducer.accumulate`, and ZeRO's reducer) must
    see each micro-batch's gradient on its own, as the eager trainer does, and
    `torch.distributed.pipelining` has no public per-micro-batch backward hook. Its
    `PipelineStage` takes `dw_builder`, a documented constructor argument (the deferred
    weight-gradient runner of zero-bubble schedules): with full backward the stage calls
    `dw_builder()()` after each micro-batch's backward (and, with split backward, at that
    micro-batch's weight step). LiBai's schedules (GPipe, 1F1B, Interleaved1F1B) run full
    backward, so the runner is exactly the hook we need, through public arguments only.
    `tests/test_pipeline.py::test_stage_backward_hook_contract` checks this promise on the
    installed torch (count and timing of the calls under every schedule), so a torch that
    changes it fails there, not as a silently wrong gradient.
    """
    return _pipelining().PipelineStage(
        submodule, stage_index, num_stages, device, group=group, dw_builder=lambda: after_backward
    )


def _sum_losses(output, target) -> torch.Tensor:
    """The schedules' loss function: the sum of the model's "loss" values (target unused)."""
    values = _as_tensors(output, "the last stage")
    return sum(v.sum() for v in values)


def _send_tensors(tensors: tuple[torch.Tensor, ...], group, group_dst: int) -> None:
    """Send tensors to a pipeline peer, their shapes and dtypes first (blocking)."""
    meta = [[(tuple(t.shape), t.dtype) for t in tensors]]
    torch_dist.send_object_list(meta, group=group, group_dst=group_dst, device=dist.get_device())
    for t in tensors:
        torch_dist.send(t.contiguous(), group=group, group_dst=group_dst)


def _recv_tensors(group, group_src: int) -> tuple[torch.Tensor, ...]:
    """Receive what `_send_tensors` sent."""
    meta = [None]
    torch_dist.recv_object_list(meta, group=group, group_src=group_src, device=dist.get_device())
    tensors = []
    for shape, dtype in meta[0]:
        t = torch.empty(shape, dtype=dtype, device=dist.get_device())
        torch_dist.recv(t, group=group, group_src=group_src)
        tensors.append(t)
    return tuple(tensors)


class _PipelineEvalModel(nn.Module):
    """`inference_on_dataset`'s model under pipeline parallelism (see `eval_model`)."""

    def __init__(self, engine: "PipelineEngine") -> None:
        super().__init__()
        self.model = engine.model
        self._engine = engine

    def forward(self, **batch: Any) -> dict[str, Any]:
        return self._engine.eval_forward(batch)


class PipelineEngine:
    """This rank's pipeline stage(s) of `model` and the schedule that trains them.

    Build it with `build_pipeline`. `step(batch)` runs forward and backward over
    `num_microbatches` micro-batches of `batch` and returns the mean of every "loss" value
    over them, on every stage. Owned parameters' `.grad` then hold the sum over
    micro-batches (or whatever `on_microbatch_backward` leaves there).
    """

    def __init__(
        self,
        model: nn.Module,
        num_microbatches: int,
        schedule: str = "1F1B",
        num_virtual_stages: Optional[int] = None,
        on_microbatch_backward: Optional[Callable[[], None]] = None,
    ) -> None:
        if schedule not in SCHEDULES:
            raise PipelineError(
                f"unknown pipeline schedule {schedule!r}: use one of {sorted(SCHEDULES)}"
            )
        if num_microbatches < 1:
            raise PipelineError(f"num_microbatches must be at least 1, got {num_microbatches}")
        interleaved = schedule == "Interleaved1F1B"
        virtual = int(num_virtual_stages or (2 if interleaved else 1))
        if virtual > 1 and not interleaved:
            raise PipelineError(f"schedule {schedule!r} runs one stage per rank: use Interleaved1F1B")
        pp = dist.get_pipeline_parallel_size()
        if interleaved and num_microbatches % pp != 0:
            raise PipelineError(
                f"Interleaved1F1B needs a number of micro-batches divisible by "
                f"pipeline_parallel_size ({pp}), got {num_microbatches}"
            )
        self.model = model
        self.num_microbatches = int(num_microbatches)
        self.schedule_name = schedule
        self.num_stages = pp * virtual
        self.blocks = assign_stages(model, virtual)
        pp_rank = dist.get_pipeline_parallel_rank()
        # Virtual stage k lives on pipeline rank k % pp (the interleaved schedules' layout).
        self.stage_ids = [s for s in range(self.num_stages) if s % pp == pp_rank]
        self._active: Optional[_Replay] = None
        self.evaluating = False
        self._loss_key_list: Optional[list[str]] = None
        self._metric_keys: Optional[list[str]] = None
        # This step's micro-batches when `step` is given a list (see `_index_micro_batches`).
        self._micro_batches: Optional[list[dict[str, Any]]] = None
        self._owned = self._drop_foreign_parameters()
        # Each block's own forward (the stand-ins call it on the block's stage).
        self.block_forward: dict[str, Callable] = {}
        # Multiplies the schedule's loss before backward (the GradScaler's `scale`).
        self.loss_scale: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
        _install_stand_ins(self)
        # Called after every micro-batch's backward; may be set after construction (a
        # GradientReducer needs `self.parameters()`, which exist only now).
        self.on_microbatch_backward = on_microbatch_backward
        self.stages = [self._make_stage(s) for s in self.stage_ids]
        self.schedule = self._make_schedule()

    # -- construction ------------------------------------------------------------------

    def _drop_foreign_parameters(self) -> list[tuple[str, nn.Parameter]]:
        owner: dict[int, int] = {}
        for block in self.blocks:
            for p in block.module.parameters():
                owner.setdefault(id(p), block.stage)
        last = self.num_stages - 1
        mine = set(self.stage_ids)
        # Weights the first and the last stage both hold (word embeddings read again by a
        # tied LM head) are trained on both; the trainer sums their gradients
        # (distributed.sync_first_last_grads over `shared_parameters()`).
        shared = {
            id(m.weight)
            for m in self.model.modules()
            if getattr(m, "shared_with_last_stage", False) and dist.holds(m.weight)
        }
        self._shared = [p for p in self.model.parameters() if id(p) in shared]
        owned, foreign = [], {}
        for name, p in self.model.named_parameters():
            if id(p) in shared or owner.get(id(p), last) in mine:
                if id(p) in shared and owner.get(id(p), last) not in mine:
                    p._libai_pipeline_replica = True  # counted once in gradient norms
                owned.append((name, p))
            else:
                foreign[id(p)] = name
        _free_parameters(self.model, foreign)
        return owned

    def _make_stage(self, stage: int) -> PipelineStage:
        return make_stage_with_backward_hook(
            _StageModule(self, stage),
            stage,
            self.num_stages,
            dist.get_device(),
            dist.get_pipeline_parallel_group(),
            self._after_microbatch_backward,
        )

    def _after_microbatch_backward(self) -> None:
        # Read at call time: the trainer sets `on_microbatch_backward` after construction.
        if self.on_microbatch_backward is not None:
            self.on_microbatch_backward()

    def _make_schedule(self):
        cls = getattr(_pipelining(), SCHEDULES[self.schedule_name])
        stages = self.stages if self.schedule_name == "Interleaved1F1B" else self.stages[0]
        return cls(stages, self.num_microbatches, loss_fn=self._schedule_loss, scale_grads=False)

    def _schedule_loss(self, output, target) -> torch.Tensor:
        loss = _sum_losses(output, target)
        return loss if self.loss_scale is None else self.loss_scale(loss)

    def compile_blocks(self, compile_fn: Callable[[Callable], Callable]) -> list[str]:
        """Graph mode under pipeline parallelism: replace the forward of every block this
        rank runs by `compile_fn(forward)` (e.g. `torch.compile`), one block at a time as
        torchtitan does; the glue code between blocks and the stand-ins stay eager.
        Returns the names of the compiled blocks."""
        names = self.block_names()
        for name in names:
            self.block_forward[name] = compile_fn(self.block_forward[name])
        return names

    # -- queries -----------------------------------------------------------------------

    @property
    def is_first(self) -> bool:
        """Whether this rank runs the first stage (it needs the model's inputs)."""
        return 0 in self.stage_ids

    @property
    def is_last(self) -> bool:
        """Whether this rank runs the last stage (it computes the loss)."""
        return self.num_stages - 1 in self.stage_ids

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of the parameters this rank owns, with the model's names."""
        return iter(self._owned)

    def parameters(self) -> Iterator[nn.Parameter]:
        """The parameters this rank owns and trains (give these to the optimizer)."""
        return (p for _, p in self._owned)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Weights this rank holds that the first and the last stage both train."""
        return list(self._shared)

    def foreign_parameters(self) -> list[nn.Parameter]:
        """Parameters of the model that other stages own (freed or empty on this rank)."""
        owned = {id(p) for p in self.parameters()}
        return [p for p in self.model.parameters() if id(p) not in owned]

    def refresh_parameters(self) -> None:
        """Re-read the owned and shared parameters from the model by name, after a wrapper
        (ZeRO's `fully_shard`) replaced the parameter objects in their module slots."""
        current = dict(self.model.named_parameters(remove_duplicate=False))
        replicas = {name for name, p in self._owned if getattr(p, "_libai_pipeline_replica", False)}
        shared_ids = {id(p) for p in self._shared}
        shared_names = {name for name, p in self._owned if id(p) in shared_ids}
        self._owned = [(name, current[name]) for name, _ in self._owned]
        for name, p in self._owned:
            if name in replicas:
                p._libai_pipeline_replica = True
        self._shared = [p for name, p in self._owned if name in shared_names]

    def block_names(self) -> list[str]:
        """Names of the blocks this rank runs, in registration order."""
        mine = set(self.stage_ids)
        return [b.name for b in self.blocks if b.stage in mine]

    # -- training ----------------------------------------------------------------------

    def _loss_keys(self, output: Mapping) -> list[str]:
        keys = sorted(k for k in output if "loss" in k)
        if not keys:
            raise PipelineError(
                f"{type(self.model).__name__}.forward returned keys {sorted(output)} and none "
                f"contains 'loss': the last pipeline stage needs a loss to train"
            )
        if self._loss_key_list is None:
            self._loss_key_list = keys
        return keys

    def _prepare_inputs(self, batch: Mapping[str, Any], split: bool = True) -> dict[str, Any]:
        inputs = {}
        for key, value in batch.items():
            if isinstance(value, DTensor):
                if value.device_mesh.get_coordinate() is None:
                    raise PipelineError(
                        f"batch field {key!r} is a DTensor on another pipeline stage; every stage "
                        f"replays the model's forward and needs every field: pass this rank's "
                        f"data-parallel shard as a plain tensor"
                    )
                value = value.to_local()
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                if split and value.shape[0] % self.num_microbatches != 0:
                    raise PipelineError(
                        f"batch field {key!r} has {value.shape[0]} rows, not divisible into "
                        f"{self.num_microbatches} micro-batches"
                    )
                value = value.to(dist.get_device())
            inputs[key] = value
        return inputs

    def _index_micro_batches(self, micro_batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Keep the prepared micro-batches for this step; the schedule gets only their
        indices to split (a CPU tensor, so reading one back is no device sync)."""
        if len(micro_batches) != self.num_microbatches:
            raise PipelineError(
                f"step got {len(micro_batches)} micro-batches, but the pipeline runs "
                f"{self.num_microbatches} per step (train.num_accumulation_steps)"
            )
        self._micro_batches = [self._prepare_inputs(mb, split=False) for mb in micro_batches]
        return {_MICRO_BATCH_INDEX: torch.arange(self.num_microbatches)}

    def _micro_batch_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """A stage's forward inputs: the micro-batch `step` was given, when it was given a
        list (the schedule then passes only the micro-batch's index)."""
        index = inputs.get(_MICRO_BATCH_INDEX)
        if index is None:
            return inputs
        return self._micro_batches[int(index)]

    def step(self, batch: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Forward and backward all micro-batches of `batch`; return the mean losses.

        `batch` maps the model's `forward` argument names to this rank's data-parallel shard
        (split along dim 0 into micro-batches; non-tensors are passed to every micro-batch),
        or is the list of `num_microbatches` such micro-batches, used as they are.
        Returns {loss key: float64 0-dim tensor}, the mean over micro-batches, on every rank
        of the pipeline (broadcast from the last stage).
        """
        if isinstance(batch, Mapping):
            inputs = self._prepare_inputs(batch)
        else:
            inputs = self._index_micro_batches(batch)
        target = torch.zeros(self.num_microbatches, device=dist.get_device())
        losses: list[torch.Tensor] = []
        self._hold_gradient_sync()
        try:
            outputs = self.schedule.step(target=target, losses=losses, **inputs)
        finally:
            self._micro_batches = None
        means = None
        if self.is_last:
            values = _as_tensors(outputs, "the last stage")
            means = torch.stack([v.detach().double().mean() for v in values])
        return self._broadcast_losses(means)

    def _hold_gradient_sync(self) -> None:
        """With ZeRO (FSDP2 on `stages[0].submod`) and two virtual stages per rank, keep
        FSDP from reducing, and the root's own parameters gathered, until the step's end.

        The stage that holds the FSDP root turns gradient sync off before each of its own
        backwards and reduces once at its last (its REDUCE_GRAD, the last backward on the
        rank); the other virtual stage's submodule is no FSDP module, so its backwards
        (the rank's first ones) would otherwise reduce-scatter every micro-batch. That
        stage also computes with parameters the root manages directly (gathered by
        `_StageModule._gather_root_parameters`), which FSDP only gathers again for the
        root's own backward: under ZeRO-3 the root must not free them after a forward.
        Blocks wrapped as their own FSDP groups keep ZeRO-3's per-layer freeing.
        """
        root = self.stages[0].submod
        if len(self.stages) > 1 and isinstance(root, FSDPModule):
            root.set_requires_gradient_sync(False)
            root.set_reshard_after_backward(False)
            root.set_reshard_after_forward(False, recurse=False)

    @torch.no_grad()
    def eval_forward(self, batch: Mapping[str, Any], keys: Optional[Sequence[str]] = None) -> dict[str, Any]:
        """The model's eval output for a whole `batch` (no micro-batches), on every rank.

        The stages run one after another with blocking sends of the boundary tensors
        (shapes travel first, so any batch size works); the last stage's output dict (only
        those of its `keys` it has when given, e.g. the logits but not a generation cache that stays on
        each stage) is then broadcast over the pipeline group, so evaluators and generation
        run unchanged on every rank.
        """
        inputs = self._prepare_inputs(batch, split=False)
        pp, me = dist.get_pipeline_parallel_size(), dist.get_pipeline_parallel_rank()
        group = dist.get_pipeline_parallel_group()
        by_stage = dict(zip(self.stage_ids, self.stages))
        output, received = None, ()
        self.evaluating = True
        try:
            for stage in range(self.num_stages):
                if stage % pp != me:
                    continue
                if stage > 0:
                    received = _recv_tensors(group, (stage - 1) % pp)
                result = by_stage[stage].submod(*received, **inputs)
                if stage < self.num_stages - 1:
                    _send_tensors(result, group, (stage + 1) % pp)
                else:
                    output = result if keys is None else {k: result[k] for k in keys if k in result}
        finally:
            self.evaluating = False
        box = [output]
        torch_dist.broadcast_object_list(box, group=group, group_src=pp - 1, device=dist.get_device())
        return box[0]

    def eval_model(self) -> nn.Module:
        """A module that evaluates through the pipeline: `module(**batch)` returns
        `eval_forward(batch)`; `.eval()`/`.train()` reach the user's model."""
        return _PipelineEvalModel(self)

    def _broadcast_losses(self, means: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        pp = dist.get_pipeline_parallel_size()
        if pp == 1:
            return dict(zip(self._loss_key_list, means))
        group = dist.get_pipeline_parallel_group()
        src = pp - 1
        if self._metric_keys is None:
            box = [self._loss_key_list]
            torch_dist.broadcast_object_list(box, group=group, group_src=src, device=dist.get_device())
            self._metric_keys = box[0]
        if means is None:
            means = torch.empty(len(self._metric_keys), dtype=torch.float64, device=dist.get_device())
        torch_dist.broadcast(means, group=group, group_src=src)
        return dict(zip(self._metric_keys, means))


def build_pipeline(
    model: nn.Module,
    num_microbatches: int,
    schedule_name: str = "1F1B",
    num_virtual_stages: Optional[int] = None,
    on_microbatch_backward: Optional[Callable[[], None]] = None,
) -> PipelineEngine:
    """Make this rank's pipeline stage(s) of `model` (built whole, from the same seed on
    every rank) and the schedule `schedule_name` ("GPipe", "1F1B", "Interleaved1F1B")
    over `num_microbatches` micro-batches. See `PipelineEngine` and the module docstring."""
    return PipelineEngine(model, num_microbatches, schedule_name, num_virtual_stages, on_microbatch_backward)
