"""EventStorage, HistoryBuffer, the three writers and setup_logger."""
import datetime
import glob
import json
import logging
import os
import re
import statistics

import pytest

from libai.utils import events
from libai.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    HistoryBuffer,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)
from libai.utils.logger import setup_logger


def _loss(i):
    # Irregular values so medians, means and latest all differ.
    return 1.0 / (i + 1) + 0.01 * ((i * 7) % 5)


def _run(storage, num_iters, writers=(), period=None, eval_at=None):
    """Mimic the trainer: put the usual scalars, write on the period, then step."""
    for i in range(num_iters):
        storage.put_scalars(total_loss=_loss(i), loss_cls=_loss(i) / 2, data_time=0.001 * (i % 3))
        storage.put_scalar("time", 0.01 + 0.001 * (i % 4))
        storage.put_scalar("lr", 0.1 * (i + 1), smoothing_hint=False)
        if eval_at is not None and i == eval_at:
            storage.put_scalar("Acc@1", 97.123456789012345, smoothing_hint=False)
        if period and ((i + 1) % period == 0 or i == num_iters - 1):
            for w in writers:
                w.write()
        storage.step()


# ---------------------------------------------------------------------------------------
# HistoryBuffer and EventStorage
# ---------------------------------------------------------------------------------------


def test_history_buffer_statistics():
    buf = HistoryBuffer()
    vals = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for i, v in enumerate(vals):
        buf.update(v, i)
    assert buf.latest() == 10.0
    assert buf.median(3) == 3.0  # [2, 3, 10]
    assert buf.avg(3) == pytest.approx(5.0)
    assert buf.median(100) == statistics.median(vals)
    assert buf.global_avg() == pytest.approx(sum(vals) / len(vals))
    assert buf.values() == list(zip(vals, range(6)))
    with pytest.raises(ValueError, match="empty"):
        HistoryBuffer().latest()


def test_history_buffer_trims_but_global_avg_covers_all():
    buf = HistoryBuffer(max_length=4)
    for i in range(20):
        buf.update(float(i), i)
    assert len(buf) == 4
    assert [v for v, _ in buf.values()] == [16.0, 17.0, 18.0, 19.0]
    assert buf.avg(4) == pytest.approx(17.5)
    assert buf.global_avg() == pytest.approx(9.5)


def test_storage_put_latest_and_smoothing():
    with EventStorage(start_iter=5) as storage:
        assert get_event_storage() is storage
        assert storage.iter == 5
        for i in range(3):
            storage.put_scalar("loss", float(i + 1))
            storage.put_scalar("lr", 0.5 * (i + 1), smoothing_hint=False)
            storage.step()
        assert storage.iter == 8
        assert storage.latest() == {"loss": (3.0, 7), "lr": (1.5, 7)}
        assert storage.history("loss").values() == [(1.0, 5), (2.0, 6), (3.0, 7)]
        smoothed = storage.latest_with_smoothing_hint(window_size=2)
        assert smoothed == {"loss": (2.5, 7), "lr": (1.5, 7)}
        assert storage.smoothing_hints() == {"loss": True, "lr": False}
        with pytest.raises(ValueError, match="smoothing_hint"):
            storage.put_scalar("lr", 1.0)
        with pytest.raises(KeyError, match="nope"):
            storage.history("nope")


def test_storage_accepts_tensors_and_name_scope():
    import torch

    with EventStorage() as storage:
        storage.put_scalar("loss", torch.tensor(0.25))
        with storage.name_scope("val"):
            storage.put_scalars(acc=0.5, smoothing_hint=False)
        assert storage.latest() == {"loss": (0.25, 0), "val/acc": (0.5, 0)}
        assert isinstance(storage.latest()["loss"][0], float)


def test_storage_stack_and_error_outside():
    with pytest.raises(RuntimeError, match="EventStorage"):
        get_event_storage()
    with EventStorage() as outer:
        with EventStorage() as inner:
            assert get_event_storage() is inner
        assert get_event_storage() is outer
    with pytest.raises(RuntimeError):
        get_event_storage()


# ---------------------------------------------------------------------------------------
# JSONWriter
# ---------------------------------------------------------------------------------------


def test_json_writer_lines_and_values(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    writer = JSONWriter(str(path), window_size=4)
    with EventStorage() as storage:
        _run(storage, num_iters=23, writers=[writer], period=10, eval_at=14)
        # Nothing new: another write adds no line.
        writer.write()
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["iteration"] for d in lines] == [9, 14, 19, 22]
    # The eval result gets its own line at the iteration it was put.
    assert lines[1] == {"iteration": 14, "Acc@1": 97.123456789012345}
    for d in (lines[0], lines[2], lines[3]):
        i = d["iteration"]
        window = range(i - 3, i + 1)
        assert set(d) == {"iteration", "total_loss", "loss_cls", "data_time", "time", "lr"}
        # Smoothed scalars: exact median of the last 4 values (full float precision).
        assert d["total_loss"] == statistics.median([_loss(j) for j in window])
        assert d["loss_cls"] == statistics.median([_loss(j) / 2 for j in window])
        assert d["time"] == statistics.median([0.01 + 0.001 * (j % 4) for j in window])
        # Unsmoothed scalar: the raw latest value.
        assert d["lr"] == 0.1 * (i + 1)


def test_json_writer_appends_on_resume(tmp_path):
    path = tmp_path / "metrics.json"
    for start in (0, 5):
        writer = JSONWriter(str(path))
        with EventStorage(start_iter=start) as storage:
            storage.put_scalar("total_loss", 1.0)
            writer.write()
        writer.close()
    assert [json.loads(x)["iteration"] for x in path.read_text().splitlines()] == [0, 5]


# ---------------------------------------------------------------------------------------
# CommonMetricPrinter
# ---------------------------------------------------------------------------------------


@pytest.fixture
def events_log(caplog):
    # setup_logger (maybe called by another test in this process) stops the "libai"
    # logger from propagating to the root, where caplog listens: re-enable it here.
    libai_logger = logging.getLogger("libai")
    old_propagate = libai_logger.propagate
    libai_logger.propagate = True
    with caplog.at_level(logging.INFO, logger=events.__name__):
        yield caplog
    libai_logger.propagate = old_propagate


def test_common_metric_printer_line(events_log):
    printer = CommonMetricPrinter(batch_size=32, max_iter=10000)
    with EventStorage() as storage:
        _run(storage, num_iters=20, writers=[printer], period=10)
    lines = [r.getMessage() for r in events_log.records if "iteration:" in r.getMessage()]
    assert len(lines) == 2
    line = lines[1]
    window = range(0, 20)
    iter_time = sum(0.01 + 0.001 * (j % 4) for j in window) / 20
    eta = int(statistics.median([0.01 + 0.001 * (j % 4) for j in window]) * (10000 - 19 - 1))
    expected_order = [
        "eta: ", "iteration: 19/10000", "consumed_samples: 640", "total_loss: ", "loss_cls: ",
        "time: ", "data_time: ", "total_throughput: ", "lr: ",
    ]
    positions = [line.index(token) for token in expected_order]
    assert positions == sorted(positions), line
    assert eta > 60 and f"eta: {datetime.timedelta(seconds=eta)}" in line
    total_loss = statistics.median([_loss(j) for j in window])
    assert f"total_loss: {total_loss:.4g}" in line
    assert f"time: {iter_time:.4f} s/iter" in line
    data_time = sum(0.001 * (j % 3) for j in window) / 20
    assert f"data_time: {data_time:.4f} s/iter" in line
    throughput = float(re.search(r"total_throughput: ([\d.]+) samples/s", line).group(1))
    assert throughput == pytest.approx(32 / iter_time, abs=0.01)
    assert "lr: 2.00e+00" in line


def test_common_metric_printer_without_time_and_after_train(events_log):
    printer = CommonMetricPrinter(batch_size=8, max_iter=3)
    with EventStorage() as storage:
        storage.samples = 1234
        storage.put_scalar("total_loss", 0.5)
        printer.write()
        printer.write()  # same iteration: printed once
        storage.iter = 3  # after training: nothing
        printer.write()
    lines = [r.getMessage() for r in events_log.records if "iteration:" in r.getMessage()]
    assert len(lines) == 1
    assert "iteration: 0/3" in lines[0] and "consumed_samples: 1234" in lines[0]
    assert "time:" not in lines[0] and "lr: N/A" in lines[0]


# ---------------------------------------------------------------------------------------
# TensorboardXWriter
# ---------------------------------------------------------------------------------------


def test_tensorboard_writer_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = TensorboardXWriter(str(tmp_path / "tb"), window_size=4)
    with EventStorage() as storage:
        _run(storage, num_iters=20, writers=[writer], period=10, eval_at=14)
    writer.close()
    files = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"total_loss", "loss_cls", "lr", "time", "data_time", "Acc@1"} <= tags
    loss = acc.Scalars("total_loss")
    assert [e.step for e in loss] == [9, 19]
    assert loss[1].value == pytest.approx(statistics.median([_loss(j) for j in range(16, 20)]))
    assert [(e.step, e.value) for e in acc.Scalars("lr")] == [
        (9, pytest.approx(1.0)), (19, pytest.approx(2.0))
    ]
    assert [(e.step, e.value) for e in acc.Scalars("Acc@1")] == [(14, pytest.approx(97.123456))]


# ---------------------------------------------------------------------------------------
# setup_logger
# ---------------------------------------------------------------------------------------


def _flush(logger):
    for h in logger.handlers:
        h.flush()


def test_setup_logger_files_and_idempotent(tmp_path):
    name = "libai_test_logger_rank0"
    logger = setup_logger(str(tmp_path), distributed_rank=0, name=name)
    setup_logger(str(tmp_path), distributed_rank=0, name=name)
    assert len(logger.handlers) == 2  # one console + one file, not duplicated
    logger.info("hello %d", 7)
    logger.debug("debug goes to the file only")
    _flush(logger)
    text = (tmp_path / "log.txt").read_text()
    assert "hello 7" in text and "debug goes to the file only" in text
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def test_setup_logger_other_rank_has_no_console(tmp_path, capsys):
    name = "libai_test_logger_rank2"
    logger = setup_logger(str(tmp_path), distributed_rank=2, name=name)
    assert len(logger.handlers) == 1
    logger.info("from rank two")
    _flush(logger)
    assert "from rank two" in (tmp_path / "log.txt.rank2").read_text()
    assert not os.path.exists(tmp_path / "log.txt")
    assert "from rank two" not in capsys.readouterr().out
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
