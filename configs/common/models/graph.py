"""LiBai's default `graph` config: graph mode = the model's step compiled with torch.compile.

`enabled=True` trains through `train_graph` (a compiled GraphBase); set
`graph.enabled = False` for eager mode. The trainer fills in model, optimizer and
lr_scheduler of `train_graph` and the model of `eval_graph`.
"""
from libai.config import LazyCall
from libai.models.utils.graph_base import GraphBase

graph = dict(
    enabled=True,
    # OneFlow graph debug level: accepted and ignored (-1: off).
    debug=-1,
    # OneFlow auto-parallel search: accepted and ignored.
    auto_parallel=dict(
        enabled=False,
        enable_auto_parallel_ignore_user_sbp_config=False,
        trunk_algo=True,
        sbp_collector=False,
    ),
    train_graph=LazyCall(GraphBase)(is_train=True),
    # OneFlow global-tensor graph mode: accepted and ignored.
    global_mode=dict(enabled=False),
    eval_graph=LazyCall(GraphBase)(is_train=False),
)
