"""Shared machinery of the Hugging Face weight loaders: files, name maps, shards, export.

A model family describes its conversion once, as a list of `Entry`s: one LiBai parameter
and the Hugging Face tensor(s) it is made of, with a `kind` that says how (a plain copy, a
Conv1D transpose, q/k/v fused into LiBai's per-head layout, ...). Import and export walk
the same list in opposite directions, so the two cannot drift apart.

Loading works under any parallel layout: every rank reads the checkpoint (one safetensors
file, shards, or `pytorch_model.bin`) tensor by tensor and keeps its own shard of each
DTensor parameter (`distribute_tensor(..., src_data_rank=None)`); parameters of another
pipeline stage are empty shells on a rank and are skipped, their tensors never read. Export
gathers every parameter (`full_tensor()` within its stage, then to rank 0 across stages)
and rank 0 writes `config.json` + `model.safetensors` in Hugging Face names.
"""
from __future__ import annotations

import collections.abc
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from libai.config.instantiate import locate
from libai.layers.utils import full_tensor
from libai.utils import distributed as dist

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class HuggingFaceCheckpointError(ValueError):
    """A Hugging Face checkpoint that cannot be loaded into (or written from) a LiBai model."""


# --------------------------------------------------------------------------------------
# Name maps
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One LiBai parameter and the Hugging Face tensors it is made of.

    `libai` is relative to the base model (`BertModel`, `GPTModel`) when `base` is True and
    relative to the whole model otherwise (heads); `hf` names are relative to Hugging Face's
    base model (without "bert." / "transformer.") when `base` is True. `kind` names a pair
    of conversions in `CONVERSIONS`. `optional` entries may be absent from a checkpoint
    (the parameter keeps its initialisation, with a warning).
    """

    libai: str
    hf: tuple[str, ...]
    kind: str = "copy"
    base: bool = True
    optional: bool = False


def _per_head(qkv: torch.Tensor, num_heads: int, parts: int = 3) -> torch.Tensor:
    """[q; k; v] blocks on dim 0 -> LiBai's [heads, parts, head_size] order on dim 0."""
    rest = qkv.shape[1:]
    head_size = qkv.shape[0] // (parts * num_heads)
    return qkv.reshape(parts, num_heads, head_size, *rest).transpose(0, 1).reshape(qkv.shape)


def _blocks(fused: torch.Tensor, num_heads: int, parts: int = 3) -> torch.Tensor:
    """Inverse of `_per_head`: LiBai's per-head order -> [q; k; v] blocks on dim 0."""
    rest = fused.shape[1:]
    head_size = fused.shape[0] // (parts * num_heads)
    return fused.reshape(num_heads, parts, head_size, *rest).transpose(0, 1).reshape(fused.shape)


def _transpose(t: torch.Tensor) -> torch.Tensor:
    # Hugging Face's Conv1D stores (in, out); a linear layer (out, in). Biases pass as they are.
    return t.t() if t.dim() == 2 else t


# kind -> (to LiBai: (hf tensors, num_heads) -> tensor, to HF: (tensor, num_heads) -> hf tensors)
Conversion = tuple[Callable[[list, int], torch.Tensor], Callable[[torch.Tensor, int], tuple]]
CONVERSIONS: dict[str, Conversion] = {
    "copy": (lambda ts, h: ts[0], lambda t, h: (t,)),
    # Separate q, k, v linears (BERT) <-> one fused per-head query_key_value.
    "qkv": (lambda ts, h: _per_head(torch.cat(ts, dim=0), h), lambda t, h: tuple(_blocks(t, h).chunk(3, dim=0))),
    # A Conv1D weight (GPT-2's c_proj, c_fc) <-> a linear weight.
    "conv1d": (lambda ts, h: _transpose(ts[0]), lambda t, h: (_transpose(t),)),
    # GPT-2's fused Conv1D c_attn ([q | k | v] on the output dim) <-> per-head query_key_value.
    "conv1d_qkv": (lambda ts, h: _per_head(_transpose(ts[0]), h), lambda t, h: (_transpose(_blocks(t, h)),)),
}


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


# The weight files a Hugging Face folder may hold, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def read_checkpoint(path: Union[str, os.PathLike]) -> tuple[dict, "CheckpointWeights"]:
    """(config.json as a dict, the folder's weights) of a Hugging Face checkpoint folder.

    The weights are one `model.safetensors`, shards listed in `model.safetensors.index.json`,
    or the same as `pytorch_model.bin` (read with `torch.load(weights_only=True)`, which runs
    no pickled code). They are read lazily, tensor by tensor (see `CheckpointWeights`).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise HuggingFaceCheckpointError(
            f"Hugging Face checkpoint folder {str(folder)!r} does not exist: give the folder "
            f"that holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise HuggingFaceCheckpointError(f"{str(config_path)!r} is missing: a Hugging Face checkpoint "
                                         f"folder holds {CONFIG_NAME} and its weights ({WEIGHTS_NAME} or shards)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HuggingFaceCheckpointError(f"{str(config_path)!r} is not valid JSON ({err})") from None
    return config, CheckpointWeights.open(folder)


class CheckpointWeights(collections.abc.Mapping):
    """The tensors of a Hugging Face checkpoint folder by name, read when asked for.

    A safetensors tensor is read alone from its file (`safe_open`); a `.bin` file is
    memory-mapped once (`torch.load(mmap=True, weights_only=True)`), so its pages are read
    as tensors are used. A loader converting one parameter at a time therefore holds one
    full tensor at a time, not the whole model.
    """

    def __init__(
        self,
        files: Mapping[str, Path],
        names: Optional[Mapping[str, str]] = None,
        handles: Optional[dict[Path, Any]] = None,
    ) -> None:
        self._files = dict(files)  # name -> file holding it
        self._names = dict(names) if names is not None else {n: n for n in self._files}  # name -> name in its file
        # file -> its open reader, shared with `renamed` views so each file is opened once
        self._open: dict[Path, Any] = handles if handles is not None else {}

    @classmethod
    def open(cls, folder: Path) -> "CheckpointWeights":
        """The weights of `folder` (see `read_checkpoint`)."""
        found = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
        if found is None:
            raise HuggingFaceCheckpointError(
                f"{str(folder)!r} holds no weights: a Hugging Face checkpoint folder has one of {', '.join(WEIGHT_FILES)}"
            )
        if found.name.endswith(".index.json"):
            return cls(_index_files(found))
        handle = _open_weight_file(found)  # its names come from the header (or the mapped .bin)
        return cls({name: found for name in handle.keys()}, handles={found: handle})

    def renamed(self, rename: Callable[[str], str]) -> "CheckpointWeights":
        """The same tensors under the names `rename(name)` (nothing is read)."""
        return CheckpointWeights(
            {rename(n): f for n, f in self._files.items()}, {rename(n): self._names[n] for n in self._files}, self._open
        )

    def __getitem__(self, name: str) -> torch.Tensor:
        path = self._files[name]
        handle = self._open.get(path)
        if handle is None:
            handle = self._open[path] = _open_weight_file(path)
        if isinstance(handle, dict):
            return handle[self._names[name]]
        return handle.get_tensor(self._names[name])

    def __iter__(self):
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, name: object) -> bool:
        return name in self._files


def _index_files(index_path: Path) -> dict[str, Path]:
    """name -> shard file of a `*.index.json` (every shard must be there)."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise HuggingFaceCheckpointError(f"{str(index_path)!r} is not a shard index with a weight_map ({err})") from None
    files = {name: index_path.parent / shard for name, shard in weight_map.items()}
    missing = sorted({str(f) for f in files.values() if not f.is_file()})
    if missing:
        raise HuggingFaceCheckpointError(
            f"{len(missing)} shard(s) listed in {index_path.name} are missing, e.g. {missing[0]!r}: download every shard"
        )
    return files


def _open_weight_file(path: Path) -> Any:
    """A safetensors reader, or the memory-mapped dict of a .bin file."""
    from safetensors import SafetensorError, safe_open

    if path.suffix == ".bin":
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is one message
            raise HuggingFaceCheckpointError(
                f"{str(path)!r} cannot be read as PyTorch weights with weights_only=True ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}): convert it to safetensors"
            ) from None
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:
        raise HuggingFaceCheckpointError(f"{str(path)!r} cannot be read as safetensors ({err})") from None


def write_checkpoint(out_dir: Union[str, os.PathLike], config: dict, state: Mapping[str, torch.Tensor]) -> None:
    """Write config.json and model.safetensors into `out_dir`, each whole or not at all."""
    from safetensors.torch import save_file

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # Separate, contiguous copies: safetensors refuses shared or strided storage.
    tensors = {name: t.detach().contiguous().clone() for name, t in state.items()}
    _atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    _atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _atomic_write(target: Path, write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same folder, then rename it over `target`."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------------------
# Parameters <-> full tensors, under any layout
# --------------------------------------------------------------------------------------


def find_base_prefix(model: nn.Module, base_class: type) -> str:
    """The state-dict prefix of the (first) `base_class` module in `model` ("" if it is `model`)."""
    for name, module in model.named_modules():
        if isinstance(module, base_class):
            return f"{name}." if name else ""
    raise HuggingFaceCheckpointError(
        f"{type(model).__name__} contains no {base_class.__name__}: this loader handles "
        f"{base_class.__name__} and the models built around it"
    )


@torch.no_grad()
def assign_full_tensor(param: torch.Tensor, full: torch.Tensor, name: str) -> None:
    """Copy this rank's shard of the full tensor `full` into `param` (a DTensor or plain tensor).

    Parameters that this rank does not hold (another pipeline stage's) are left alone.
    """
    if tuple(full.shape) != tuple(param.shape):
        raise HuggingFaceCheckpointError(
            f"{name}: the checkpoint gives shape {tuple(full.shape)} but the model has "
            f"{tuple(param.shape)}: the model config does not match the checkpoint's config.json"
        )
    if not dist.holds(param):
        return
    if isinstance(param, DTensor):
        full = full.to(device=param.to_local().device, dtype=param.dtype)
        # Every rank holds the full tensor, so each keeps its own slice without communication.
        shard = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
        param.to_local().copy_(shard.to_local())
    else:
        param.copy_(full.to(device=param.device, dtype=param.dtype))


@torch.no_grad()
def gather_full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of `model` as a full CPU tensor, on global rank 0 ({} on other ranks).

    A collective: call it on every rank. Tensor-parallel shards are gathered within each
    pipeline stage (`full_tensor()`), then one rank per stage sends its stage's tensors.
    """
    local: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if not dist.holds(param):
            continue
        full = full_tensor(param)
        local[name] = full.detach().cpu()
    if not (torch_dist.is_initialized() and torch_dist.get_world_size() > 1):
        return local
    # Only one replica per stage needs to send: the (dp 0, tp 0) rank of each stage.
    sender = dist.get_data_parallel_rank() == 0 and dist.get_tensor_parallel_rank() == 0
    gathered: Optional[list] = [None] * torch_dist.get_world_size() if dist.get_rank() == 0 else None
    torch_dist.gather_object(local if sender else {}, gathered, dst=0)
    if dist.get_rank() != 0:
        return {}
    merged: dict[str, torch.Tensor] = {}
    for part in gathered:
        # A weight held by two stages (tied word embeddings) arrives twice, equal.
        for name, tensor in part.items():
            merged.setdefault(name, tensor)
    return merged


def run_on_rank0(action: Callable[[], Any]) -> Any:
    """Run `action` on global rank 0 only; every rank returns its result or raises its error."""
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = action()
        except Exception as err:  # noqa: BLE001 - re-raised on every rank below
            error = err
    outcome = dist.broadcast_object((result, error) if dist.get_rank() == 0 else None, src=0)
    result, error = outcome
    if error is not None:
        raise error
    return result


# --------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------


class ModelLoaderHuggerFace:
    """Load a Hugging Face checkpoint folder into a LiBai model (LiBai's loader API).

    `Loader(model, libai_cfg, pretrained_model_path, **kwargs).load()` reads `config.json`
    and `model.safetensors`, builds the LiBai config (`libai_cfg`, then the architecture
    from config.json, then `kwargs`), builds `model(cfg)` (or uses `model` when it is
    already an `nn.Module`), converts the weights and loads them. Returns the model.

    Subclasses set `base_model_class` and `hf_base_prefix` and implement
    `config_from_hf`, `config_to_hf`, `entries` and `ignored`; `architecture_keys` and
    `fixed_config` say which config values an override may not change.

    Args:
        model: a LiBai model class called with the config (e.g. `BertModel`,
            `BertForPreTraining`, or its dotted path), or an already built model to load into.
        libai_cfg: the LiBai model config to start from (e.g. `cfg` of
            configs/common/models/bert.py); None: start from an empty one.
        pretrained_model_path: the Hugging Face checkpoint folder.
        kwargs: config values that override everything else; an override of an
            architecture value that disagrees with config.json is an error.
    """

    base_model_class: type = nn.Module
    hf_base_prefix: str = ""
    # Keys of config.json that describe the weights' shapes (overrides must agree).
    architecture_keys: tuple[str, ...] = ()
    # LiBai config values a Hugging Face model always has (overrides must agree).
    fixed_config: dict = {}

    def __init__(
        self,
        model: Union[str, type, Callable[..., nn.Module], nn.Module],
        libai_cfg: Optional[Mapping],
        pretrained_model_path: Union[str, os.PathLike],
        **kwargs: Any,
    ) -> None:
        # A dotted path ("libai.models.BertForClassification") keeps configs plain YAML.
        self.model = locate(model) if isinstance(model, str) else model
        # A shallow, plain copy: the loader adds keys without touching the caller's config.
        self.libai_cfg = dict(libai_cfg.items()) if libai_cfg is not None else {}
        self.pretrained_model_path = pretrained_model_path
        self.kwargs = kwargs

    # ---- to be provided by subclasses ----

    def config_from_hf(self, hf_config: Mapping) -> dict:
        """LiBai config values read from a Hugging Face config.json."""
        raise NotImplementedError

    @classmethod
    def config_to_hf(cls, model: nn.Module, base: nn.Module) -> dict:
        """A Hugging Face config.json for `model` (whose base model is `base`)."""
        raise NotImplementedError

    @classmethod
    def entries(cls, cfg: Mapping) -> list[Entry]:
        """The name map for a model with LiBai config `cfg`."""
        raise NotImplementedError

    @classmethod
    def ignored(cls, hf_name: str) -> bool:
        """Whether a Hugging Face tensor carries no weight of its own (buffers, tied copies)."""
        return False

    # ---- loading ----

    def load(self) -> nn.Module:
        """Build (or take) the model and load the checkpoint's weights into it; returns it."""
        hf_config, hf_state = read_checkpoint(self.pretrained_model_path)
        cfg = self.build_config(hf_config)
        model = self.model if isinstance(self.model, nn.Module) else self.model(cfg)
        prefix = find_base_prefix(model, self.base_model_class)
        self._check_built_model(model, prefix, cfg)
        self.load_state(model, prefix, cfg, self._strip_hf_prefix(hf_state))
        logger.info("loaded Hugging Face weights from %s into %s", self.pretrained_model_path, type(model).__name__)
        return model

    def build_config(self, hf_config: Mapping) -> dict:
        """`libai_cfg`, updated by config.json, then by the keyword overrides (checked)."""
        from_hf = {**self.config_from_hf(hf_config), **self.fixed_config}
        for key, value in self.kwargs.items():
            if key in from_hf and key in self.architecture_keys + tuple(self.fixed_config) and value != from_hf[key]:
                raise HuggingFaceCheckpointError(
                    f"{key}={value!r} disagrees with the checkpoint ({from_hf[key]!r} from "
                    f"{CONFIG_NAME}): drop the override or load a matching checkpoint"
                )
        return {**self.libai_cfg, **from_hf, **self.kwargs}

    def _check_built_model(self, model: nn.Module, prefix: str, cfg: Mapping) -> None:
        """An already built model must have the checkpoint's architecture."""
        base = model.get_submodule(prefix[:-1]) if prefix else model
        built = getattr(base, "cfg", {})
        for key in self.architecture_keys + tuple(self.fixed_config):
            if key in built and key in cfg and built[key] != cfg[key]:
                raise HuggingFaceCheckpointError(
                    f"the model has {key}={built[key]!r} but the checkpoint needs {cfg[key]!r}: "
                    f"build the model from the checkpoint's config (pass the class, not an instance)"
                )

    def _strip_hf_prefix(self, hf_state: "CheckpointWeights") -> "CheckpointWeights":
        """Names of a Hugging Face "with head" checkpoint ("bert.x") made relative to its base."""
        prefix = self.hf_base_prefix
        return hf_state.renamed(lambda name: name[len(prefix):] if name.startswith(prefix) else name)

    def load_state(self, model: nn.Module, prefix: str, cfg: Mapping, hf_state: Mapping[str, torch.Tensor]) -> None:
        """Convert `hf_state` (base names without Hugging Face's prefix) and load it into `model`."""
        params = dict(model.named_parameters())
        used: set[str] = set()
        missing: list[str] = []
        for entry in self.entries(cfg):
            name = prefix + entry.libai if entry.base else entry.libai
            present = [key in hf_state for key in entry.hf]
            used.update(key for key in entry.hf if key in hf_state)
            if name not in params:
                continue  # e.g. a head this model does not have: its tensors are skipped
            if not all(present):
                if not entry.optional:
                    missing.append(entry.hf[present.index(False)])
                else:
                    logger.warning("%s is not in the checkpoint: %s keeps its initialisation", entry.hf[0], name)
                continue
            if not dist.holds(params[name]):
                continue  # another pipeline stage's parameter: its tensors are not read
            tensors = [hf_state[key] for key in entry.hf]
            full = CONVERSIONS[entry.kind][0](tensors, cfg["num_attention_heads"])
            assign_full_tensor(params[name], full, name)
        self._check_keys(hf_state, used, missing)

    def _check_keys(self, hf_state: Mapping, used: set, missing: list) -> None:
        if missing:
            raise HuggingFaceCheckpointError(
                f"the checkpoint lacks {len(missing)} weight(s) the model needs, e.g. {missing[0]!r}: "
                f"is it a checkpoint of this model family with this config?"
            )
        unexpected = sorted(k for k in hf_state if k not in used and not self.ignored(k))
        if unexpected:
            raise HuggingFaceCheckpointError(
                f"the checkpoint has {len(unexpected)} weight(s) that match no parameter, e.g. "
                f"{unexpected[0]!r}: is it a checkpoint of this model family with this config?"
            )

    # ---- export ----

    @classmethod
    def export(cls, model: nn.Module, out_dir: Union[str, os.PathLike]) -> str:
        """Write `model` as a Hugging Face checkpoint (config.json + model.safetensors).

        A collective under several processes: call it on every rank; global rank 0 writes.
        Returns `out_dir`.
        """
        prefix = find_base_prefix(model, cls.base_model_class)
        base = model.get_submodule(prefix[:-1]) if prefix else model
        hf_config = cls.config_to_hf(model, base)
        entries = cls.entries(base.cfg)
        full_state = gather_full_state_dict(model)

        def convert_and_write() -> str:
            hf_state = cls._to_hf_state(entries, full_state, prefix, base.cfg["num_attention_heads"])
            write_checkpoint(out_dir, hf_config, hf_state)
            return str(out_dir)

        return run_on_rank0(convert_and_write)

    @classmethod
    def _to_hf_state(cls, entries: Iterable[Entry], full_state: Mapping, prefix: str, num_heads: int) -> dict:
        """Hugging Face names -> tensors for every entry the model has (heads included)."""
        hf_base = cls.hf_base_prefix if prefix else ""
        hf_state: dict[str, torch.Tensor] = {}
        for entry in entries:
            name = prefix + entry.libai if entry.base else entry.libai
            if name not in full_state:
                continue
            tensors = CONVERSIONS[entry.kind][1](full_state[name], num_heads)
            for hf_name, tensor in zip(entry.hf, tensors):
                hf_state[(hf_base if entry.base else "") + hf_name] = tensor
        return hf_state

