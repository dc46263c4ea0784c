"""Bad input, 100 ways: every malformed config, override or data file ends a training run
with one `error:` line that names the problem, exit status 2, no traceback, and the output
directory left as it was.

The cases (config files that do not load, unknown keys, values of the wrong type or out
of range, layouts and batch sizes that do not fit, missing, truncated, empty and too
small data) are the table of `tests/helpers/bad_input_driver.py`, which runs them all
through `tools/train_net.py` in one process (one process start, not one per case). Three
of them are also launched for real on two processes with `tools/train.sh`, to check that
the in-process driver reports what a real run prints.

A case that does not pass yet goes into `LINE_GAPS` / `OUTPUT_DIR_GAPS` as a strict
xfail naming why, so the test turns red when it is fixed and the mark can go.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import bad_input_driver as driver
from tests.helpers.runs import REPO, train_sh

CASES = {case.name: case for case in driver.all_cases()}

# ---- known gaps: cases that do not pass yet, each a strict xfail naming why -------------

LINE_GAPS: dict = {}
OUTPUT_DIR_GAPS: dict = {}


def _params(gaps: dict) -> list:
    """One pytest param per case; a known gap is a strict xfail naming its proposed fix."""
    return [
        pytest.param(name, marks=pytest.mark.xfail(reason=gaps[name], strict=True)) if name in gaps else name
        for name in CASES
    ]


# ---- real launches: two processes through tools/train.sh ------------------------------

# name -> (the driver case it mirrors or None, overrides, keywords of its error line)
LAUNCHES = {
    "unknown_key": ("unknown_key", ("train.train_iter=2", "train.train_itr=5"), ("train.train_itr",)),
    "syntax_error": ("syntax_error", ("train.train_iter=2",), ("config.py', line 1", "SyntaxError")),
    "layout_not_dividing_two_ranks": (
        None,
        ("train.train_iter=2", "train.dist.tensor_parallel_size=3"),
        ("tensor_parallel_size (3)", "world size (2)"),
    ),
}


def _launch(root: Path, name: str) -> dict:
    """Launch one case on 2 processes; its status, stderr and output directory before/after."""
    mirrors, overrides, _ = LAUNCHES[name]
    folder = root / f"launch_{name}"
    folder.mkdir(parents=True)
    config = driver.TINY_GPT
    if name == "syntax_error":
        config = str(folder / "config.py")
        Path(config).write_text(dict(CASES[mirrors].files)["config.py"])
    driver.earlier_run(folder / "out")
    before = driver.snapshot(folder / "out")
    proc = train_sh(2, str(folder / "out"), *overrides, check=False, config=config)
    return {"status": proc.returncode, "stderr": proc.stderr, "folder": str(folder),
            "output_before": before, "output_after": driver.snapshot(folder / "out")}


def _run_driver(root: Path) -> list:
    """All cases in one subprocess (`bad_input_driver.py`); its JSON report."""
    report = root / "report.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, driver.__file__, str(root / "cases"), str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"the driver failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """{"cases": {name: result}, "launches": {name: result}, "root": the cases' folder}.

    The launches run while the driver does: each mostly waits for its processes to start.
    """
    root = tmp_path_factory.mktemp("bad_inputs")
    with ThreadPoolExecutor(max_workers=1 + len(LAUNCHES)) as pool:
        cases = pool.submit(_run_driver, root)
        launches = {name: pool.submit(_launch, root, name) for name in LAUNCHES}
        return {
            "cases": {result["name"]: result for result in cases.result()},
            "launches": {name: future.result() for name, future in launches.items()},
            "root": root / "cases",
        }


def _error_line(result: dict) -> str:
    """The run's only stderr line, checked to be an `error:` line of a status-2 exit."""
    stderr = result["stderr"]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert result["status"] == 2, f"exit status {result['status']}:\n{stderr[-4000:]}"
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-4000:]
    return lines[0]


# ---- the tests -------------------------------------------------------------------------


def test_the_table_holds_a_hundred_cases() -> None:
    assert len(CASES) >= 100


@pytest.mark.parametrize("name", _params(LINE_GAPS))
def test_one_error_line_naming_the_problem(report, name: str) -> None:
    line = _error_line(report["cases"][name])
    for keyword in CASES[name].keywords:
        assert keyword in line, f"{keyword!r} not in: {line}"


@pytest.mark.parametrize("name", _params(OUTPUT_DIR_GAPS))
def test_output_dir_left_as_it_was(report, name: str) -> None:
    result = report["cases"][name]
    # None before and after: it did not exist, and the run did not create it.
    assert result["output_after"] == result["output_before"], result["stderr"][-2000:]


@pytest.mark.parametrize("name", list(LAUNCHES))
def test_real_launch_on_two_ranks_says_the_same(report, name: str) -> None:
    launched = report["launches"][name]
    line = _error_line(launched)
    mirrors, _, keywords = LAUNCHES[name]
    for keyword in keywords:
        assert keyword in line, f"{keyword!r} not in: {line}"
    assert launched["output_after"] == launched["output_before"]
    if mirrors is not None:
        # The same line as in the driver, once each run's own folder is taken out.
        in_process = report["cases"][mirrors]["stderr"].strip()
        folder = str(report["root"] / mirrors)
        assert line.replace(launched["folder"], "{dir}") == in_process.replace(folder, "{dir}")


def _training_configs() -> list:
    """The shipped config files that start from the packaged `train` defaults and define
    every group a training run builds (inference configs define no optimizer)."""
    from libai.config import LazyConfig
    from libai.config.checks import TRAINER_GROUPS

    found = []
    for top in ("projects", "tests/configs"):
        for path in sorted(Path(REPO, top).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "common/train.py" in text or "common.train import" in text:
                cfg = LazyConfig.load(str(path))
                if all(group in cfg for group in TRAINER_GROUPS):
                    found.append(str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("config", _training_configs())
def test_shipped_training_configs_pass_check_train_config(config: str) -> None:
    """The checks `default_setup` runs first refuse no config that works."""
    from libai.config import LazyConfig, check_train_config

    check_train_config(LazyConfig.load(os.path.join(REPO, config)))
