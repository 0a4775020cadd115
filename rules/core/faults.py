"""Named pause points, so crash-safety tests can stop a build at an exact step.

RULES_KERAS_PAUSE_AT=<point> makes the process announce the point on stderr
and sleep there, for a test to SIGKILL it; `<point>:<seconds>` sleeps that
long and then goes on, for a test to change something mid-build. Unset
(always, outside tests), a pause point is one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "RULES_KERAS_PAUSE_AT"
# Where the announcement goes while a job's descriptors 1 and 2 point at its
# log (rules.execution.job_output sets it): the build's stderr, which the
# test is reading. None: descriptor 2.
console_fd: int | None = None


def pause_point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted is None:
        return
    point, _, seconds = wanted.partition(":")
    if point == name:
        sys.stderr.flush()
        fd = 2 if console_fd is None else console_fd
        os.write(fd, f"rules_keras: paused at {name} (pid {os.getpid()})\n".encode())
        time.sleep(float(seconds) if seconds else 3600)
