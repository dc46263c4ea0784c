"""Run every bad-input case of `tests/test_bad_inputs.py` through `tools/train_net.py`, in
one process, and write what each one did to a JSON report.

    python tests/helpers/bad_input_driver.py WORKDIR REPORT.json [CASE ...]

Starting Python and torch costs seconds, so the cases share one process: each one parses
its command line with `default_argument_parser()` and calls `run_with_clear_errors(main,
args)` of `tools/train_net.py`, as the script does, with stderr captured and `SystemExit`
caught. An exception that escapes is what a real run would print as a traceback (status 1).
Between cases the driver undoes what a run leaves in the process: the log file handlers,
the layout and the one-process group.

Each case gets a folder `WORKDIR/<name>/` for the files it writes (configs, data) and an
output directory `WORKDIR/<name>/out`, filled beforehand with the files of a pretend
earlier run (or absent, for the cases that check it is not created), so that "the output
directory was left as it was" compares file names, sizes and modification times.

The table of cases lives here (not in the test) so that the test can list the names at
collection time without running anything; importing this module imports no torch.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
TINY_GPT = str(REPO / "tests/configs/tiny_gpt.py")
MNIST = str(REPO / "projects/mnist/config.py")
# Replaced by the case's folder in config paths, overrides and written files.
DIR = "{dir}"


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the files it needs, and a word its error must name."""

    name: str
    # Every one of these must appear in the `error:` line (it names the problem).
    keywords: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    config: str = TINY_GPT
    flags: tuple[str, ...] = ()
    # (path relative to the case folder, text) files written before the run.
    files: tuple[tuple[str, str], ...] = ()
    # Writes data files into the case folder (called with the folder).
    prepare: Optional[Callable[[Path], None]] = None
    # False: the output directory does not exist before the run, and must not after it.
    output_dir_exists: bool = True
    # Overrides that keep a run short if the bad input were accepted by mistake.
    base: tuple[str, ...] = ("train.train_iter=2",)


# --------------------------------------------------------------------------------------
# Data files the cases read
# --------------------------------------------------------------------------------------


def _write_tokens(folder: Path, name: str, docs: list[list[int]]) -> str:
    """An indexed dataset `folder/name.bin/.idx` of `docs` (lists of token ids); its prefix."""
    import numpy as np

    from libai.data.indexed import MMapIndexedDatasetBuilder

    prefix = str(folder / name)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for doc in docs:
        builder.add_item(np.asarray(doc, dtype=np.int64))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


def _good_tokens(folder: Path) -> str:
    """40 documents of 20 tokens in [0, 64): 49 windows of 16 tokens."""
    return _write_tokens(folder, "tokens", [[(7 * d + t) % 64 for t in range(20)] for d in range(40)])


def _truncate(path: str, size: int) -> None:
    """Cut the file at `path` to `size` bytes (a copy that stopped half-way)."""
    with open(path, "r+b") as f:
        f.truncate(size)


def prepare_tokens(folder: Path) -> None:
    _good_tokens(folder)


def prepare_idx_cut_in_header(folder: Path) -> None:
    _truncate(_good_tokens(folder) + ".idx", 12)


def prepare_idx_cut_in_arrays(folder: Path) -> None:
    prefix = _good_tokens(folder)
    _truncate(prefix + ".idx", os.path.getsize(prefix + ".idx") - 100)


def prepare_bin_cut(folder: Path) -> None:
    prefix = _good_tokens(folder)
    _truncate(prefix + ".bin", os.path.getsize(prefix + ".bin") // 2)


def prepare_bin_empty(folder: Path) -> None:
    _truncate(_good_tokens(folder) + ".bin", 0)


def prepare_idx_bad_magic(folder: Path) -> None:
    prefix = _good_tokens(folder)
    with open(prefix + ".idx", "r+b") as f:
        f.write(b"NOTANIDX!")


def prepare_idx_only(folder: Path) -> None:
    os.unlink(_good_tokens(folder) + ".bin")


def prepare_no_documents(folder: Path) -> None:
    _write_tokens(folder, "tokens", [])


def prepare_empty_documents(folder: Path) -> None:
    _write_tokens(folder, "tokens", [[] for _ in range(5)])


def prepare_three_windows(folder: Path) -> None:
    """49 tokens: three windows of 16, fewer than one micro-batch of 4."""
    _write_tokens(folder, "tokens", [list(range(49))])


def prepare_five_windows(folder: Path) -> None:
    """81 tokens: five windows, more than a micro-batch of 4, fewer than a global batch of 16."""
    _write_tokens(folder, "tokens", [[t % 64 for t in range(81)]])


def prepare_foreign_token_ids(folder: Path) -> None:
    """Token ids 55,000 and up, past GPT-2's 50,257 (data made with another tokenizer)."""
    _write_tokens(folder, "tokens", [[55000 + (20 * d + t) % 5000 for t in range(20)] for d in range(40)])


def _write_idx(path: Path, array, dtype_code: int = 0x08) -> None:
    """An MNIST IDX file (big-endian header: 0, 0, dtype code, ndim, dims)."""
    import struct

    header = struct.pack(">BBBB", 0, 0, dtype_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(">u1" if dtype_code == 0x08 else ">i4").tobytes())


def _mnist(folder: Path, count: int, labels: Optional[int] = None) -> Path:
    """`count` train and test images (and `labels` labels, default `count`) under folder/mnist."""
    import numpy as np

    root = folder / "mnist"
    root.mkdir()
    for prefix in ("train", "t10k"):
        _write_idx(root / f"{prefix}-images-idx3-ubyte", np.zeros((count, 28, 28), np.uint8))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(count if labels is None else labels) % 10)
    return root


def prepare_mnist_missing_labels(folder: Path) -> None:
    os.unlink(_mnist(folder, 64) / "train-labels-idx1-ubyte")


def prepare_mnist_truncated(folder: Path) -> None:
    images = _mnist(folder, 64) / "train-images-idx3-ubyte"
    _truncate(str(images), os.path.getsize(images) - 500)


def prepare_mnist_bad_magic(folder: Path) -> None:
    (_mnist(folder, 64) / "train-images-idx3-ubyte").write_bytes(b"\x1f\x8b not an idx file at all")


def prepare_mnist_label_count(folder: Path) -> None:
    _mnist(folder, 64, labels=60)


def prepare_mnist_empty(folder: Path) -> None:
    _mnist(folder, 0)


def prepare_mnist_tiny(folder: Path) -> None:
    _mnist(folder, 3)


def prepare_corrupt_checkpoint(folder: Path) -> None:
    """An output directory whose last checkpoint is not a checkpoint (for --resume)."""
    bad = folder / "out" / "model_0000009"
    bad.mkdir(parents=True)
    (bad / ".metadata").write_bytes(b"not a checkpoint")
    (folder / "out" / "last_checkpoint").write_text("model_0000009")


# --------------------------------------------------------------------------------------
# Config files the cases load
# --------------------------------------------------------------------------------------

# tiny_gpt with its synthetic tokens replaced by the indexed dataset {dir}/tokens.
TOKENS_CONFIG = f"""\
from libai.config import LazyCall, LazyConfig
from libai.data.datasets import GPT2Dataset

_base = LazyConfig.load({TINY_GPT!r})
train, optim, graph, model, dataloader = _base.train, _base.optim, _base.graph, _base.model, _base.dataloader
dataloader.train.dataset = [LazyCall(GPT2Dataset)(name="tokens", data_prefix="{DIR}/tokens", max_seq_length=16)]
del dataloader["test"]
"""


# TOKENS_CONFIG with GPT-2's tokenizer (shipped vocabulary files) and a model that fits it.
GPT2_TOKENS_CONFIG = TOKENS_CONFIG + """\
from omegaconf import OmegaConf
from libai.tokenizer import GPT2Tokenizer
from libai.tokenizer.offline import gpt2_vocab_files

_vocab, _merges = gpt2_vocab_files()
tokenization = OmegaConf.create()
tokenization.tokenizer = LazyCall(GPT2Tokenizer)(vocab_file=_vocab, merges_file=_merges)
model.vocab_size = 50304
"""


def _tiny_gpt_without(*names: str) -> str:
    """A config file: tiny_gpt minus the top-level keys `names`."""
    keep = [n for n in ("train", "optim", "graph", "model", "dataloader") if n not in names]
    return (
        "from libai.config import LazyConfig\n\n"
        f"_base = LazyConfig.load({TINY_GPT!r})\n"
        + "".join(f"{n} = _base.{n}\n" for n in keep)
    )


def _save_tiny_gpt_yaml(folder: Path, edit: Callable) -> None:
    """tiny_gpt saved as `folder/config.yaml` (as a run's config.yaml), after `edit(cfg)`."""
    from libai.config import LazyConfig

    cfg = LazyConfig.load(TINY_GPT)
    edit(cfg)
    LazyConfig.save(cfg, folder / "config.yaml")


def prepare_yaml_without_model(folder: Path) -> None:
    _save_tiny_gpt_yaml(folder, lambda cfg: cfg.pop("model"))


def prepare_yaml_without_dataloader(folder: Path) -> None:
    _save_tiny_gpt_yaml(folder, lambda cfg: cfg.pop("dataloader"))


def prepare_yaml_bad_model_target(folder: Path) -> None:
    _save_tiny_gpt_yaml(folder, lambda cfg: setattr(cfg.model, "_target_", "no.such.Model"))


def _python_config(name: str, source: str, *keywords: str, **extra: object) -> Case:
    """A case whose config is `source`, written to `{dir}/config.py`."""
    return Case(name, keywords, config=f"{DIR}/config.py", files=(("config.py", source),), **extra)


def _yaml_config(name: str, source: str, *keywords: str, suffix: str = "yaml") -> Case:
    """A case whose config file `{dir}/config.<suffix>` holds `source` (it fails to load)."""
    return Case(name, keywords, config=f"{DIR}/config.{suffix}", files=((f"config.{suffix}", source),), base=())


def config_file_cases() -> list[Case]:
    """Config files that cannot be loaded or lack what the trainer needs."""
    tiny = Path(TINY_GPT).read_text()
    return [
        Case("config_file_missing", ("no/such/config.py",), config="no/such/config.py"),
        Case("config_file_not_given", ("--config-file",), config=""),
        Case("config_file_is_a_folder", ("is a folder",), config=DIR),
        _yaml_config("config_file_wrong_suffix", "train = dict()\n", ".yaml", suffix="txt"),
        _python_config("syntax_error", "train = dict(\nmodel = 1\n", "config.py", "line"),
        _python_config("syntax_error_in_tiny_gpt_copy", tiny.replace("train.update(", "train.update((", 1),
                       "config.py", "line"),
        _python_config("indentation_error", "x = 1\n  y = 2\n", "config.py", "indent"),
        _python_config("import_missing_module", "import no_such_module_xyz\n" + tiny, "no_such_module_xyz"),
        _python_config("import_missing_name", "from libai.models import NoSuchModel\n" + tiny, "NoSuchModel"),
        _python_config("relative_import_missing", "from .common.no_train import train\n", "common"),
        _python_config("name_error", tiny + "optim.lr = learning_rate\n", "learning_rate"),
        _python_config("no_model", _tiny_gpt_without("model"), "model"),
        _python_config("no_dataloader", _tiny_gpt_without("dataloader"), "dataloader"),
        _python_config("no_train", _tiny_gpt_without("train"), "train"),
        _python_config("no_optim", _tiny_gpt_without("optim"), "optim"),
        _python_config("empty_config", "", "train"),
        _python_config("model_target_missing", tiny.replace("LazyCall(TinyGPT)", "LazyCall('tests.helpers.tiny_gpt.NoGPT')"),
                       "NoGPT"),
        _python_config("model_unknown_argument", tiny.replace("max_seq_length=16)", "max_seq_length=16, hidden=3)"),
                       "hidden"),
        _python_config("model_missing_argument", tiny + "import torch\nmodel = LazyCall(torch.nn.Linear)(in_features=4)\n",
                       "out_features"),
        _yaml_config("yaml_does_not_parse", "train:\n  output_dir: [unclosed\n  train_iter: 3\n", "config.yaml", "line 3"),
        _yaml_config("yaml_bad_indent", "train:\n  a: 1\n   b: 2\n", "config.yaml", "line 3"),
        _yaml_config("yaml_tab", "train:\n\ta: 1\n", "config.yaml", "line 2"),
        _yaml_config("yaml_is_a_list", "- 1\n- 2\n", "mapping"),
        Case("yaml_no_model", ("model",), config=f"{DIR}/config.yaml", prepare=prepare_yaml_without_model),
        Case("yaml_no_dataloader", ("dataloader",), config=f"{DIR}/config.yaml", prepare=prepare_yaml_without_dataloader),
        Case("yaml_model_target_missing", ("no.such.Model",), config=f"{DIR}/config.yaml",
             prepare=prepare_yaml_bad_model_target),
        _yaml_config("pickle_not_a_pickle", "this is not a pickle\n", "config.pkl", suffix="pkl"),
    ]


# --------------------------------------------------------------------------------------
# Command-line overrides
# --------------------------------------------------------------------------------------


def override_syntax_cases() -> list[Case]:
    """Overrides that are not `key=value` with an existing key."""
    return [
        Case("unknown_key", ("train.train_itr", "train.train_iter"), ("train.train_itr=5",)),
        Case("unknown_top_level_key", ("trian",), ("trian.train_iter=5",)),
        Case("unknown_dist_key", ("tensor_paralel_size", "tensor_parallel_size"), ("train.dist.tensor_paralel_size=2",)),
        Case("unknown_model_argument", ("model.hiden_size",), ("model.hiden_size=8",)),
        Case("unknown_optim_key", ("optim.lrr",), ("optim.lrr=0.1",)),
        Case("list_index_out_of_range", ("dataloader.test.5",), ("dataloader.test.5.num_workers=0",)),
        Case("key_below_a_value", ("train.train_iter",), ("train.train_iter.x=1",)),
        Case("override_without_equals", ("key=value",), ("train.train_iter",)),
        Case("override_empty_key", ("key=value",), ("=5",)),
        Case("flag_after_overrides", ("--resume",), ("train.log_period=1", "--resume")),
        Case("unknown_flag", ("--no-such-flag",), flags=("--no-such-flag",)),
        Case("added_model_argument", ("hidden",), ("+model.hidden=3",)),
        Case("unknown_key_fresh_output_dir", ("train.train_itr",), ("train.train_itr=5",), output_dir_exists=False),
    ]


# Keys of tiny_gpt that hold a size or count, and what a run needs of them. (The model's
# own sizes are checked only for their type here: their ranges are the model's business.)
POSITIVE_INT_KEYS = (
    "train.train_micro_batch_size",
    "train.global_batch_size",
    "train.test_micro_batch_size",
    "train.log_period",
    "train.checkpointer.period",
    "train.dist.tensor_parallel_size",
    "train.dist.pipeline_parallel_size",
)
NON_NEGATIVE_INT_KEYS = (
    "train.train_iter",
    "train.train_epoch",
    "train.evaluation.eval_period",
    "dataloader.train.num_workers",
)
NUMBER_KEYS = ("optim.lr", "optim.weight_decay", "train.warmup_ratio", "model.hidden_size", "model.num_layers")
# Evaluation is off in tiny_gpt: its settings are read only when it is on.
_CONTEXT = {"train.evaluation.eval_period": ("train.evaluation.enabled=True",)}
# The loader builder names its own argument (it does not know where in the config it is).
_KEYWORD = {"dataloader.train.num_workers": "num_workers"}


def _case_name(key: str, label: str) -> str:
    """`train.train_iter`, "string" -> `train_train_iter_string`."""
    return f"{key.replace('.', '_')}_{label}"


def wrong_value_cases() -> list[Case]:
    """A table of keys x bad values: strings for numbers, lists, fractions, zero, negatives."""
    table = [(key, "string", "abc") for key in POSITIVE_INT_KEYS + NON_NEGATIVE_INT_KEYS + NUMBER_KEYS]
    table += [(key, "negative", "-3") for key in POSITIVE_INT_KEYS + NON_NEGATIVE_INT_KEYS]
    # A fraction of an epoch is a fine length of training; of anything else, it is not.
    table += [(key, "fraction", "2.5") for key in POSITIVE_INT_KEYS + NON_NEGATIVE_INT_KEYS if key != "train.train_epoch"]
    table += [(key, "zero", "0") for key in POSITIVE_INT_KEYS]
    table += [(key, "list", "[1, 2]") for key in ("train.train_iter", "train.train_micro_batch_size", "optim.lr", "train.seed")]
    cases = [
        Case(_case_name(key, label), (_KEYWORD.get(key, key),), _CONTEXT.get(key, ()) + (f"{key}={value}",))
        for key, label, value in table
    ]
    cases += [
        Case("optim_lr_negative", ("lr",), ("optim.lr=-0.1",)),
        Case("optim_weight_decay_negative", ("weight_decay",), ("optim.weight_decay=-1",)),
        Case("optim_betas_string", ("betas",), ("optim.betas=abc",)),
        Case("train_warmup_ratio_negative", ("train.warmup_ratio",), ("train.warmup_ratio=-0.5",)),
        Case("train_warmup_ratio_above_one", ("train.warmup_ratio",), ("train.warmup_ratio=1.5",)),
        Case("train_amp_enabled_string", ("train.amp.enabled",), ("train.amp.enabled=maybe",)),
        Case("train_amp_dtype_unknown", ("train.amp.dtype",), ("train.amp.enabled=True", "train.amp.dtype=int8")),
        Case("train_device_unknown", ("train.device",), ("train.device=tpu",)),
        Case("train_scheduler_warmup_method", ("warmup_method",), ("train.scheduler.warmup_method=cubic",)),
        Case("train_seed_string", ("train.seed",), ("train.seed=abc",)),
        Case("train_output_dir_list", ("train.output_dir",), ("train.output_dir=[1, 2]",)),
        Case("load_weight_missing", ("no-such-weights",), ("train.load_weight={dir}/no-such-weights",)),
        Case("resume_corrupt_checkpoint", ("model_0000009",), flags=("--resume",), prepare=prepare_corrupt_checkpoint),
    ]
    return cases


def layout_cases() -> list[Case]:
    """Layouts and batch sizes that do not fit one process."""
    return [
        Case("tensor_parallel_not_dividing_world", ("tensor_parallel_size", "world size (1)"),
             ("train.dist.tensor_parallel_size=2",)),
        Case("pipeline_parallel_not_dividing_world", ("pipeline_parallel_size", "world size (1)"),
             ("train.dist.pipeline_parallel_size=2",)),
        Case("data_parallel_not_matching_world", ("data_parallel_size",), ("train.dist.data_parallel_size=4",)),
        Case("data_parallel_zero", ("data_parallel_size",), ("train.dist.data_parallel_size=0",)),
        Case("global_batch_not_a_multiple", ("global_batch_size", "multiple"), ("train.global_batch_size=10",)),
        Case("global_batch_smaller_than_micro", ("global_batch_size",), ("train.global_batch_size=2",)),
        Case("batch_triple_inconsistent", ("global_batch_size",),
             ("train.global_batch_size=16", "train.num_accumulation_steps=3")),
        Case("micro_batch_none", ("train_micro_batch_size",), ("train.train_micro_batch_size=None",)),
        Case("accumulation_zero", ("num_accumulation_steps",),
             ("train.train_micro_batch_size=None", "train.num_accumulation_steps=0")),
        Case("custom_stage_ids_wrong_length", ("custom_pipeline_stage_id",),
             ("train.dist.custom_pipeline_stage_id=[0, 0]",)),
        Case("layout_fresh_output_dir", ("tensor_parallel_size",), ("train.dist.tensor_parallel_size=2",),
             output_dir_exists=False),
    ]


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def _tokens_case(name: str, prepare: Optional[Callable[[Path], None]], *keywords: str, **extra: object) -> Case:
    """tiny_gpt reading the indexed dataset `{dir}/tokens` that `prepare` writes (or not)."""
    return _python_config(name, TOKENS_CONFIG, *keywords, prepare=prepare, **extra)


def _mnist_case(name: str, prepare: Optional[Callable[[Path], None]], *keywords: str) -> Case:
    """The MNIST project reading the IDX files `{dir}/mnist` that `prepare` writes (or not)."""
    overrides = ("dataloader.train.dataset.0.root={dir}/mnist", "dataloader.test.0.dataset.root={dir}/mnist",
                 "train.train_epoch=0")
    return Case(name, keywords, overrides, config=MNIST, prepare=prepare)


def data_cases() -> list[Case]:
    """Missing, truncated, corrupt, empty and too small data files."""
    return [
        _tokens_case("tokens_missing", None, "tokens.idx"),
        _tokens_case("tokens_bin_missing", prepare_idx_only, "tokens.bin"),
        _tokens_case("tokens_idx_cut_in_header", prepare_idx_cut_in_header, "tokens.idx", "truncated"),
        _tokens_case("tokens_idx_cut_in_arrays", prepare_idx_cut_in_arrays, "tokens.idx", "truncated"),
        _tokens_case("tokens_bin_truncated", prepare_bin_cut, "tokens.bin", "truncated"),
        _tokens_case("tokens_bin_empty", prepare_bin_empty, "tokens.bin", "truncated"),
        _tokens_case("tokens_idx_bad_magic", prepare_idx_bad_magic, "tokens.idx"),
        _tokens_case("tokens_no_documents", prepare_no_documents, "tokens", "0 tokens"),
        _tokens_case("tokens_empty_documents", prepare_empty_documents, "tokens", "0 tokens"),
        _python_config("tokens_from_another_tokenizer", GPT2_TOKENS_CONFIG, "tokens", "token id", "tokenizer",
                       prepare=prepare_foreign_token_ids),
        _tokens_case("tokens_fewer_than_micro_batch", prepare_three_windows, "3 samples"),
        _tokens_case("tokens_fewer_than_global_batch", prepare_five_windows, "5 samples", "global_batch_size"),
        _tokens_case("tokens_missing_fresh_output_dir", None, "tokens.idx", output_dir_exists=False),
        _tokens_case("tokens_sequence_length_zero", prepare_tokens, "max_seq_length",
                     base=("train.train_iter=2", "dataloader.train.dataset.0.max_seq_length=0")),
        Case("synthetic_dataset_empty", ("empty",), ("dataloader.train.dataset.0.size=0",)),
        Case("synthetic_dataset_smaller_than_batch", ("2 samples",), ("dataloader.train.dataset.0.size=2",)),
        Case("train_dataset_list_empty", ("dataset",), ("dataloader.train.dataset=[]",)),
        Case("train_dataset_none", ("dataset",), ("dataloader.train.dataset=None",)),
        _mnist_case("mnist_root_missing", None, "mnist"),
        _mnist_case("mnist_labels_missing", prepare_mnist_missing_labels, "train-labels-idx1-ubyte"),
        _mnist_case("mnist_images_truncated", prepare_mnist_truncated, "train-images-idx3-ubyte", "truncated"),
        _mnist_case("mnist_images_bad_magic", prepare_mnist_bad_magic, "train-images-idx3-ubyte"),
        _mnist_case("mnist_label_count_differs", prepare_mnist_label_count, "train-labels-idx1-ubyte"),
        _mnist_case("mnist_empty", prepare_mnist_empty, "empty"),
        _mnist_case("mnist_smaller_than_batch", prepare_mnist_tiny, "3 samples"),
    ]


def all_cases() -> list[Case]:
    """Every case, in the order the driver runs them; names are unique."""
    cases = config_file_cases() + override_syntax_cases() + wrong_value_cases() + layout_cases() + data_cases()
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    return cases


# --------------------------------------------------------------------------------------
# Running a case in this process
# --------------------------------------------------------------------------------------


def _fill(text: str, folder: Path) -> str:
    """`text` with the case folder in place of `{dir}`."""
    return text.replace(DIR, str(folder))


def earlier_run(out: Path) -> None:
    """What a finished earlier run left in `out` (logs, metrics, its config, a checkpoint):
    the files a bad run must not touch."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text('{"iteration": 19, "total_loss": 1.5}\n')
    (out / "config.yaml").write_text("train:\n  train_iter: 20\n")
    (out / "log.txt").write_text("[earlier run] done\n")
    if not (out / "last_checkpoint").exists():
        (out / "model_0000019").mkdir()
        (out / "model_0000019" / ".metadata").write_bytes(b"earlier checkpoint")
        (out / "last_checkpoint").write_text("model_0000019")


def snapshot(folder: Path) -> Optional[dict]:
    """{relative path: [size, mtime_ns]} of every file under `folder`; None if it does not exist."""
    if not folder.exists():
        return None
    found = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        found[str(path.relative_to(folder))] = [stat.st_size if path.is_file() else -1, stat.st_mtime_ns]
    return found


def _argv(case: Case, folder: Path) -> list[str]:
    """The command line of `tools/train_net.py` for `case` (output_dir first, as tests' train_sh)."""
    argv = ["--config-file", _fill(case.config, folder)] if case.config else []
    argv += list(case.flags) + [f"train.output_dir={folder / 'out'}"]
    return argv + [_fill(o, folder) for o in case.base + case.overrides]


def _load_train_net():
    """`tools/train_net.py` as a module (it is a script, not in a package)."""
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call_entry_point(argv: list[str]) -> tuple[int, str]:
    """Run `tools/train_net.py argv` as the script does; (exit status, stderr)."""
    from libai.engine import default_argument_parser
    from libai.engine.default import run_with_clear_errors

    stderr = io.StringIO()
    # catch_warnings resets the "already shown" registry: a real run would show each
    # warning again. The filters stay Python's defaults, as in a real run.
    with contextlib.redirect_stderr(stderr), warnings.catch_warnings():
        try:
            args = default_argument_parser().parse_args(argv)
            run_with_clear_errors(TRAIN_NET.main, args)
            status = 0
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # what Python prints when a script dies of an exception
            traceback.print_exc(file=stderr)
            status = 1
    return status, stderr.getvalue()


def _reset_process() -> None:
    """Undo what a run leaves in the process: log files, the layout, the process group."""
    import torch.distributed

    from libai.utils import distributed as dist

    logger = logging.getLogger("libai")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
            handler.close()
    dist._DIST_UTIL = None
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_case(case: Case, root: Path) -> dict:
    """Run one case in its folder under `root`; what it printed and did to its output directory."""
    folder = root / case.name
    folder.mkdir(parents=True)
    for relative, text in case.files:
        (folder / relative).write_text(_fill(text, folder))
    if case.prepare is not None:
        case.prepare(folder)
    out = folder / "out"
    if case.output_dir_exists:
        earlier_run(out)
    before = snapshot(out)
    argv = _argv(case, folder)
    try:
        status, stderr = _call_entry_point(argv)
    finally:
        _reset_process()
    return {"name": case.name, "argv": argv, "status": status, "stderr": stderr,
            "output_before": before, "output_after": snapshot(out)}


def main(argv: list[str]) -> int:
    """Run the cases named in argv[2:] (all by default); write the report to argv[1]."""
    root, report = Path(argv[0]), Path(argv[1])
    wanted = set(argv[2:])
    results = [run_case(case, root) for case in all_cases() if not wanted or case.name in wanted]
    report.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    # Relative paths in a case (a default output_dir, ...) land in the work folder.
    os.makedirs(sys.argv[1], exist_ok=True)
    os.chdir(sys.argv[1])
    TRAIN_NET = _load_train_net()
    sys.exit(main(sys.argv[1:]))
