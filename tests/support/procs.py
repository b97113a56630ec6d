"""Stopping the servers the fixtures start (registry, moto, sigstore mock): one way, used by all of them."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, grace: float = 5.0) -> None:
    """Terminate ``proc`` if it still runs; kill it when it has not exited after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
