"""Checkpointer: roundtrip, atomic writes, clear errors, save on 2 processes / load on 1."""
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint import FileSystemWriter

from libai.utils import distributed as dist_utils
from libai.utils.checkpoint import CheckpointError, Checkpointer
from tests.helpers.dist import run_on_ranks

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Counter:
    """A non-torch checkpointable."""

    def __init__(self):
        self.count = 0

    def state_dict(self):
        return {"count": self.count, "history": [1.5, 2.5]}

    def load_state_dict(self, state):
        self.count = state["count"]


class _Net(nn.Module):
    def __init__(self, seed, out=3):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, out)

    def forward(self, x):
        return self.head(self.norm(self.fc1(x)).relu())


def _make(seed, out=3, model=None):
    model = _Net(seed, out) if model is None else model
    decay = [model.fc1.weight, model.head.weight]
    no_decay = [model.fc1.bias, model.norm.weight, model.norm.bias, model.head.bias]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "clip_grad_max_norm": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "clip_grad_max_norm": 1.0},
        ],
        lr=0.05,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler, _Counter()


def _train(model, optimizer, scheduler, counter, steps, start=0):
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        x = torch.randn(5, 4, generator=gen)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        counter.count += 1


def _checkpointer(save_dir, parts):
    model, optimizer, scheduler, counter = parts
    return Checkpointer(
        model, str(save_dir), optimizer=optimizer, scheduler=scheduler, counter=counter
    )


def _assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def _assert_same_optimizer(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for key in sa["state"]:
        for field in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][key][field], sb["state"][key][field]), (key, field)


def _snapshot(folder):
    """Every file under `folder` with its bytes, to prove nothing was touched."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


@pytest.fixture(autouse=True)
def _one_rank_group():
    dist_utils.setup_dist_util({})


# --------------------------------------------------------------------------------------
# Roundtrip
# --------------------------------------------------------------------------------------


def test_roundtrip_restores_everything_and_training_continues_identically(tmp_path):
    source = _make(0)
    _train(*source, steps=3)
    ckpt = _checkpointer(tmp_path, source)
    path = ckpt.save("model_0000002", iteration=2, consumed_train_samples=15)
    assert path == str(tmp_path / "model_0000002")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002"

    target = _make(1)
    ckpt = _checkpointer(tmp_path, target)
    assert ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == path
    assert ckpt.get_all_checkpoint_files() == [path]
    extra = ckpt.resume_or_load("", resume=True)
    assert extra == {"iteration": 2, "consumed_train_samples": 15}
    _assert_same_weights(source[0], target[0])
    _assert_same_optimizer(source[1], target[1])
    assert target[2].state_dict() == source[2].state_dict()
    assert target[1].param_groups[0]["lr"] == source[1].param_groups[0]["lr"] == 0.025
    assert target[3].count == 3

    # Resuming continues exactly as the run that was never stopped.
    _train(*source, steps=2, start=3)
    _train(*target, steps=2, start=3)
    _assert_same_weights(source[0], target[0])


def test_load_weights_only_is_lenient_and_resume_is_strict(tmp_path):
    source = _make(0)
    _train(*source, steps=1)
    path = _checkpointer(tmp_path, source).save("model_final", iteration=0)

    target = _make(1)
    assert _checkpointer(tmp_path / "fresh", target).resume_or_load(path, resume=True) == {}
    _assert_same_weights(source[0], target[0])
    assert not target[1].state  # optimizer untouched: weights only
    assert target[3].count == 0

    # A new head (7 classes): everything else is loaded, the head keeps its init.
    other = _make(2, out=7)
    head = other[0].head.weight.clone()
    Checkpointer(other[0]).load_model_weights(path)
    assert torch.equal(other[0].fc1.weight, source[0].fc1.weight)
    assert torch.equal(other[0].head.weight, head)
    # Resuming training state into a different model is an error, not a silent mismatch.
    with pytest.raises(CheckpointError, match=r"does not match the model \(shape mismatch head"):
        _checkpointer(tmp_path / "other", other).load(path)


def test_save_before_first_step_does_not_change_training(tmp_path):
    source = _make(0)
    source[0](torch.ones(2, 4)).sum().backward()  # mid-accumulation: grads, no state yet
    grads = [p.grad.clone() for p in source[0].parameters()]
    ckpt = _checkpointer(tmp_path, source)
    ckpt.save("model_init", iteration=-1)
    assert not source[1].state  # saving took no optimizer step
    assert all(torch.equal(p.grad, g) for p, g in zip(source[0].parameters(), grads))
    target = _make(1)
    _checkpointer(tmp_path, target).load(str(tmp_path / "model_init"))
    assert not target[1].state
    _train(*source, steps=2)
    _train(*target, steps=2)
    _assert_same_weights(source[0], target[0])
    _assert_same_optimizer(source[1], target[1])


def test_saving_the_same_name_replaces_it_cleanly(tmp_path):
    parts = _make(0)
    ckpt = _checkpointer(tmp_path, parts)
    ckpt.save("model_best", iteration=1)
    _train(*parts, steps=1)
    ckpt.save("model_best", iteration=2)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_best"]
    target = _make(1)
    assert _checkpointer(tmp_path, target).load(str(tmp_path / "model_best")) == {"iteration": 2}
    _assert_same_weights(parts[0], target[0])


# --------------------------------------------------------------------------------------
# Whole or not at all
# --------------------------------------------------------------------------------------


def _explode(*args, **kwargs):
    raise OSError("No space left on device")


@pytest.mark.parametrize("method", ["write_data", "finish"])
@pytest.mark.parametrize("name", ["model_0000009", "model_0000004"])
def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch, method, name):
    parts = _make(0)
    ckpt = _checkpointer(tmp_path, parts)
    ckpt.save("model_0000004", iteration=4)
    before = _snapshot(tmp_path)
    _train(*parts, steps=1)
    monkeypatch.setattr(FileSystemWriter, method, _explode)
    with pytest.raises(CheckpointError) as info:
        ckpt.save(name, iteration=9)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / name) in message and "No space left" in message
    assert _snapshot(tmp_path) == before  # no partial dir, same last_checkpoint, same files
    monkeypatch.undo()
    target = _make(1)
    assert _checkpointer(tmp_path, target).resume_or_load(None) == {"iteration": 4}


_KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, {root!r})
from torch.distributed.checkpoint import FileSystemWriter
from libai.utils import distributed as dist_utils
from libai.utils.checkpoint import Checkpointer
from tests.test_checkpoint import _make, _checkpointer

def die(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the data files are written, .metadata is not

dist_utils.setup_dist_util({{}}, device="cpu")
parts = _make(0)
FileSystemWriter.finish = die
_checkpointer({save_dir!r}, parts).save("model_0000001", iteration=1)
"""


def test_killed_save_leaves_previous_checkpoint_and_is_cleaned_up(tmp_path):
    parts = _make(0)
    ckpt = _checkpointer(tmp_path, parts)
    ckpt.save("model_0000001", iteration=0)
    script = textwrap.dedent(_KILLED_SAVE).format(root=REPO_ROOT, save_dir=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = [e for e in os.listdir(tmp_path) if e.startswith(".tmp-")]
    assert len(leftovers) == 1  # hidden: never taken for a checkpoint
    assert ckpt.get_all_checkpoint_files() == [str(tmp_path / "model_0000001")]
    assert _checkpointer(tmp_path, _make(1)).resume_or_load(None) == {"iteration": 0}
    ckpt.save("model_0000001", iteration=1)  # the next save of that name cleans up
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001"]


def test_crash_between_renames_falls_back_to_previous_copy(tmp_path):
    parts = _make(0)
    ckpt = _checkpointer(tmp_path, parts)
    ckpt.save("model_final", iteration=7)
    # State after `model_final` was renamed away and before the new copy was renamed in.
    os.rename(tmp_path / "model_final", tmp_path / ".old-0123456789ab-model_final")
    assert _checkpointer(tmp_path, _make(1)).resume_or_load(None) == {"iteration": 7}
    ckpt.save("model_final", iteration=8)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final"]


# --------------------------------------------------------------------------------------
# Clear errors
# --------------------------------------------------------------------------------------


def _load_error(path):
    with pytest.raises(CheckpointError) as info:
        _checkpointer("", _make(1)).load(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert "delete it or point --resume/train.load_weight elsewhere" in message
    return message


def test_corrupt_or_missing_checkpoints_raise_one_clear_error(tmp_path):
    path = _checkpointer(tmp_path, _make(0)).save("model_0000001", iteration=1)
    data_file = next(f for f in os.listdir(path) if f.endswith(".distcp"))
    with open(os.path.join(path, data_file), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(path, data_file)) // 2)
    before = _snapshot(tmp_path)
    assert f"file {data_file} has" in _load_error(path) and "truncated" in _load_error(path)
    assert _snapshot(tmp_path) == before  # loading never touches files
    os.remove(os.path.join(path, "checksums.json"))  # an unverifiable checkpoint: DCP finds it
    assert "cannot load checkpoint" in _load_error(path)

    with open(os.path.join(path, ".metadata"), "wb") as f:
        f.write(b"garbage")
    assert "unreadable .metadata" in _load_error(path)
    os.remove(os.path.join(path, ".metadata"))
    assert "not a complete checkpoint" in _load_error(path)
    assert "does not exist" in _load_error(tmp_path / "nowhere")
    (tmp_path / "weights.pth").write_bytes(b"x")
    assert "is a file" in _load_error(tmp_path / "weights.pth")
    # last_checkpoint naming a directory that is gone
    (tmp_path / "last_checkpoint").write_text("model_0000777")
    with pytest.raises(CheckpointError, match="model_0000777 does not exist"):
        _checkpointer(tmp_path, _make(1)).resume_or_load(None)


def test_bad_arguments_are_explained(tmp_path):
    ckpt = _checkpointer(tmp_path, _make(0))
    with pytest.raises(TypeError, match="JSON-serializable"):
        ckpt.save("model_x", iteration=object())
    assert ckpt.save("model_y", step=torch.tensor(3)) is not None  # scalars are converted
    with pytest.raises(ValueError, match="invalid checkpoint name"):
        ckpt.save("a/b")
    with pytest.raises(ValueError, match="reserved"):
        Checkpointer(nn.Linear(1, 1), extra=_Counter())
    with pytest.raises(TypeError, match="state_dict"):
        Checkpointer(nn.Linear(1, 1), thing=object())
    with pytest.raises(ValueError, match="unknown checkpointables"):
        ckpt.load(str(tmp_path / "model_y"), checkpointables=["optimiser"])
    assert Checkpointer(nn.Linear(1, 1), "").save("model") is None  # no save_dir: disabled
    assert (tmp_path / "last_checkpoint").read_text() == "model_y"


# --------------------------------------------------------------------------------------
# Two processes save (one weight sharded as a DTensor), one process loads
# --------------------------------------------------------------------------------------


class _ShardedNet(_Net):
    """`fc1.weight` is a DTensor split over the data-parallel ranks: another layout."""

    def __init__(self, seed, mesh):
        super().__init__(seed)
        from torch.distributed.tensor import Shard, distribute_tensor

        self.fc1.weight = nn.Parameter(distribute_tensor(self.fc1.weight.data, mesh, [Shard(0)]))

    def forward(self, x):
        from torch.distributed.tensor import DTensor

        weight = self.fc1.weight
        weight = weight.full_tensor() if isinstance(weight, DTensor) else weight
        hidden = torch.nn.functional.linear(x, weight, self.fc1.bias)
        return self.head(self.norm(hidden).relu())


def _full(value):
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def _two_rank_worker(save_dir):
    dist_utils.setup_dist_util({}, device="cpu")  # gloo: several ranks, CPU tensors
    mesh = dist_utils.get_dist_util().mesh["dp"]
    parts = _make(0, model=_ShardedNet(0, mesh))
    model, optimizer = parts[0], parts[1]
    _train(*parts, steps=2)
    ckpt = _checkpointer(save_dir, parts)
    ckpt.save("model_0000001", iteration=1)

    # One rank fails while writing: every rank raises, nothing changes on disk.
    before = _snapshot(save_dir)
    if dist_utils.get_rank() == 1:
        FileSystemWriter.write_data = _explode
    try:
        ckpt.save("model_0000002", iteration=2)
        failed = ""
    except CheckpointError as exc:
        failed = str(exc)
    unchanged = _snapshot(save_dir) == before

    # Lists, not tensors: tensors sent back through the result queue need the worker alive.
    weights = {k: _full(v).tolist() for k, v in model.state_dict().items()}
    exp_avg = {
        name: _full(optimizer.state[param]["exp_avg"]).tolist()
        for name, param in model.named_parameters()
    }
    return weights, exp_avg, failed, unchanged


def test_two_process_save_then_one_process_load(tmp_path):
    results = run_on_ranks(_two_rank_worker, 2, str(tmp_path))
    weights, exp_avg, _, _ = results[0]
    for _, _, failed, unchanged in results:
        assert "rank 1" in failed and "No space left" in failed
        assert unchanged
    assert results[1][0]["fc1.weight"] == weights["fc1.weight"]

    target = _make(1)
    extra = _checkpointer(tmp_path, target).resume_or_load(None)
    assert extra == {"iteration": 1}
    model, optimizer = target[0], target[1]
    for name, value in model.state_dict().items():
        assert value.tolist() == weights[name], name
    for name, param in model.named_parameters():
        assert optimizer.state[param]["exp_avg"].tolist() == exp_avg[name], name
    assert target[3].count == 2


def _flip_a_byte(path):
    """Flip one bit in the middle of the largest data file of checkpoint `path`; return its name."""
    name = max((f for f in os.listdir(path) if f.endswith(".distcp")), key=lambda f: os.path.getsize(os.path.join(path, f)))
    with open(os.path.join(path, name), "r+b") as f:
        f.seek(os.path.getsize(os.path.join(path, name)) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    return name


def test_a_flipped_byte_is_caught_on_load_and_resume_falls_back(tmp_path, caplog):
    parts = _make(0)
    ckpt = _checkpointer(tmp_path, parts)
    first = ckpt.save("model_0000001", iteration=1)
    time.sleep(0.01)  # distinct modification times order the checkpoints
    latest = ckpt.save("model_0000003", iteration=3)
    assert json.load(open(os.path.join(latest, "checksums.json")))["files"].keys() == {
        f for f in os.listdir(latest) if f != "checksums.json"
    }
    name = _flip_a_byte(latest)
    message = _load_error(latest)
    assert message.startswith(f"checkpoint {latest}: file {name} does not match its checksum (corrupted)")

    with caplog.at_level(logging.WARNING, logger="libai"):
        extra = _checkpointer(tmp_path, _make(1)).resume_or_load(None, resume=True)
    assert extra == {"iteration": 1}
    assert f"resuming from {first}, the newest other checkpoint, instead" in caplog.text
    _flip_a_byte(first)
    with pytest.raises(CheckpointError, match=f"no other checkpoint in {tmp_path} passes its check"):
        _checkpointer(tmp_path, _make(1)).resume_or_load(None, resume=True)


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing a shard: the save fails with one line and the
    previous checkpoint and `last_checkpoint` stay as they were, loadable."""
    import errno

    from torch.distributed.checkpoint import filesystem

    parts = _make(0)
    ckpt = _checkpointer(tmp_path, parts)
    previous = ckpt.save("model_0000001", iteration=1)
    before = _snapshot(tmp_path)
    real_create_stream = filesystem.FileSystem.create_stream

    class FullDisk(io.RawIOBase):
        def __init__(self, stream):
            self.stream, self.written = stream, 0

        def writable(self):
            return True

        def write(self, data):
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.stream.write(data)

        def tell(self):
            return self.stream.tell()

    @contextlib.contextmanager
    def create_stream(self, path, mode):
        with real_create_stream(self, path, mode) as stream:
            yield FullDisk(stream) if "w" in mode else stream

    monkeypatch.setattr(filesystem.FileSystem, "create_stream", create_stream)
    with pytest.raises(CheckpointError) as info:
        ckpt.save("model_0000002", iteration=2)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "previous checkpoints are kept" in message
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before
    assert ckpt.get_checkpoint_file() == previous
    assert _checkpointer(tmp_path, _make(1)).resume_or_load(None, resume=True) == {"iteration": 1}


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    """DCP's .metadata is a pickle: one carrying a callable is refused before it is read."""
    monkeypatch.chdir(tmp_path)
    path = _checkpointer(tmp_path, _make(0)).save("model_0000001", iteration=1)
    import pickle

    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump({"state_dict_metadata": _RunsCode()}, f)
    message = _load_error(path)
    assert "holds a pickled posix.system, which a checkpoint never needs; loading would run code" in message
    assert not os.path.exists(tmp_path / "ran-code")


def test_missing_and_unexpected_messages_name_the_weights():
    from libai.utils.checkpoint import get_missing_parameters_message, get_unexpected_parameters_message

    keys = [f"layer{i}.weight" for i in range(7)]
    assert get_missing_parameters_message(keys[:2]) == (
        "Weights not in the checkpoint, left as initialized: layer0.weight, layer1.weight"
    )
    assert get_unexpected_parameters_message(keys).endswith("layer4.weight and 2 more")
