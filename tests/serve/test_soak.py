"""``omniflex bench soak``: a short soak of the real server, and the resource counters it reads."""

from __future__ import annotations

import os
import threading

from omniflex.serve.soak import resources, run_soak


def test_resources_see_a_leaked_file_and_thread() -> None:
    before = resources()
    files = [open(os.devnull) for _ in range(5)]  # noqa: SIM115
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        during = resources()
        assert during["fds"] - before["fds"] == 5
        assert during["threads"] - before["threads"] == 1
        assert during["rss_mb"] > 0
    finally:
        stop.set()
        thread.join()
        for f in files:
            f.close()


def test_a_short_soak_serves_both_kinds_without_errors() -> None:
    report = run_soak(minutes=0.1, warmup_seconds=3, precision="float32", rest=1, sessions=1,
                      turns_per_session=1)  # fmt: skip
    kinds = report["by_kind"]
    assert report["errors"] == 0, {k: v["first_errors"] for k, v in kinds.items()}
    assert any(k.startswith("rest_") and v["requests"] for k, v in kinds.items())
    assert kinds["realtime_turn"]["requests"] >= 1
    for side in ("start", "end"):
        assert set(report["resources"][side]) == {"rss_mb", "fds", "threads"}
    assert isinstance(report["flat"], bool)
