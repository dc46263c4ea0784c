"""LazyConfig: loading .py configs with relative imports, saving, overrides and to_py."""
from __future__ import annotations

import datetime
import logging
import textwrap
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig

from libai.config import ConfigKeyError, ConfigOverrideError, LazyCall, LazyConfig, instantiate


def write(path: Path, text: str) -> Path:
    """Write a small config file (dedented) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A config tree: main.py imports base files from a sibling folder and a parent folder."""
    write(
        tmp_path / "common" / "train.py",
        """
        train = dict(lr=0.1, dist=dict(tp=1, pp=1), steps=[1, 2], betas=(0.9, 0.999))
        """,
    )
    write(
        tmp_path / "common" / "models" / "mlp.py",
        """
        import datetime
        from libai.config import LazyCall
        from ..train import train  # parent-folder relative import
        model = LazyCall(datetime.timedelta)(days=1, seconds=train.dist.tp)
        """,
    )
    write(
        tmp_path / "main.py",
        """
        from libai.config import LazyCall
        from .common.train import train
        from .common.models.mlp import model
        from .common import train as train_module   # folder import of a file
        train.update(dict(dist=dict(tp=2)))
        same_object = dict(is_same=train is train_module.train)
        helper_value = 3            # plain values are not part of the config
        _private = dict(x=1)        # underscore names are not either
        """,
    )
    return tmp_path


def test_load_with_relative_imports(project: Path) -> None:
    cfg = LazyConfig.load(project / "main.py")
    assert isinstance(cfg, DictConfig)
    assert set(cfg.keys()) == {"train", "model", "same_object"}
    assert cfg.train.lr == 0.1
    assert isinstance(cfg.train._get_node("betas"), ListConfig)  # tuples become lists (YAML-exact)
    assert cfg.train.dist.tp == 2 and cfg.train.dist.pp == 1  # update merged
    # Within one load, a file imported twice runs once (Python semantics).
    assert cfg.same_object.is_same is True
    # mlp.py read train before main.py changed it.
    assert cfg.model.seconds == 1
    assert cfg.model._target_ is datetime.timedelta
    assert instantiate(cfg.model) == datetime.timedelta(days=1, seconds=1)


def test_load_keys(project: Path) -> None:
    train = LazyConfig.load(project / "main.py", keys="train")
    assert train.dist.tp == 2
    train2, model = LazyConfig.load(project / "main.py", keys=("train", "model"))
    assert train2.lr == 0.1 and model.days == 1
    with pytest.raises(ConfigKeyError, match="'trian'.*nearest is 'train'"):
        LazyConfig.load(project / "main.py", keys="trian")


def test_reload_gives_fresh_objects(project: Path) -> None:
    first = LazyConfig.load(project / "main.py")
    second = LazyConfig.load(project / "main.py")
    first.train.dist.tp = 7
    first.train.steps.append(3)
    assert second.train.dist.tp == 2
    assert list(second.train.steps) == [1, 2]
    assert first.train is not second.train
    # A base file loaded directly is untouched by main.py's update.
    base = LazyConfig.load(project / "common" / "train.py")
    assert base.train.dist.tp == 1


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LazyConfig.load(tmp_path / "nope.py")
    bad = write(tmp_path / "bad.py", "from .missing_file import x\n")
    with pytest.raises(ImportError, match="missing_file"):
        LazyConfig.load(bad)
    txt = write(tmp_path / "cfg.txt", "a=1\n")
    with pytest.raises(ValueError, match=r"\.py, \.yaml"):
        LazyConfig.load(txt)


def test_import_hook_removed_after_load(project: Path) -> None:
    import builtins

    before = builtins.__import__
    LazyConfig.load(project / "main.py")
    with pytest.raises(ImportError):
        LazyConfig.load(write(project / "broken.py", "from .nothing_here import x\n"))
    assert builtins.__import__ is before


def test_save_load_yaml_equal(project: Path, tmp_path: Path) -> None:
    cfg = LazyConfig.load(project / "main.py")
    cfg.train.interp = "${train.lr}"
    path = LazyConfig.save(cfg, tmp_path / "out" / "config.yaml")
    assert path == str(tmp_path / "out" / "config.yaml")
    text = Path(path).read_text()
    assert "_target_: datetime.timedelta" in text
    loaded = LazyConfig.load(path)
    assert loaded == cfg
    assert loaded.model._target_ is datetime.timedelta
    assert loaded.train.interp == 0.1  # interpolation survives
    assert instantiate(loaded.model) == datetime.timedelta(days=1, seconds=1)
    # Saving the loaded config again gives the same text.
    again = LazyConfig.save(loaded, tmp_path / "again.yaml")
    assert Path(again).read_text() == text


def test_save_falls_back_to_pickle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = DictConfig({"a": LazyCall(dict)(fn=lambda x: x + 1, n=2)}, flags={"allow_objects": True})
    with caplog.at_level(logging.WARNING, logger="libai.config.lazy"):
        path = LazyConfig.save(cfg, tmp_path / "config.yaml")
    assert path == str(tmp_path / "config.yaml.pkl")
    assert not (tmp_path / "config.yaml").exists()
    assert "a.fn" in caplog.text and "cloudpickle" in caplog.text
    loaded = LazyConfig.load(path)
    assert loaded.a.fn(1) == 2 and loaded.a.n == 2
    assert instantiate(loaded.a)["fn"](3) == 4


def test_save_writes_enum_members_as_yaml(tmp_path: Path) -> None:
    from libai.data.vision.transforms import InterpolationMode, Resize

    resize = LazyCall(Resize)(size=8, interpolation=InterpolationMode.BICUBIC)
    cfg = DictConfig({"aug": resize, "modes": [InterpolationMode.NEAREST]}, flags={"allow_objects": True})
    path = LazyConfig.save(cfg, tmp_path / "config.yaml")
    assert path == str(tmp_path / "config.yaml")
    assert "InterpolationMode" in (tmp_path / "config.yaml").read_text()
    loaded = LazyConfig.load(path)
    assert loaded.aug.interpolation is InterpolationMode.BICUBIC and loaded.modes[0] is InterpolationMode.NEAREST
    assert loaded == cfg and instantiate(loaded.aug).interpolation is InterpolationMode.BICUBIC


def test_save_pickles_local_target(tmp_path: Path) -> None:
    class Local:  # defined in a function: has no import path
        def __init__(self, v: int) -> None:
            self.v = v

    cfg = DictConfig({"m": LazyCall(Local)(v=5)}, flags={"allow_objects": True})
    path = LazyConfig.save(cfg, tmp_path / "c.yaml")
    assert path.endswith(".pkl")
    assert instantiate(LazyConfig.load(path).m).v == 5


@pytest.fixture
def cfg() -> DictConfig:
    return DictConfig(
        {
            "train": {
                "train_iter": 10,
                "lr": 0.5,
                "amp": {"enabled": False},
                "name": "run",
                "milestones": [0.5],
                "load_weight": "w.pt",
                "dist": {"tensor_parallel_size": 1},
            },
            "loaders": [{"batch": 4}],
            "opt": LazyCall(dict)(lr=1.0),
        },
        flags={"allow_objects": True},
    )


def test_typed_overrides(cfg: DictConfig) -> None:
    LazyConfig.apply_overrides(
        cfg,
        [
            "train.train_iter=100",
            "train.lr=1e-4",
            "train.amp.enabled=True",
            "train.name='abc'",
            "train.milestones=[0.25, 0.75]",
            "train.load_weight=None",
            "train.dist.tensor_parallel_size=2",
            "loaders.0.batch=8",
            "opt.lr=2",
        ],
    )
    assert cfg.train.train_iter == 100 and type(cfg.train.train_iter) is int
    assert cfg.train.lr == 1e-4 and type(cfg.train.lr) is float
    assert cfg.train.amp.enabled is True
    assert cfg.train.name == "abc"
    assert list(cfg.train.milestones) == [0.25, 0.75]
    assert cfg.train.load_weight is None
    assert cfg.train.dist.tensor_parallel_size == 2
    assert cfg.loaders[0].batch == 8
    assert cfg.opt.lr == 2


def test_override_value_spellings(cfg: DictConfig) -> None:
    LazyConfig.apply_overrides(cfg, ["train.name=hello world", "train.amp.enabled=false", "train.lr=null"])
    assert cfg.train.name == "hello world"
    assert cfg.train.amp.enabled is False
    assert cfg.train.lr is None
    LazyConfig.apply_overrides(cfg, ["train.name='false'", "train.milestones=(1, 2)"])
    assert cfg.train.name == "false"
    assert isinstance(cfg.train._get_node("milestones"), ListConfig)
    assert list(cfg.train.milestones) == [1, 2]


def test_override_missing_key_error(cfg: DictConfig) -> None:
    with pytest.raises(ConfigKeyError) as info:
        LazyConfig.apply_overrides(cfg, ["train.trian_iter=5"])
    message = str(info.value)
    assert "'train.trian_iter'" in message
    assert "nearest existing key is 'train.train_iter'" in message
    assert "+train.trian_iter=" in message  # says how to add it on purpose
    assert isinstance(info.value, KeyError)
    assert "trian_iter" not in cfg.train
    with pytest.raises(ConfigKeyError, match="'trian'.*nearest existing key is 'train'"):
        LazyConfig.apply_overrides(cfg, ["trian.lr=1"])
    with pytest.raises(ConfigKeyError, match="'train.dsit'.*'train.dist'"):
        LazyConfig.apply_overrides(cfg, ["train.dsit.tensor_parallel_size=2"])
    with pytest.raises(ConfigKeyError, match="holds a value"):
        LazyConfig.apply_overrides(cfg, ["train.lr.x=1"])
    with pytest.raises(ConfigKeyError, match="list of 1 items"):
        LazyConfig.apply_overrides(cfg, ["loaders.3.batch=1"])
    # LazyCall kwargs are checked too.
    with pytest.raises(ConfigKeyError, match="'opt.lrr'.*'opt.lr'"):
        LazyConfig.apply_overrides(cfg, ["opt.lrr=1"])


def test_override_add_and_malformed(cfg: DictConfig) -> None:
    LazyConfig.apply_overrides(cfg, ["+train.new_key=3", "+extra.group.value=[1]"])
    assert cfg.train.new_key == 3
    assert list(cfg.extra.group.value) == [1]
    with pytest.raises(ConfigOverrideError, match="key=value"):
        LazyConfig.apply_overrides(cfg, ["train.lr"])
    # A flag typed after the overrides reaches them: the message says where flags go.
    with pytest.raises(ConfigOverrideError, match="--resume go before the overrides"):
        LazyConfig.apply_overrides(cfg, ["--resume"])
    with pytest.raises(TypeError, match="list"):
        LazyConfig.apply_overrides(cfg, "train.lr=1")


def test_to_py_round_trip(project: Path, tmp_path: Path) -> None:
    cfg = LazyConfig.load(project / "main.py")
    cfg.model.label = "x"  # a string target and odd keys
    cfg.extra = {
        "not an identifier": 1,
        "seq": [1.5, float("inf"), None, True],
        "string_target": LazyCall("datetime.date")(year=2024, month=1, day=2),
    }
    source = LazyConfig.to_py(cfg, prefix="")
    assert "from libai.config import LazyCall" in source
    assert "import datetime" in source
    assert "LazyCall(datetime.timedelta)(" in source
    assert "LazyCall('datetime.date')(" in source
    path = write(tmp_path / "as_py.py", source)
    loaded = LazyConfig.load(path)
    assert loaded == cfg
    assert instantiate(loaded.extra.string_target) == datetime.date(2024, 1, 2)


def test_to_py_prefix(project: Path) -> None:
    source = LazyConfig.to_py(LazyConfig.load(project / "main.py"))
    lines = source.splitlines()
    assert any(line.startswith("cfg.train = dict(") for line in lines)
    assert any(line.startswith("cfg.model = LazyCall(datetime.timedelta)(") for line in lines)
    compile(source, "<to_py>", "exec")  # valid Python
