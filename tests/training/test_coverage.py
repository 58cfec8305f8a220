"""Coverage.check: every row once per epoch across the workers, or an error it reports."""

from __future__ import annotations

import numpy as np

from semisep.training.coverage import Coverage
from semisep.training.stream import checksum, initial_state
from tests.training.test_stream import draw, make, write_store


def _two_workers(tmp_path):
    files = write_store(tmp_path, rows=(40, 25))
    streams = [make(files, initial_state(rank, 2, 16)) for rank in (0, 1)]
    for stream in streams:
        draw(stream, 33)  # each worker's share of epoch 0 (33 and 32 rows), then into epoch 1
    return files, streams


def test_a_finished_epoch_drawn_once_reports_no_error(tmp_path):
    files, streams = _two_workers(tmp_path)
    coverage = Coverage({"vocals": streams[0]})
    checked = coverage.check({"0": Coverage({"vocals": streams[0]}).drawn(), "1": Coverage({"vocals": streams[1]}).drawn()})
    assert checked == {"data_epochs/vocals": 1.0, "data_coverage_errors": 0.0}
    # one worker alone has not finished the epoch: nothing to check yet
    assert Coverage({"vocals": streams[0]}).check({"0": Coverage({"vocals": streams[0]}).drawn()}) == {
        "data_coverage_errors": 0.0}
    assert Coverage({"pool": object()}).check({}) == {}  # in-memory pools have no counts


def test_a_row_drawn_twice_or_skipped_is_an_error_named_once(tmp_path, capsys):
    files, streams = _two_workers(tmp_path)
    every = {str(r): Coverage({"vocals": s}).drawn() for r, s in enumerate(streams)}
    # worker 1 drew row 7 instead of row 8 in epoch 0: the count is right, the checksum is not
    count, total = every["1"]["vocals"][0]
    swapped = (total - checksum(np.array([8])) + checksum(np.array([7]))) & ((1 << 64) - 1)
    every["1"]["vocals"][0] = [count, swapped]
    coverage = Coverage({"vocals": streams[0]})
    assert coverage.check(every)["data_coverage_errors"] == 1.0
    assert "training stream 'vocals', epoch 0: 65 rows drawn of 65, but not each once" in capsys.readouterr().out
    assert coverage.check(every)["data_coverage_errors"] == 1.0 and capsys.readouterr().out == ""  # warned once
    # a row drawn twice: one more than the stream holds
    every["1"]["vocals"][0] = [count + 1, (total + checksum(np.array([8]))) & ((1 << 64) - 1)]
    assert coverage.check(every)["data_coverage_errors"] == 1.0
