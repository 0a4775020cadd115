"""Named pause points, so crash-safety tests can SIGKILL a build at an exact step.

Set RULES_KERAS_PAUSE_AT=<point> and the process announces the point on
stderr and sleeps there; the test then kills it. Unset (always, outside
tests), a pause point is one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "RULES_KERAS_PAUSE_AT"


def pause_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        print(f"rules_keras: paused at {name} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(3600)
