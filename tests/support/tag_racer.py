"""One racer of the compare-and-set tests: a separate process that moves tags in lock-step with its peers.

``python tag_racer.py BARRIER_DIR NAME PEERS SRC TAG_PREFIX ROUNDS EXPECT [--plain-http]``

For round ``i`` it creates ``BARRIER_DIR/NAME-i``, waits until ``BARRIER_DIR/<peer>-i`` exists for every peer
(comma-separated ``PEERS``, itself included), then calls ``Client.tag(SRC, TAG_PREFIX + i, expect=EXPECT)``
(``absent`` or a digest) at once, and prints one JSON line: ``{"round", "won", "current"}`` (``current``: the digest
the ConflictError named). Exit 0 when every round ran, 3 when a peer never arrived.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ociart import Client, ConflictError
from ociart.targets.base import parse_expect

BARRIER_TIMEOUT = 120.0


def wait_for(paths: list[Path]) -> bool:
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)
    return True


def main(argv: list[str]) -> int:
    barrier, name, peers, src, prefix, rounds, expect_arg = argv[:7]
    plain_http = "--plain-http" in argv[7:]
    expect = parse_expect(expect_arg)
    folder = Path(barrier)
    with Client(plain_http=plain_http) as client:
        client.resolve(src)  # connect and resolve before the first barrier: the rounds race on the tag alone
        for i in range(int(rounds)):
            (folder / f"{name}-{i}").touch()
            if not wait_for([folder / f"{peer}-{i}" for peer in peers.split(",")]):
                print(json.dumps({"round": i, "error": "peer never arrived"}), flush=True)
                return 3
            try:
                client.tag(src, [f"{prefix}{i}"], expect=expect)
                print(json.dumps({"round": i, "won": True, "current": None}), flush=True)
            except ConflictError as exc:
                print(json.dumps({"round": i, "won": False, "current": exc.current}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
