"""LiBai's default `train` config. Projects load it and change what they need:

    train = get_config("common/train.py").train      # or: from .common.train import train
    train.update(dict(train_micro_batch_size=16, dist=dict(tensor_parallel_size=2)))
    train.amp.enabled = True

In a config file `update` merges nested groups (other keys keep these defaults) and warns
about a key that does not exist here; elsewhere `libai.config.merge_update(train, dict(...))`
does the same. Values derived at run time (train.samples, warmup_iter, the actual
data parallel size, ...) are written into the output's config.yaml.
"""
from libai.config import LazyCall
from libai.evaluation import ClsEvaluator
from libai.scheduler import WarmupCosineLR

train = dict(
    output_dir="./output",
    # global_batch_size = train_micro_batch_size * data_parallel_size * num_accumulation_steps;
    # give any two of the three and the third is derived (an inconsistent triple is an error).
    train_micro_batch_size=32,
    global_batch_size=None,
    num_accumulation_steps=None,
    # train_iter = max(ceil(len(dataset) * train_epoch / global_batch_size), train_iter)
    train_iter=10000,
    train_epoch=0,
    consumed_train_samples=0,
    consumed_valid_samples=0,
    train_samples=None,
    # warmup_iter = ceil(train_iter * warmup_ratio)
    warmup_ratio=0,
    start_iter=0,
    # Automatic mixed precision. dtype: "float16" | "bfloat16" | None; None picks bfloat16 on
    # CPU (float16 autocast is poorly supported there) and float16 (with a GradScaler) on CUDA.
    amp=dict(enabled=False, dtype=None),
    # Recompute each TransformerLayer's activations in backward to save memory.
    activation_checkpoint=dict(enabled=False),
    # Data-parallel gradient buckets (LiBai's NCCL fusion settings): gradients are averaged
    # as DistributedDataParallel does, in their own dtype, in buckets of at most this many
    # MB and tensors, each all-reduced as soon as backward has filled it (overlapping the
    # rest of backward). See dist.exact_reduction for the exact alternative.
    nccl_fusion_threshold_mb=16,
    nccl_fusion_max_ops=24,
    # ZeRO: stage 1 shards optimizer state, 2 also gradients, 3 also parameters.
    zero_optimization=dict(enabled=False, stage=1),
    # save_top_k=k keeps the checkpoints of the k best evaluations (model_top_<iter>, listed
    # in output_dir/top_k.json); 0 = off.
    checkpointer=dict(period=5000, max_to_keep=100, save_model_after_n_epoch=None, save_top_k=0),
    test_micro_batch_size=32,
    evaluation=dict(
        enabled=True,
        evaluator=LazyCall(ClsEvaluator)(topk=(1, 5)),
        eval_period=5000,
        eval_after_n_epoch=None,
        eval_iter=int(1e5),
        eval_metric="Acc@1",
        eval_mode="max",
    ),
    # Stop when evaluation.eval_metric has not improved (per eval_mode) by more than
    # min_delta for `patience` evaluations in a row; a final checkpoint is written.
    early_stopping=dict(enabled=False, patience=3, min_delta=0.0),
    # K > 0: train on the first K batches over and over (does the model learn at all?).
    overfit_batches=0,
    # Weights & Biases, next to metrics.json and TensorBoard (rank 0): the same scalars at the
    # same iterations and the resolved config. mode: "offline" (no network; `wandb sync`
    # later) | "online" | "disabled". Needs the optional extra: pip install -e .[wandb]
    wandb=dict(enabled=False, project=None, name=None, tags=[], mode="offline"),
    load_weight="",
    # Write the console, metrics.json, TensorBoard and W&B every log_period iterations. The
    # losses reach the host only then (and on evaluated and checkpointed iterations): no
    # device sync per step. Each step's losses are still recorded, and checked finite.
    log_period=20,
    # Freeze the objects that exist before training out of Python's garbage collector while
    # training runs (`libai.engine.trainer.frozen_heap`): the collector then stops walking
    # the model, configs and hooks again each time a step's batch objects trigger it.
    gc_freeze=True,
    # The trainer fills in optimizer, max_iter and warmup_iter.
    scheduler=LazyCall(WarmupCosineLR)(warmup_factor=0.001, alpha=0.01, warmup_method="linear"),
    dist=dict(
        # None: inferred as world_size // (tensor_parallel_size * pipeline_parallel_size), so
        # one config runs on any number of processes; a value that disagrees with the world
        # size is an error (LiBai silently replaced it).
        data_parallel_size=None,
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        # Number of layers the pipeline splits (the model's layer count); needed when
        # pipeline_parallel_size > 1.
        pipeline_num_layers=None,
        # A pipeline stage id per layer, overriding the even split; None: even split.
        custom_pipeline_stage_id=None,
        # True: sum the micro-batch gradients in float64 in one buffer and all-reduce it
        # after backward (ZeRO: reduce-scatter in float64), so any split over data-parallel
        # ranks and micro-batches takes the same step bit for bit. It sends twice the bytes of the default float32 buckets and
        # does not overlap backward (measured in BENCHMARKS.md, ddp_comparison.py).
        exact_reduction=False,
    ),
    # Pipeline schedule when pipeline_parallel_size > 1: "GPipe" | "1F1B" | "Interleaved1F1B".
    pipeline=dict(schedule="1F1B"),
    # "auto": CUDA when present, else CPU. Or "cuda" / "cpu".
    device="auto",
    # Accepted and ignored: inputs go to the device of `device` above.
    input_placement_device="cuda",
    # OneFlow RDMA switch: accepted and ignored.
    rdma_enabled=True,
    seed=1234,
)
