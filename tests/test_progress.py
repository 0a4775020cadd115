"""The build's console: one line per finished target, the counts line kept byte for byte,
the line after it, and a job's output captured at the descriptor level in a real process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from rules.job_logs import begin, failure_excerpt, log_path, tail
from rules.loading.labels import Label
from rules.progress import Progress, planned
from rules.reporter import parse_summary, summary_line


def test_a_finished_target_gets_one_line_with_its_index_and_time() -> None:
    progress = Progress(100)
    progress.start("//models/x:y")
    line = progress.finish("//models/x:y", "built").line()
    assert line.startswith("[  1/100] built //models/x:y (")
    assert line.endswith(" s)")
    up_to_date = progress.finish("//models/x:z", "up to date").line()
    assert up_to_date == "[  2/100] up to date //models/x:z"
    restored = progress.finish("//m:r", "restored", "from the local cache").line()
    assert restored == "[  3/100] restored //m:r from the local cache"
    progress.start("//m:f")
    assert progress.finish("//m:f", "built", "(forced)").line().startswith(
        "[  4/100] built //m:f (forced, 0.")


def test_the_summary_line_is_unchanged_and_still_parses() -> None:
    counts = Counter({"built": 3, "failed": 1})
    line = summary_line(counts)
    assert line == "3 built, 0 restored, 0 up to date, 1 failed"
    text = f"[1/4] built //a:b (0.10 s)\n{line}\nslowest: //a:b (0.10 s); 2 not attempted\n"
    assert parse_summary(text) == {"built": 3, "restored": 0, "up to date": 0, "failed": 1}


def test_the_closing_line_names_the_slowest_and_what_a_failure_left() -> None:
    progress = Progress(7)
    for label in ("//a:1", "//a:2", "//a:3", "//a:4"):
        progress.start(label)
        progress.finish(label, "built")
    assert progress.closing_line(failed=False).startswith("slowest: //a:")
    assert progress.closing_line(failed=False).count("(") == 3
    assert progress.closing_line(failed=True).endswith(
        "; 3 not attempted; `doit --continue` builds them")


def test_planned_follows_task_dep_once() -> None:
    class Task:
        def __init__(self, *deps: str) -> None:
            self.task_dep = list(deps)

    tasks = {"export": Task("//a:e", "//b:e"), "//a:e": Task("//a:w"), "//b:e": Task("//a:w"),
             "//a:w": Task(), "//c:e": Task()}
    assert sorted(planned(tasks, ["export"])) == ["//a:e", "//a:w", "//b:e", "export"]


def test_the_log_sits_under_its_package_and_a_failure_shows_its_tail(tmp_path: Path) -> None:
    path = log_path(tmp_path / ".rules_keras", Label("models/x", "y"))
    assert path == tmp_path / ".rules_keras/logs/models/x/y.log"
    begin(path, Label("models/x", "y"), ["no previous build"])
    with open(path, "a") as handle:
        handle.writelines(f"line {n}\n" for n in range(50))
    assert tail(path)[0] == "line 20" and tail(path)[-1] == "line 49"
    excerpt = failure_excerpt(path, tmp_path)
    assert excerpt.splitlines()[0] == "last 30 lines of .rules_keras/logs/models/x/y.log:"
    assert excerpt.splitlines()[-1] == "full log: .rules_keras/logs/models/x/y.log"
    begin(path, Label("models/x", "y"), [])  # the next build starts it over
    assert failure_excerpt(path, tmp_path) == (
        "(the job printed nothing; log: .rules_keras/logs/models/x/y.log)")


CAPTURE = textwrap.dedent("""
    import logging, os, sys, warnings
    from rules.execution.job_output import captured

    def noisy(tag):
        print(f"print {tag}")
        sys.stderr.write(f"stderr {tag}\\n")
        os.write(2, f"native fd2 {tag}\\n".encode())
        os.write(1, f"native fd1 {tag}\\n".encode())
        logging.getLogger("absl").warning("absl %s", tag)
        warnings.warn("np.object is deprecated", FutureWarning)

    for log in sys.argv[1:]:
        with captured(log):
            noisy(log[-5:])
    print("after, on the console")
""")


def test_captured_takes_every_kind_of_output_and_repeats_warnings(tmp_path: Path) -> None:
    first, second = tmp_path / "one.log", tmp_path / "two.log"
    result = subprocess.run([sys.executable, "-c", CAPTURE, str(first), str(second)],
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "after, on the console\n"
    assert result.stderr == ""
    for log in (first, second):
        text = log.read_text()
        tag = log.name[-5:]
        for kind in ("print", "stderr", "native fd2", "native fd1", "absl"):
            assert f"{kind} {tag}" in text, (kind, text)
        # A worker runs many jobs: each log has its own copy of a warning.
        assert "FutureWarning: np.object is deprecated" in text
