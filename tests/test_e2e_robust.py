"""Bad input and broken surroundings cost no good artifact and show no traceback.

A cache that cannot be written (read-only, full of inodes, a file) serves
what it can and never fails a build; settings errors are one message; an
`out` over another target's manifest is refused naming both targets; model
code that exits, weights that are not weights, and a build killed mid-job
get words, not crashes; workers and servers never see the remote's secrets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import TINY_MODELS, doit, new_workspace, server_info, summary

pytestmark = pytest.mark.e2e

HEADER = "from rules import keras_export, keras_model\n"
SECRET = "s3cr3t-Pa55"
TOKEN = "t0ken-XYZ"
LIB = TINY_MODELS + f'''

def clean():
    """Fails the build if the job can see a remote-cache secret."""
    import os
    leaked = [k for k, v in os.environ.items() if "{SECRET}" in v or "{TOKEN}" in v]
    assert not leaked, f"secrets in the job's environment: {{leaked}}"
    return small()


def exits():
    import sys
    sys.exit(3)


def hard_exit():
    import os
    os._exit(0)
'''
FILES = {
    "lib/__init__.py": "",
    "lib/model.py": LIB,
    "m/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:small", weights="small.weights.h5")\n'
        'keras_export(name="a", model=":m")\n'
        'keras_export(name="b", model=":m", format="onnx")\n'
    ),
}
WEIGHTS = """
import sys
sys.path.insert(0, ".")
from lib.model import small
small().save_weights("m/small.weights.h5")
"""


def _workspace(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    root = new_workspace(tmp_path / "ws", {**FILES, **(extra or {})})
    subprocess.run([sys.executable, "-c", WEIGHTS], cwd=root, check=True, capture_output=True)
    return root


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@contextmanager
def _mount(*args: str) -> Iterator[None]:
    """Run `mount args...` for the body (the last argument is the mount point)."""
    made = subprocess.run(["mount", *args], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount here ({made.stderr.strip()}); needs root and mount rights")
    try:
        yield
    finally:
        subprocess.run(["umount", args[-1]], check=True)


# -- a cache that cannot be written -----------------------------------------------


def test_a_read_only_cache_serves_hits_and_is_never_written(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    cache = tmp_path / "cache"
    env = {"RULES_KERAS_CACHE_DIR": str(cache), "RULES_KERAS_SERVER": "0"}
    assert doit(ws, "export", env=env).returncode == 0
    before = _files(cache)
    for artifact in (ws / "artifacts").iterdir():
        subprocess.run(["rm", "-rf", str(artifact)], check=True)
    with _mount("--bind", str(cache), str(cache)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(cache)], check=True)
        result = doit(ws, "export", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary(result) == "0 built, 2 restored, 0 up to date, 0 failed"
        assert result.stderr.count(f"the cache folder {cache} is on a read-only filesystem") == 1
        assert "Traceback" not in result.stderr
        # A target the cache lacks is built, and not stored.
        (ws / "m/BUILD.py").write_text(FILES["m/BUILD.py"]
                                       + 'keras_export(name="c", model=":m", tolerance=1e-3)\n')
        more = doit(ws, "export", env=env)
        assert summary(more) == "1 built, 0 restored, 2 up to date, 0 failed", more.stderr
        assert _files(cache) == before


def test_a_cache_folder_that_is_a_file_costs_one_warning(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    result = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache),
                                     "RULES_KERAS_SERVER": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed"
    assert result.stderr.count(f"the cache folder {cache} is a file, not a folder") == 1
    assert "Traceback" not in result.stderr


def test_a_cache_filesystem_out_of_inodes_costs_one_warning(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    with _mount("-t", "tmpfs", "-o", "size=64m,nr_inodes=64", "tmpfs", str(cache)):
        for i in range(100):  # use up every inode
            try:
                (cache / f"filler{i}").touch()
            except OSError:
                break
        result = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache),
                                         "RULES_KERAS_SERVER": "0"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed"
        assert result.stderr.count(f"the cache folder {cache} has no space or no inodes") == 1
        assert "Traceback" not in result.stderr


# -- settings and declarations --------------------------------------------------------


@pytest.mark.parametrize(
    ("pyproject", "env", "message"),
    [
        ('[tool.rules_keras]\ncach_dir = "x"\n', {},
         "unknown key 'cach_dir'. Did you mean 'cache_dir'"),
        ("", {"RULES_KERAS_LOCK_TIMEOUT": "soon"}, "RULES_KERAS_LOCK_TIMEOUT must be a number"),
        ("", {"RULES_KERAS_REMOTE_CACHE": "ftp://cache"}, "https://, grpc:// or grpcs:// URL"),
        ("", {"RULES_KERAS_SERVER": "flase"}, "Did you mean 'false'"),
    ],
)
def test_settings_errors_are_one_message_and_no_traceback(
    tmp_path: Path, pyproject: str, env: dict[str, str], message: str
) -> None:
    ws = new_workspace(tmp_path / "ws", {**FILES, "pyproject.toml": pyproject})
    result = doit(ws, "export", env=env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_an_out_over_another_targets_manifest_names_both_and_harms_nothing(
    tmp_path: Path,
) -> None:
    ws = _workspace(tmp_path)
    assert doit(ws, "export").returncode == 0
    good = (ws / "artifacts/m/a.manifest.json").read_bytes()
    (ws / "m/BUILD.py").write_text(
        FILES["m/BUILD.py"] + 'keras_export(name="bad", model=":m", out="a.manifest.json")\n'
    )
    result = doit(ws, "--continue", "export")
    assert result.returncode != 0
    assert "targets //m:a, //m:bad write into each other's paths" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert (ws / "artifacts/m/a.manifest.json").read_bytes() == good


# -- model code and weights --------------------------------------------------------------


@pytest.mark.parametrize(("factory", "message"), [
    ("exits", "the model code called sys.exit(3) during the job"),
    ("hard_exit", "the model code ended the process (os._exit"),
])
def test_model_code_that_exits_is_named_and_keeps_the_server(
    tmp_path: Path, factory: str, message: str
) -> None:
    ws = _workspace(tmp_path, {"x/BUILD.py": HEADER + (
        f'keras_model(name="m", factory="lib.model:{factory}", weights="../m/small.weights.h5")\n'
        'keras_export(name="e", model=":m")\n'
    )})
    result = doit(ws, "--continue", "export")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in out, out
    assert "out of memory" not in out and "export server failed" not in out
    assert summary(result).endswith("1 failed") and summary(result).startswith("2 built")


def test_weights_that_are_not_hdf5_and_a_folder_for_weights_are_named(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {
        "y/BUILD.py": HEADER + (
            'keras_model(name="lfs", factory="lib.model:small", weights="lfs.weights.h5")\n'
            'keras_export(name="e", model=":lfs")\n'
            'keras_model(name="dir", factory="lib.model:small", weights="dir.weights.h5")\n'
            'keras_export(name="f", model=":dir")\n'
        ),
        "y/lfs.weights.h5": "version https://git-lfs.github.com/spec/v1\noid sha256:00\n",
    })
    (ws / "y/dir.weights.h5").mkdir()
    result = doit(ws, "--continue", "export")
    out = result.stdout + result.stderr
    assert "weights y/lfs.weights.h5 is not an HDF5 file" in out, out
    assert "attribute 'weights': y/dir.weights.h5 is a folder, not a file" in out, out


def test_a_build_killed_mid_job_leaves_its_worker_quiet(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    env = {**os.environ, "RULES_KERAS_SERVER": "0", "RULES_KERAS_PAUSE_AT": "export:3",
           "RULES_KERAS_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "doit", "export"], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "paused at export" in line:
            break
    proc.send_signal(signal.SIGKILL)  # the worker finishes its job, then finds no reader
    _, rest = proc.communicate(timeout=120)  # EOF once the worker has exited too
    assert "Traceback" not in rest and "BrokenPipe" not in rest, rest


# -- secrets ----------------------------------------------------------------------


@pytest.mark.parametrize("server", ["1", "0"])
def test_workers_and_servers_never_see_the_remote_secrets(tmp_path: Path, server: str) -> None:
    ws = _workspace(tmp_path, {
        "s/BUILD.py": HEADER + (
            'keras_model(name="m", factory="lib.model:clean", weights="../m/small.weights.h5")\n'
            'keras_export(name="e", model=":m")\n'
        ),
        "pyproject.toml": '[tool.rules_keras]\nremote_headers_env = ["TEAM_TOKEN"]\n',
    })
    env = {
        "RULES_KERAS_SERVER": server,
        # Nothing listens on port 9: reads fail with one warning, the build goes on.
        "RULES_KERAS_REMOTE_CACHE": f"http://ci:{SECRET}@127.0.0.1:9/cache",
        "TEAM_TOKEN": f"X-Team-Token: {TOKEN}",
    }
    result = doit(ws, "export", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == "3 built, 0 restored, 0 up to date, 0 failed"
    assert SECRET not in result.stdout + result.stderr and TOKEN not in result.stdout
    if server == "1":
        info = server_info()
        assert info is not None and isinstance(info["pid"], int)
        pid = info["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert SECRET.encode() not in environ and TOKEN.encode() not in environ
