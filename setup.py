"""Install LiBai on PyTorch: the `libai` package plus the packaged `configs/`."""
from setuptools import find_packages, setup

setup(
    name="libai",
    version="0.1.0",
    description="LiBai's lazy-config trainer with data, tensor and pipeline parallelism, on PyTorch",
    python_requires=">=3.9",
    packages=find_packages(include=["libai", "libai.*"]) + ["libai.config.configs"],
    # `configs/` lives at the repository root (as in LiBai) and is installed as
    # `libai/config/configs`, so `get_config("common/train.py")` works from any directory.
    package_dir={"libai.config.configs": "configs"},
    package_data={"libai.config.configs": ["**/*.py", "**/*.yaml"]},
    install_requires=[
        # The ranges the test suite passes on (it was run on torch 2.13 and omegaconf 2.4);
        # libai.engine.pipeline relies on torch.distributed.pipelining details that
        # tests/test_pipeline.py checks, so widen these only after the suite passes.
        "torch>=2.13,<2.14",
        "numpy",
        "omegaconf>=2.4,<2.5",
        "pyyaml",
        "cloudpickle",
        "safetensors",
        "tensorboard",
        "tqdm",
        "tokenizers",
        # Checkpoint file checksums (xxh3: ~10 GB/s, so verifying costs a few % of a save).
        "xxhash",
        # Image files for libai.inference.ImageClassificationPipeline.
        "pillow",
        # output_dir/curves.png (drawn with matplotlib's object API; pyplot is never imported).
        "matplotlib",
    ],
    # transformers is the reference the generation tests compare with; the project never
    # imports it at run time.
    # wandb: train.wandb's Weights & Biases writer (pip install -e .[wandb]).
    extras_require={"test": ["pytest", "transformers>=4.56", "ruff"], "wandb": ["wandb"]},
)
