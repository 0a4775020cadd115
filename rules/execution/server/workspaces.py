"""Workspaces a shared export server has served, and a check that it holds none of their code."""

from __future__ import annotations

import os
import sys
from collections import OrderedDict

# A server may live for days; status shows the most recent ones.
LIMIT = 32


class Workspaces:
    """Jobs run per workspace root, least recently used first."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, int] = OrderedDict()

    def add(self, root: str) -> None:
        self._jobs[root] = self._jobs.pop(root, 0) + 1
        while len(self._jobs) > LIMIT:
            self._jobs.popitem(last=False)

    def to_json(self) -> dict[str, int]:
        return dict(self._jobs)

    def modules_loaded(self) -> list[str]:
        """Modules of this process imported from a workspace it served: must stay empty.

        Only the forked children import model code. A module here would be
        seen, stale, by every later job of every workspace. The rules package
        is ours even when a workspace is a checkout of it.
        """
        roots = tuple(os.path.join(root, "") for root in self._jobs)
        found = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if (isinstance(path, str) and path.startswith(roots)
                    and name != "rules" and not name.startswith("rules.")):
                found.append(name)
        return sorted(found)
