"""The progress helper: plain periodic lines off a terminal, a rich bar on one, nothing when disabled."""

import io

from pixdiff.runtime import progress as progress_module
from pixdiff.runtime.progress import Snapshot, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_prints_a_line_per_tenth_and_a_final_one():
    out = io.StringIO()
    with progress("sample", "images", stream=out) as on_progress:
        for done in range(4, 41, 4):  # batches of 4 of 40
            on_progress(done, 40)
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"sample: {n}/40 images ({n * 100 // 40}%)"
                                                      for n in range(4, 41, 4)]
    assert "ETA" in lines[0] and "images/s" in lines[0] and "ETA" not in lines[-1]
    assert "\r" not in out.getvalue()


def test_a_slow_job_prints_by_time_between_tenths(monkeypatch):
    clock = iter([0.0, 31.0, 62.0, 63.0])  # start, then one report per call
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    with progress("eval samples", stream=out) as on_progress:
        on_progress(1, 1000)
        on_progress(2, 1000)
    assert out.getvalue().splitlines() == [
        "eval samples: 1/1000 images (0%), 0.0 images/s, ETA 8.6 h",
        "eval samples: 2/1000 images (0%), 0.0 images/s, ETA 8.6 h",
    ]


def test_disabled_or_unused_it_prints_nothing(capsys):
    with progress("sample", enabled=False) as on_progress:
        assert on_progress is None  # library functions then stay silent
    with progress("eval reference") as on_progress:  # a cached reference: no work reported
        pass
    assert capsys.readouterr().err == ""


def test_progress_goes_to_stderr_not_stdout(capsys):
    with progress("bench latency", "calls") as on_progress:
        on_progress(1, 2)
        on_progress(2, 2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[-1].startswith("bench latency: 2/2 calls (100%)")


def test_on_a_terminal_it_draws_a_bar_ending_at_the_total():
    out = Terminal()
    with progress("data prepare", stream=out) as on_progress:
        for done in range(1, 6):
            on_progress(done, 5)
    assert "5/5" in out.getvalue() and "━" in out.getvalue()


def test_snapshot_line():
    assert Snapshot(128, 256, 10.0).line("sample", "images") == "sample: 128/256 images (50%), 12.8 images/s, ETA 10 s"
    assert Snapshot(256, 256, 150.0).line("sample", "images") == "sample: 256/256 images (100%), 1.7 images/s, 2.5 min"
