"""The training-script API: record what a run used and push what it made, with lineage attached.

    with ociart.run(name="bert-sst2", params={"lr": 3e-4}) as run:
        run.use("registry.example/data/sst2:v3")
        ckpts = run.checkpoints("registry.example/models/bert-sst2", keep_last=2, best="val_loss")
        for step in ...:
            ckpts.submit(step, f"ckpt/step-{step}", {"val_loss": loss})   # never blocks the step
        run.log_metric("accuracy", 0.93)
        run.push("registry.example/models/bert-sst2:v1", "out/model", kind="model")
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OciartError, UnsupportedError, UsageError
from ..oci import Descriptor
from .capture import active_run
from .record import LineageOptions, now

if TYPE_CHECKING:
    from ..client import Client, PushResult, SignWith

log = logging.getLogger("ociart.run")
A_STEP = "dev.ociart.checkpoint.step"
#: Checkpoints that may wait while one uploads. Only a directory path waits (no bytes in memory), so the default is
#: generous: a loop that checkpoints less often than an upload takes never reaches it, and neither does a burst of a
#: few quick checkpoints behind one slow (first, cold) upload.
DEFAULT_MAX_PENDING = 16


class Run:
    def __init__(self, name: str | None = None, params: Mapping[str, object] | None = None, *,
                 run_id: str | None = None, client: Client | None = None, git: bool = True,
                 git_dir: str | Path | None = None) -> None:
        from ..client import Client

        self.name = name
        self.params: dict[str, object] = dict(params or {})
        self.metrics: dict[str, float] = {}
        self.run_id, self.tracker, _ = active_run(run_id)
        self._own_client = client is None
        self.client = client or Client()
        self._git, self._git_dir = git, Path(git_dir) if git_dir else None
        self._inputs: list[str] = []
        self._input_files: list[Path] = []
        self._uploaders: list[CheckpointUploader] = []
        #: (repository, descriptor) of what :meth:`push` pushed.
        self._pushed: list[tuple[str, Descriptor]] = []
        self.started = now()
        self._lock = threading.Lock()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(raise_errors=exc_type is None, failed=exc_type is not None)

    def close(self, raise_errors: bool = True, failed: bool = False) -> None:
        """Wait for the checkpoint uploads, then record how the run ended (``failed``: it raised) on every artifact
        it pushed and still holds: a run-status referrer (:mod:`ociart.lifecycle.runstatus`), which the
        ``failedRuns`` retention rule reads."""
        errors: list[BaseException] = []
        for u in self._uploaders:
            u.close()
            errors += u.errors
        self._record_status("failed" if failed else "succeeded")
        if self._own_client:
            self.client.close()
        if errors and raise_errors:
            raise errors[0]

    def _record_status(self, status: str) -> None:
        from ..lifecycle.runstatus import record_status

        held: list[tuple[str, Descriptor]] = list(self._pushed)
        for u in self._uploaders:
            held += [(u.repo, u.descriptors[d]) for d, _ in u.pushed.values() if d in u.descriptors]
        for repo, desc in {(repo, d.digest): (repo, d) for repo, d in held}.values():
            try:
                r = self.client.ref(repo)
                record_status(self.client.target(r), r.repository, desc, self.run_id, status)  # type: ignore[arg-type]
            except OciartError as exc:  # the run's own outcome matters more than its status record
                log.warning("could not record the run status on %s@%s: %s", repo, desc.digest, exc)

    # -- recording ---------------------------------------------------------------------------------
    def use(self, ref: str, name: str | None = None) -> Descriptor:
        """Record an input artifact, pinned to the digest it has now; returns its descriptor."""
        desc = self.client.resolve(ref)
        pinned = str(self.client.ref(ref).with_digest(desc.digest))
        with self._lock:
            self._inputs.append(f"{name}={pinned}" if name else pinned)
        return desc

    def use_file(self, path: str | Path) -> None:
        with self._lock:
            self._input_files.append(Path(path))

    def log_param(self, key: str, value: object) -> None:
        self.params[key] = value

    def log_metric(self, key: str, value: float) -> None:
        self.metrics[key] = float(value)

    def lineage(self, **extra_metrics: float) -> LineageOptions:
        with self._lock:
            return LineageOptions(git=self._git, git_dir=self._git_dir, run_id=self.run_id, tracker=self.tracker,
                                  params=dict(self.params),
                                  metrics={**self.metrics, **extra_metrics}, inputs=list(self._inputs),
                                  input_files=list(self._input_files), entry_point=sys.argv[0] or None,
                                  args=sys.argv[1:] or None, started=self.started)

    def push(self, ref: str, path: str | Path, *, kind: str = "model", metadata: Mapping[str, object] | None = None,
             annotations: dict[str, str] | None = None, reproducible: bool = False, subject: str | None = None,
             sign: SignWith | None = None, legacy_signature: str = "always") -> PushResult:
        """Push ``path`` with this run's lineage (run id, params, metrics, inputs, git, environment)."""
        meta = dict(metadata or {})
        if self.name and "name" not in meta:
            meta["name"] = self.name
        result = self.client.push(ref, [path], kind=kind, lineage=self.lineage(), metadata=meta,
                                  annotations=annotations, reproducible=reproducible, subject=subject, sign=sign,
                                  legacy_signature=legacy_signature)
        pinned = self.client.ref(result.ref)
        repo = str(dataclasses.replace(pinned, tag=None, digest=None))
        with self._lock:
            self._pushed.append((repo, Descriptor(mediaType=result.mediaType, digest=result.digest, size=result.size)))
        return result

    def checkpoints(self, repo: str, *, keep_last: int = 3, best: str | None = None, mode: str = "min",
                    max_pending: int = DEFAULT_MAX_PENDING) -> CheckpointUploader:
        u = CheckpointUploader(self, repo, keep_last=keep_last, best=best, mode=mode, max_pending=max_pending)
        self._uploaders.append(u)
        return u


def run(name: str | None = None, params: Mapping[str, object] | None = None, *, run_id: str | None = None,
        client: Client | None = None, git: bool = True, git_dir: str | Path | None = None) -> Run:
    """Start a run (use it as a context manager): what it uses and pushes is recorded as lineage."""
    return Run(name, params, run_id=run_id, client=client, git=git, git_dir=git_dir)


class CheckpointUploader:
    """Pushes checkpoints from a background thread, tagged ``ckpt-<run>-<step>``.

    :meth:`submit` never blocks: at most ``max_pending`` checkpoints wait while one uploads; when one more arrives
    the oldest waiting one is dropped (listed in :attr:`dropped`, logged as a warning with the reason), unless it is
    the best waiting one by ``best``, then the next oldest. After each push, only the last ``keep_last`` steps and the
    best step by ``best`` (``mode`` ``min`` or ``max``) are kept; the others are deleted by digest. The directory
    given to :meth:`submit` must not change afterwards (save each step into its own directory).
    """

    def __init__(self, run: Run, repo: str, *, keep_last: int = 3, best: str | None = None, mode: str = "min",
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if mode not in ("min", "max"):
            raise UsageError("mode must be 'min' or 'max'")
        if keep_last < 1 or max_pending < 1:
            raise UsageError("keep_last and max_pending must be at least 1")
        ref = run.client.ref(repo)
        if ref.tag or ref.digest:
            raise UsageError(f"{repo}: give a repository, not a tag or digest")
        self.run, self.repo = run, repo
        self.keep_last, self.best, self.mode, self.max_pending = keep_last, best, mode, max_pending
        self.pushed: dict[int, tuple[str, dict[str, float]]] = {}  # step -> (digest, metrics), kept ones
        self.deleted: list[int] = []
        #: Descriptors of the pushed checkpoints by digest (the run-status referrer needs them).
        self.descriptors: dict[str, Descriptor] = {}
        self.dropped: list[int] = []
        self.errors: list[BaseException] = []
        self._pending: collections.deque[tuple[int, Path, dict[str, float]]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="ociart-checkpoints", daemon=True)
        self._thread.start()

    def tag(self, step: int) -> str:
        safe_run = "".join(c if c.isalnum() or c in "._-" else "-" for c in self.run.run_id)[:80]
        return f"ckpt-{safe_run}-{step}"

    def submit(self, step: int, directory: str | Path, metrics: dict[str, float] | None = None) -> None:
        with self._cond:
            if self._closed:
                raise UsageError("checkpoint uploader is closed")
            if len(self._pending) >= self.max_pending:
                index = self._victim()
                old = self._pending[index]
                self._pending.remove(old)
                self.dropped.append(old[0])
                why = "the oldest waiting" if index == 0 else f"the oldest waiting but step {self._pending[0][0]}, " \
                      f"the best by {self.best}"
                log.warning("checkpoint step %s dropped: step %s arrived while %d checkpoints were waiting for the "
                            "upload (max_pending=%d); it was %s", old[0], step, self.max_pending, self.max_pending,
                            why)
            self._pending.append((step, Path(directory), dict(metrics or {})))
            self._cond.notify()

    def _victim(self) -> int:
        """Index of the waiting checkpoint to drop: the oldest one, unless it is the best waiting one."""
        if self.best and len(self._pending) > 1:
            scored = [(i, p[2][self.best]) for i, p in enumerate(self._pending) if self.best in p[2]]
            if scored:
                pick = min if self.mode == "min" else max
                if pick(scored, key=lambda t: t[1])[0] == 0:
                    return 1
        return 0

    def flush(self) -> None:
        with self._cond:
            while self._pending or self._busy:
                self._cond.wait()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                step, directory, metrics = self._pending.popleft()
                self._busy = True
            try:
                desc = self.run.client.push(f"{self.repo}:{self.tag(step)}", [directory], kind="checkpoint",
                                            lineage=self.run.lineage(**metrics), metadata={"metrics": metrics},
                                            annotations={A_STEP: str(step)})
                self.pushed[step] = (desc.digest, metrics)
                self.descriptors[desc.digest] = desc
                self._retain()
            except BaseException as exc:  # noqa: BLE001 - kept for the training thread to see
                self.errors.append(exc)
                log.error("checkpoint step %s failed: %s", step, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _delete(self, digest: str) -> None:
        """Delete a checkpoint and what was attached to it (its provenance statements and, on a registry without
        the referrers API, the ``sha256-<hex>`` index listing them): nothing of a dropped step is left behind."""
        self.run.client.delete(f"{self.repo}@{digest}")

    def _retain(self) -> None:
        """Keep the last ``keep_last`` steps and the best by ``best``, with the retention module's ordering and
        selection (:mod:`ociart.lifecycle.order`); delete the rest by digest with what is attached to them."""
        from ..lifecycle.order import Candidate, best, keep_last

        steps = sorted(self.pushed)
        by_tag = {self.tag(s): s for s in steps}
        candidates = [Candidate(digest=self.pushed[s][0], tags=[self.tag(s)], metrics=self.pushed[s][1])
                      for s in steps]  # undated: ordered by tag, i.e. by step
        keep = {by_tag[c.tags[0]] for c in keep_last(candidates, self.keep_last)}
        if self.best:
            top = best(candidates, self.best, self.mode)
            if top is not None:
                keep.add(by_tag[top.tags[0]])
        kept_digests = {self.pushed[s][0] for s in keep}
        for s in steps:
            if s in keep:
                continue
            digest = self.pushed.pop(s)[0]
            if digest in kept_digests:
                continue  # the same bytes are also a kept step
            try:
                self._delete(digest)
            except UnsupportedError:
                log.warning("registry does not allow deleting %s@%s; left in place", self.repo, digest)
            except OciartError as exc:
                self.errors.append(exc)
            self.deleted.append(s)
