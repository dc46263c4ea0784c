"""`tools/pipeline_report.py`: the per-stage pipeline report, run as a user runs it.

The tool runs as a subprocess on the tests' tiny GPT config with two pipeline stages; the
printed table must show LiBai's layer -> stage map for 4 layers / 2 stages, parameter
counts that add up to the model's (computed here by hand), positive times and memory, and
the 1F1B bubble 1/(m+1) for m = 16 / 4 = 4 micro-batches. A wrong config path is one
`error:` line. The pure helpers (balanced split, in-flight micro-batches) are checked
directly.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "pipeline_report.py")
CONFIG = os.path.join(REPO, "tests", "configs", "tiny_gpt.py")

# TinyGPT(vocab 64, hidden 32, 4 layers, seq 16): embeddings, one TransformerLayer, final LN.
EMBEDDINGS = 64 * 32 + 16 * 32
LAYER = 2 * 2 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
TOTAL = EMBEDDINGS + 4 * LAYER + 2 * 32
M = 16 // 4  # global_batch_size / train_micro_batch_size with data_parallel_size 1


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, TOOL, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.json"
    proc = _run(CONFIG, "train.dist.pipeline_parallel_size=2", "--repeats", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _stage_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["stage", "rank"])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.split()[0] == "total":
            break
        rows.append(line.split(None, 9))
    return rows


def test_stage_table_matches_libai_map_and_parameter_count(report):
    text, data = report
    rows = _stage_rows(text)
    assert [r[0] for r in rows] == ["0", "1"]
    # LiBai's even split of 4 layers over 2 stages: [0, 0, 1, 1].
    assert [r[2] for r in rows] == ["0-1", "2-3"]
    assert "layer -> stage: [0, 0, 1, 1]" in text
    assert rows[0][9].split(", ") == ["word_embeddings", "position_embeddings", "layers.0", "layers.1"]
    assert rows[1][9].split(", ") == ["layers.2", "layers.3", "final_layernorm", "lm_head", "loss_func"]
    params = [int(r[3]) for r in rows]
    assert params == [EMBEDDINGS + 2 * LAYER, 2 * LAYER + 2 * 32]
    assert sum(params) == TOTAL == data["total_params"]
    assert f"model TinyGPT: {TOTAL} parameters" in text
    total_line = next(line for line in text.splitlines() if line.split()[:1] == ["total"])
    assert int(total_line.split()[1]) == TOTAL
    for r in rows:
        fwd, bwd, act, flight, peak = float(r[4]), float(r[5]), float(r[6]), int(r[7]), float(r[8])
        assert fwd > 0 and bwd > 0 and act > 0
        assert peak > act * flight  # + parameters and gradients
    # 1F1B keeps min(m, p - stage) micro-batches in flight.
    assert [int(r[7]) for r in rows] == [2, 1]


def test_bubble_and_balance_hint(report):
    text, data = report
    match = re.search(r"bubble \(theory, balanced stages\) = \(p-1\)/\(m\+p-1\) = 1/(\d+) = ([\d.]+)", text)
    assert match, text
    assert int(match.group(1)) == M + 1
    assert float(match.group(2)) == pytest.approx(1 / (M + 1), abs=1e-4)
    assert data["bubble_theory"] == pytest.approx(0.2)
    # Unbalanced measured times can only make the bubble larger than the balanced one.
    assert data["bubble_measured_times"] >= data["bubble_theory"] - 1e-9
    ratio = float(re.search(r"slowest/fastest stage \(fwd\+bwd\)\s+= ([\d.]+)", text).group(1))
    assert ratio >= 1.0
    hint = re.search(r"custom_pipeline_stage_id=(\[[\d, ]+\])", text).group(1)
    ids = json.loads(hint)
    assert len(ids) == 4 and ids[0] == 0 and ids[-1] == 1 and ids == sorted(ids)


def test_bad_config_path_is_one_line_error():
    proc = _run("no/such/config.py")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: config file 'no/such/config.py' does not exist")
    assert len(proc.stderr.strip().splitlines()) == 1


def _load_tool():
    spec = importlib.util.spec_from_file_location("pipeline_report", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_helpers():
    tool = _load_tool()
    assert tool.balanced_split([1, 1, 1, 5], 2) == [0, 0, 0, 1]
    assert tool.balanced_split([4, 1, 1, 1, 1], 2) == [0, 1, 1, 1, 1]
    assert tool.balanced_split([1, 1, 1, 1], 4) == [0, 1, 2, 3]
    assert [tool.in_flight("1F1B", s, 4, 8, 1) for s in range(4)] == [4, 3, 2, 1]
    assert [tool.in_flight("1F1B", s, 4, 2, 1) for s in range(4)] == [2, 2, 2, 1]
    assert tool.in_flight("GPipe", 0, 4, 8, 1) == 8
    assert tool.bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert tool.measured_bubble([1.0, 1.0], 4) == pytest.approx(1 / 5)
    # Stage 1 twice as slow: step ~ (m+p-1) x 2, busy mean 1.5 x m.
    assert tool.measured_bubble([1.0, 2.0], 4) == pytest.approx(1 - 4 * 1.5 / (5 * 2))


def test_each_rank_receives_only_the_fields_placed_on_it(report):
    """The tiny GPT's micro-batch is 4 x 16 int64 tokens: input_ids to the first stage
    (placement_idx=0), labels to the last (-1)."""
    text, data = report
    assert data["fields_per_rank"] == [{"input_ids": 4 * 16 * 8}, {"labels": 4 * 16 * 8}]
    assert "  rank 0: input_ids 512 (total 512)" in text
    assert "  rank 1: labels 512 (total 512)" in text
