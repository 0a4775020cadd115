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


def pause_point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted is None:
        return
    point, _, seconds = wanted.partition(":")
    if point == name:
        print(f"rules_keras: paused at {name} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(float(seconds) if seconds else 3600)
