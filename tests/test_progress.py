"""Progress of a run: task counts from the scheduler, the line and bar displays, the dashboard.

The counts are compared with the number of tasks each test submits itself
(``client.map`` and ``dask.compute`` of delayed calls, one task each); the
displays are fed records whose tenths are known; the dashboard is fetched
over HTTP from an embedded cluster.
"""

from __future__ import annotations

import io
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import dask
import pytest
from distributed import Client, LocalCluster, wait
from rich.console import Console

from debond.cluster import cluster
from debond.progress import BarDisplay, LineDisplay, StageRecord, Tracker

#: A progress line of a non-terminal run.
LINE = re.compile(
    r"^(?P<stage>\S+) +(?P<sample>\S+) +(?P<percent>\d+) % \((?P<done>\d+)/(?P<total>\d+) tasks\)"
    r"(, (\d+ s|\d+ min \d\d s|\d+ h \d\d min) left)?$"
)
#: Terminal control: escape sequences, carriage returns, other C0 codes but the newline.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def record(done: int, total: int, seconds: float = 10.0) -> StageRecord:
    return StageRecord("segment", "c03", started=1.0, seconds=seconds, done=done, total=total)


# ----------------------------------------------------------------- displays


def test_lines_come_once_per_tenth_and_say_what_is_left() -> None:
    lines: list[str] = []
    display = LineDisplay(lines.append)
    looks = range(0, 301, 7)  # one look every 7 tasks of 300, 1 task per 0.1 s
    for done in looks:
        display.show([record(done, 300, seconds=done / 10)])
    display.close()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    # the first look past each tenth (10 % to 90 %) prints the share reached then
    expected, tenth = [], 0
    for done in looks:
        if tenth < done * 10 // 300 < 10:
            tenth = done * 10 // 300
            expected.append((f"{100 * done / 300:.0f}", str(done)))
    assert [(m["percent"], m["done"]) for m in parsed if m] == expected
    assert len(expected) == 9
    assert not any(CONTROL.search(line) for line in lines)
    # time left at the pace so far: elapsed × left / done = (300 - done) × 0.1 s
    for line, (_, done) in zip(lines, expected, strict=True):
        assert line.endswith(f", {round((300 - int(done)) / 10)} s left"), line


def test_a_stage_that_submits_more_tasks_counts_its_tenths_again() -> None:
    lines: list[str] = []
    display = LineDisplay(lines.append)
    display.show([record(5, 5)])  # a first small graph, finished: nothing (the run says done)
    display.show([record(5, 105)])  # a second graph: 5 % of the new total
    display.show([record(40, 105)])
    assert [line.split()[2] for line in lines] == ["38"]


def test_a_bar_shows_tasks_and_time_left_on_a_terminal() -> None:
    screen = io.StringIO()
    display = BarDisplay(Console(file=screen, force_terminal=True, width=100))
    display.echo("segment c03        running")
    display.show([record(120, 300)])
    display.close()
    out = screen.getvalue()
    assert "segment c03        running" in out
    assert "120/300" in out and "tasks" in out
    assert "━" in out  # the bar
    assert "\x1b[" in out  # drawn with terminal control, unlike the lines


def test_the_step_is_checked() -> None:
    with pytest.raises(ValueError, match="step must be 1 to 100 per cent; got 0"):
        LineDisplay(print, step=0)


# ----------------------------------------------------------------- counts on a cluster


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address="127.0.0.1:0",
        ) as local,
        Client(local) as connected,
    ):
        yield connected


def slow(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def test_each_stage_counts_its_own_tasks_submitted_from_its_thread(client: Client) -> None:
    """Two stages at once, one through futures, one through dask.compute (as a table
    stage does): each record counts exactly the tasks its thread submitted."""
    with Tracker(client, interval_s=0.05) as tracker:

        def futures(n: int) -> None:
            with tracker.stage("recon", "c01"):
                wait(client.map(slow, range(n), seconds=0.01, pure=False))

        def delayed(n: int) -> None:
            with tracker.stage("measure", "c02"):
                dask.compute(*(dask.delayed(slow)(i, 0.01) for i in range(n)))

        threads = [
            threading.Thread(target=futures, args=(37,)),
            threading.Thread(target=delayed, args=(23,)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    counts = {(r.stage, r.sample): (r.done, r.total) for r in tracker.records}
    assert counts == {("recon", "c01"): (37, 37), ("measure", "c02"): (23, 23)}
    assert all(not r.running and r.seconds > 0 for r in tracker.records)
    assert tracker.peak_bytes > 0 and all(r.peak_bytes > 0 for r in tracker.records)


def test_a_running_stage_is_shown_in_lines_every_tenth(client: Client) -> None:
    lines: list[str] = []
    with Tracker(client, LineDisplay(lines.append), interval_s=0.05) as tracker:
        with tracker.stage("prep", "c00"):
            wait(client.map(slow, range(60), seconds=0.05, pure=False))
    parsed = [LINE.match(line) for line in lines]
    assert lines and all(parsed), lines
    tenths = [int(m["percent"]) // 10 for m in parsed if m]
    assert tenths == sorted(set(tenths)) and len(tenths) >= 3, lines
    assert {(m["stage"], m["sample"], m["total"]) for m in parsed if m} == {("prep", "c00", "60")}


def test_a_running_stage_is_a_bar_on_a_terminal(client: Client) -> None:
    screen = io.StringIO()
    display = BarDisplay(Console(file=screen, force_terminal=True, width=100))
    with Tracker(client, display, interval_s=0.05) as tracker:
        display.echo("recon   c01        running")
        with tracker.stage("recon", "c01"):
            wait(client.map(slow, range(40), seconds=0.05, pure=False))
    out = screen.getvalue()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)  # the bars' colours and cursor moves
    assert "recon   c01        running" in plain
    assert re.search(r"recon +c01 +[━╺]+ +\d+/40 tasks", plain), plain


# ----------------------------------------------------------------- the dashboard


def test_the_dashboard_link_of_an_embedded_cluster_serves_its_status_page() -> None:
    """The link a run prints: 200 and Dask's page, not "Dask needs bokeh>=3.1.0"."""
    with cluster(workers=1) as connected:
        link = connected.dashboard_link
        deadline = time.monotonic() + 60
        while True:  # the dashboard starts with the scheduler; wait until it answers
            try:
                with urllib.request.urlopen(link, timeout=10) as page:
                    status, body = page.status, page.read().decode(errors="replace")
                break
            except (urllib.error.URLError, ConnectionError) as error:
                if time.monotonic() > deadline:
                    pytest.fail(f"{link} did not answer within 60 s: {error}")
                time.sleep(0.1)
    assert status == 200
    assert "bokeh" in body.lower() and "Dask needs bokeh" not in body
