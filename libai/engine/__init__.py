"""Training engine: the loop, its hooks and the default trainer."""
from libai.engine import hooks
from libai.config.arguments import default_argument_parser
from libai.engine.default import DefaultTrainer, default_setup
from libai.engine.trainer import EagerTrainer, PipelineTrainer, TrainerBase, default_batch_fn

__all__ = [
    "hooks",
    "DefaultTrainer",
    "default_argument_parser",
    "default_setup",
    "EagerTrainer",
    "PipelineTrainer",
    "TrainerBase",
    "default_batch_fn",
]
