"""Tests for rules.cache.http_pool: the transfer deadline against a real nginx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from servers import NginxServer, running_nginx

from rules.cache import http_pool


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxServer]:
    with running_nginx(tmp_path / "nginx") as server:
        yield server


def test_a_late_deadline_never_cuts_a_connection_handed_back(nginx: NginxServer) -> None:
    (nginx.root / "ac").mkdir()
    (nginx.root / "ac" / "entry").write_bytes(b"x" * 1000)
    split = urlsplit(nginx.ro_url)
    assert split.hostname is not None
    transport = http_pool.Transport("http", split.hostname, split.port, timeout=5, max_idle=2)
    path = f"{split.path}/ac/entry"
    try:
        with transport.request("GET", path, {}, None, 0) as response:
            assert response.read(4096) == b"x" * 1000
            # The body is read, so urllib3 has put the connection back in the
            # pool; the request's deadline firing now must leave it alone.
            http_pool._expire(http_pool._local.exchange)
        with transport.request("GET", path, {}, None, 0) as response:
            assert response.status == 200 and response.read(4096) == b"x" * 1000
    finally:
        transport.close()
    log = nginx.access_log(2)
    assert [entry.connection_requests for entry in log] == [1, 2], "the socket was cut"
