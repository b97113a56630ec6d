"""CLI ergonomics: help with docker/oras-style metavars and an example, --version, one environment rule for every
flag, JSON errors under --json, exit codes 8 (local I/O) and 130/143 (interrupted), full-width plain tables when
piped, plain progress lines off a terminal and --quiet, and the missing-path message of a typed push."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import run_cli, write_random
from support.fakeserver import FakeServer

from ociart.cli.app import command

COMMANDS = sorted(command().commands)
LONG = "a-rather-long-directory-name-for-the-table/and-an-even-longer-file-name-that-never-fits.safetensors"


def _json(text: str) -> dict:  # type: ignore[type-arg]
    return json.loads(text)


def _artifact(tmp_path: Path, ref: str = "demo/ergo:v1") -> tuple[str, str]:
    root = tmp_path / "art"
    (root / LONG).parent.mkdir(parents=True, exist_ok=True)
    (root / LONG).write_bytes(b"weights\n")
    pushed = run_cli("push", ref, str(root))
    assert pushed.returncode == 0, pushed.stderr
    return ref, pushed.stdout.strip()


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_no_python_types_and_an_example(name: str) -> None:
    proc = run_cli(name, "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert not re.search(r"<[\w\[\]. ]+>", text), text  # no <str>, <list[str]>, <path>
    assert not re.search(r"\{\w+\}", text), text  # no {ref}
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: ociart {name} [OPTIONS]"), usage
    assert "Example:" in text and f"ociart {name} " in text.split("Example:", 1)[1], text


def test_push_usage_line_and_metavars() -> None:
    text = run_cli("push", "--help").stdout
    assert text.splitlines()[0] == "Usage: ociart push [OPTIONS] REF PATH..."
    for needle in ("--kind KIND", "--annotation KEY=VALUE", "--params-file FILE", "--config FILE[:MEDIATYPE]"):
        assert needle in text, needle


def test_version() -> None:
    import ociart

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"ociart {ociart.__version__}\n"


def test_flags_from_the_environment(tmp_path: Path) -> None:
    """OCIART_FOO_BAR for --foo-bar; a repeatable flag takes a comma-separated list; the flag beats the env."""
    root = tmp_path / "m"
    root.mkdir()
    (root / "w.bin").write_bytes(b"x")
    env = {"OCIART_ANNOTATION": "a=1,b=2"}
    assert run_cli("push", "demo/env:v1", str(root), env=env).returncode == 0
    got = _json(run_cli("inspect", "demo/env:v1", "--json").stdout)["manifest"]["annotations"]
    assert {"a": "1", "b": "2"}.items() <= got.items()
    assert run_cli("push", "demo/env:v2", str(root), "-a", "c=3", env=env).returncode == 0
    got = _json(run_cli("inspect", "demo/env:v2", "--json").stdout)["manifest"]["annotations"]
    assert got.get("c") == "3" and "a" not in got and "b" not in got
    # a boolean flag: OCIART_JSON=1 is --json
    out = run_cli("resolve", "demo/env:v1", env={"OCIART_JSON": "1"})
    assert out.returncode == 0 and _json(out.stdout)["digest"].startswith("sha256:")
    # a valued flag: a bad value from the environment is refused like a bad flag value
    bad = run_cli("pull", "demo/env:v1", "-o", str(tmp_path / "o"), env={"OCIART_CONCURRENCY": "0"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert run_cli("pull", "demo/env:v1", "-o", str(tmp_path / "o"), "--concurrency", "2",
                   env={"OCIART_CONCURRENCY": "0"}).returncode == 0
    # existing variables keep working next to the rule
    home = tmp_path / "other-home"
    assert run_cli("push", "demo/env:v3", str(root), env={"OCIART_HOME": str(home)}).returncode == 0
    assert (home / "store" / "index.json").is_file()


def test_json_errors_on_stdout(tmp_path: Path) -> None:
    missing = run_cli("resolve", "demo/none:v1", "--json")
    assert missing.returncode == 3
    err = _json(missing.stdout)
    assert err["code"] == "not-found" and err["exit_code"] == 3 and "not found" in err["error"]
    assert missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    usage = run_cli("push", "--json")
    assert usage.returncode == 2 and _json(usage.stdout)["code"] == "usage"


def test_json_error_of_verify_lists_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    ref, _ = _artifact(tmp_path, "demo/unsigned:v1")
    keys = tmp_path / "keys"
    keys.mkdir()
    assert run_cli("keygen", "--output-key-prefix", str(keys / "a")).returncode == 0
    assert run_cli("keygen", "--output-key-prefix", str(keys / "b")).returncode == 0
    unsigned = run_cli("verify", ref, "--key", str(keys / "a.pub"), "--json")
    assert unsigned.returncode == 5
    err = _json(unsigned.stdout)
    assert err["code"] == "verification" and err["exit_code"] == 5 and err["rejected"] == []
    assert run_cli("sign", ref, "--key", str(keys / "b.key")).returncode == 0
    wrong = run_cli("verify", ref, "--key", str(keys / "a.pub"), "--json")
    assert wrong.returncode == 5
    rejected = _json(wrong.stdout)["rejected"]
    assert len(rejected) == 2 and all("does not verify" in r for r in rejected), rejected


def test_local_io_errors_exit_8(tmp_path: Path) -> None:
    ref, _ = _artifact(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    for out in (blocker, blocker / "sub"):
        proc = run_cli("pull", ref, "-o", str(out), "--json")
        assert proc.returncode == 8, proc.stderr
        assert proc.stderr.startswith("error: ") and str(blocker.name) in proc.stderr and "Traceback" not in proc.stderr
        assert _json(proc.stdout)["code"] == "local-io"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("as_json", [False, True])
def test_interrupted(signum: int, code: int, as_json: bool) -> None:
    """A command stuck on a silent registry: SIGINT exits 130, SIGTERM 143, `error: interrupted` (JSON too)."""
    asked = threading.Event()
    release = threading.Event()

    def handler(method: str, path: str, headers: dict[str, str], body: object) -> tuple[int, dict[str, str], bytes]:
        asked.set()
        release.wait(30)
        return 404, {}, b""

    with FakeServer(handler) as server:
        try:
            args = [sys.executable, "-m", "ociart", "resolve", "--plain-http", f"{server.host}/x/y:v1"]
            proc = subprocess.Popen(args + (["--json"] if as_json else []), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=os.environ.copy())
            assert asked.wait(60), "the command never reached the server"
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            release.set()
    assert proc.returncode == code, err
    assert err == "error: interrupted\n"
    if as_json:
        assert _json(out) == {"error": "interrupted", "code": "interrupted", "exit_code": code}
    else:
        assert out == ""


def test_tables_full_width_when_piped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """inspect (stdout) and verify (stderr) print plain full-width text when their stream is not a terminal."""
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    ref, digest = _artifact(tmp_path)
    shown = run_cli("inspect", ref)
    assert shown.returncode == 0
    line = next(x for x in shown.stdout.splitlines() if LONG in x)
    assert len(line) > 80 and "│" not in shown.stdout and "━" not in shown.stdout
    layer = _json(run_cli("inspect", ref, "--json").stdout)["files"][0]["digest"]
    assert layer in line  # the full digest, not cut
    assert run_cli("keygen", "--output-key-prefix", str(tmp_path / "k")).returncode == 0
    assert run_cli("sign", ref, "--key", str(tmp_path / "k.key")).returncode == 0
    verified = run_cli("verify", ref, "--key", str(tmp_path / "k.pub"))
    assert verified.returncode == 0 and verified.stdout == digest + "\n"
    rows = [x for x in verified.stderr.splitlines() if x.startswith("signature")]
    assert len(rows) == 2 and all(str(tmp_path / "k.pub") in r and "sha256:" in r for r in rows)
    assert all(len(r.split("sha256:")[1].strip()) == 64 for r in rows)  # full digests
    assert "│" not in verified.stderr and "─" not in verified.stderr


def test_lineage_plain_when_piped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n")
    assert run_cli("push", "demo/data:v1", str(data), "--kind", "dataset").returncode == 0
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"w" * 100)
    assert run_cli("push", "demo/model:v1", str(model), "--kind", "model", "--input", "train=demo/data:v1",
                   "--param", "lr=" + "0." + "1" * 90).returncode == 0
    tree = run_cli("lineage", "demo/model:v1")
    assert tree.returncode == 0, tree.stderr
    assert "built from:" in tree.stdout and "demo/data" in tree.stdout
    assert any(len(x) > 80 and "lr=0.111" in x for x in tree.stdout.splitlines()), tree.stdout
    assert not re.search(r"[│├└─]|\x1b\[", tree.stdout)
    digest = run_cli("resolve", "demo/data:v1").stdout.strip()
    assert digest in tree.stdout  # full digest


def test_progress_lines_off_a_terminal_and_quiet(tmp_path: Path) -> None:
    big = write_random(tmp_path / "big" / "blob.bin", 6 << 20, seed=5)
    env = {"OCIART_PROGRESS_INTERVAL": "0"}
    shown = run_cli("push", "demo/big:v1", str(big.parent), env=env)
    assert shown.returncode == 0, shown.stderr
    lines = [x for x in shown.stderr.splitlines() if x.startswith(("progress:", "done:"))]
    assert lines and lines[-1].startswith("done: 100% 6.0 MiB / 6.0 MiB, "), shown.stderr
    assert all(re.fullmatch(r"(progress|done): \d+% [\d.]+ \S+ / [\d.]+ \S+, [\d.]+ \S+/s", x) for x in lines)
    assert "\x1b" not in shown.stderr and "\r" not in shown.stderr
    pulled = run_cli("pull", "demo/big:v1", "-o", str(tmp_path / "o"), env=env)
    assert pulled.returncode == 0 and "done: 100%" in pulled.stderr
    quiet = run_cli("pull", "demo/big:v1", "-o", str(tmp_path / "o2"), "--quiet", env=env)
    assert quiet.returncode == 0 and "progress:" not in quiet.stderr and "done:" not in quiet.stderr
    env_quiet = run_cli("push", "demo/big:v2", str(big.parent), env={**env, "OCIART_QUIET": "1"})
    assert env_quiet.returncode == 0 and "done:" not in env_quiet.stderr


def test_progress_lines_unit() -> None:
    """The plain line format and its period, without a subprocess: no line before the interval has passed."""
    import io

    from ociart.progress import Progress

    out = io.StringIO()
    with Progress(True, stream=out, interval=3600) as p:
        step = p.task("x", 8 << 20)
        assert step is not None
        step(4 << 20)
        assert out.getvalue() == ""  # the interval has not passed
        p.interval = 0
        step(1 << 20)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("progress: 62% 5.0 MiB / 8.0 MiB, ") and lines[-1].startswith("done: 62%")
    silent = io.StringIO()
    with Progress(False, stream=silent, interval=0) as p:
        assert p.task("x", 8 << 20) is None
    assert silent.getvalue() == ""


def test_typed_push_of_a_missing_path(tmp_path: Path) -> None:
    proc = run_cli("push", "demo/m:v1", str(tmp_path / "nope"), "--kind", "model")
    assert proc.returncode == 3
    assert proc.stderr == f"error: {tmp_path / 'nope'}: no such file or directory\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    two = run_cli("push", "demo/m:v1", str(tmp_path / "a"), str(tmp_path / "b"), "--kind", "model")
    assert two.returncode == 2 and "packs exactly one directory" in two.stderr


def test_sigint_is_not_swallowed_by_the_cli_framework() -> None:
    """In-process: a KeyboardInterrupt inside a command reaches ociart's handler (not typer's silent exit)."""
    from ociart.cli import app as cli_app

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    original = cli_app._client
    cli_app._client = boom  # type: ignore[assignment]
    try:
        assert cli_app.run(["resolve", "demo/x:v1"]) == 130
    finally:
        cli_app._client = original
