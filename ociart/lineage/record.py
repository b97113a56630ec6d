"""Capture lineage at push time, summarise it in manifest annotations, attach the full statement as a referrer."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OciartError
from ..oci import Content, Descriptor, Manifest
from ..oci.digest import sha256_file
from ..oci.mediatypes import ANNOTATION_BUNDLE_PREDICATE_TYPE, SIGSTORE_BUNDLE
from ..targets.base import Target, bytes_opener
from ..targets.referrers import list_referrers
from ..transfer import push_manifest
from .capture import GitInfo, active_run, environment, git_info, params_digest
from .statement import (
    INTOTO_MEDIA_TYPE,
    SLSA_PROVENANCE,
    BuildDefinition,
    Builder,
    ExternalParameters,
    Provenance,
    ResourceDescriptor,
    RunDetails,
    RunMetadata,
    Statement,
    Subject,
)

if TYPE_CHECKING:
    from ..client import Client
    from ..reference import Reference

A_REVISION = "org.opencontainers.image.revision"
A_SOURCE = "org.opencontainers.image.source"
A_RUN_ID = "dev.ociart.run.id"
A_RUN_TRACKER = "dev.ociart.run.tracker"
A_INPUTS = "dev.ociart.inputs+json"
A_PARAMS_DIGEST = "dev.ociart.params.digest"
A_GIT_DIRTY = "dev.ociart.git.dirty"
A_GIT_BRANCH = "dev.ociart.git.branch"
A_PREDICATE_TYPE = "dev.ociart.predicateType"
#: Statements (and the bundles carrying signed ones) larger than this are not read.
MAX_STATEMENT_BYTES = 4 << 20


@dataclass
class LineageOptions:
    """What to record about the run that produced a pushed artifact (all optional)."""

    git: bool = True
    git_dir: Path | None = None
    run_id: str | None = None
    #: Who named ``run_id`` (``mlflow``, ``wandb``; default ``ociart``), e.g. the tracker ``ociart.run()`` found.
    tracker: str | None = None
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: References of input artifacts, optionally ``NAME=REF``; resolved to digests at push time.
    inputs: list[str] = field(default_factory=list)
    input_files: list[Path] = field(default_factory=list)
    entry_point: str | None = None
    args: list[str] | None = None
    #: Attach the in-toto statement as a referrer (annotations are written either way).
    provenance: bool = True
    started: str | None = None


@dataclass
class Captured:
    git: GitInfo | None
    run_id: str
    tracker: str
    run_known: bool
    params: dict[str, Any]
    metrics: dict[str, float]
    inputs: list[ResourceDescriptor]
    started: str
    options: LineageOptions


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ref_uri(ref: Reference) -> str:
    """The ResourceURI (RFC 3986, as in-toto requires) of a pinned reference: ``oci://<registry>/<repo>...``,
    ``ociart:<repo>...`` in the embedded store; ``oci:<dir>...`` layout references already are URIs."""
    if ref.registry:
        return f"oci://{ref}"
    return f"ociart:{ref}" if ref.embedded else str(ref)


def uri_ref(uri: str) -> str:
    """The reference recorded by :func:`ref_uri` (statements written before it held the bare reference)."""
    for prefix in ("oci://", "ociart:"):
        if uri.startswith(prefix):
            return uri[len(prefix):]
    return uri


def resolve_input(client: Client, spec: str) -> ResourceDescriptor:
    name, sep, ref = spec.partition("=")
    if not sep or "/" in name or ":" in name:
        name, ref = "", spec
    pinned, content = client.manifest(ref)
    node = content.parse()
    artifact_type = getattr(node, "artifactType", None)
    if artifact_type is None and isinstance(node, Manifest):
        artifact_type = node.config.mediaType
    return ResourceDescriptor(name=name or (pinned.repository or str(pinned)), uri=ref_uri(pinned),
                              digest={"sha256": content.digest.removeprefix("sha256:")}, mediaType=artifact_type)


def capture(client: Client, opts: LineageOptions) -> Captured:
    git = git_info(opts.git_dir or Path.cwd()) if opts.git else None
    run_id, tracker, known = active_run(opts.run_id)
    if opts.run_id and opts.tracker:
        tracker = opts.tracker
    inputs = [resolve_input(client, spec) for spec in opts.inputs]
    for path in opts.input_files:
        digest, size = sha256_file(path)
        inputs.append(ResourceDescriptor(name=path.name, uri=Path(path).resolve().as_uri(),
                                         digest={"sha256": digest.removeprefix("sha256:")},
                                         annotations={"size": size}))
    return Captured(git=git, run_id=run_id, tracker=tracker, run_known=known, params=dict(opts.params),
                    metrics=dict(opts.metrics), inputs=inputs, started=opts.started or now(), options=opts)


def summary_annotations(c: Captured) -> dict[str, str]:
    """The summary on the artifact's own manifest, for fast listing (not trusted for policy).

    Deterministic for the same commit, run and inputs, so re-pushing an unchanged directory keeps its digest:
    a generated run id is kept out (it is only in the statement).
    """
    a: dict[str, str] = {}
    if c.git:
        a[A_REVISION] = c.git.commit
        if c.git.remote:
            a[A_SOURCE] = c.git.remote
        if c.git.branch:
            a[A_GIT_BRANCH] = c.git.branch
        if c.git.dirty:
            a[A_GIT_DIRTY] = "true"
    if c.run_known:
        a[A_RUN_ID] = c.run_id
        a[A_RUN_TRACKER] = c.tracker
    oci_inputs = [i for i in c.inputs if i.uri and not i.uri.startswith("file:")]
    if oci_inputs:
        a[A_INPUTS] = json.dumps([{"name": i.name, "ref": uri_ref(i.uri or ""),
                                   "digest": "sha256:" + (i.digest or {})["sha256"], "artifactType": i.mediaType}
                                  for i in oci_inputs], separators=(",", ":"))
    if c.params:
        a[A_PARAMS_DIGEST] = params_digest(c.params)
    return a


def statement(c: Captured, artifact: str, subject_name: str, digest: str, kind: str) -> Statement:
    deps: list[ResourceDescriptor] = []
    if c.git:
        uri = f"git+{c.git.remote}" if c.git.remote else f"git+file://{c.git.root}"
        if c.git.branch:
            uri += f"@refs/heads/{c.git.branch}"
        deps.append(ResourceDescriptor(uri=uri, digest={"gitCommit": c.git.commit},
                                       annotations={"dirty": c.git.dirty} if c.git.dirty else None))
    deps += c.inputs
    from .. import __version__

    return Statement(
        subject=[Subject(name=subject_name, digest={"sha256": digest.removeprefix("sha256:")})],
        predicate=Provenance(
            buildDefinition=BuildDefinition(
                externalParameters=ExternalParameters(
                    artifact=artifact, kind=kind, entryPoint=c.options.entry_point, args=c.options.args,
                    hyperparameters=c.params or None, metrics=c.metrics or None),
                internalParameters={"environment": environment()},
                resolvedDependencies=deps or None,
            ),
            runDetails=RunDetails(
                builder=Builder(version={"ociart": __version__}),
                metadata=RunMetadata(invocationId=f"{c.tracker}:{c.run_id}", startedOn=c.started, finishedOn=now()),
            ),
        ),
    )


def attach_statement(target: Target, repo: str, subject: Descriptor, stmt: Statement,
                     artifact_type: str = INTOTO_MEDIA_TYPE) -> Content:
    """Push ``stmt`` as a referrer of ``subject``: empty config, one ``application/vnd.in-toto+json`` layer."""
    return attach_statement_bytes(target, repo, subject, stmt.to_bytes(), stmt.predicateType, artifact_type)


def attach_statement_bytes(target: Target, repo: str, subject: Descriptor, data: bytes, predicate_type: str,
                           artifact_type: str = INTOTO_MEDIA_TYPE) -> Content:
    """Push an unsigned in-toto statement (its JSON bytes, any predicate) as a referrer of ``subject``."""
    blob = Content.of(data, INTOTO_MEDIA_TYPE)
    layer = Descriptor(mediaType=INTOTO_MEDIA_TYPE, digest=blob.digest, size=blob.size)
    with target.writing():
        target.push_blob_stream(repo, layer, bytes_opener(data))
        return push_manifest(target, repo, artifact_type=artifact_type, layers=[layer], subject=subject,
                             annotations={A_PREDICATE_TYPE: predicate_type,
                                          "org.opencontainers.image.created": now()})


def read_statements(target: Target, repo: str, digest: str, predicate_type: str | None = SLSA_PROVENANCE,
                    *, signed_only: bool = False, referrers: Sequence[Descriptor] | None = None,
                    fetch: Callable[[str], Content] | None = None) -> list[Statement]:
    """In-toto statements attached to ``digest`` (newest first): unsigned ones and the payloads of signed
    attestations (Sigstore bundles; their signatures are checked by ``ociart verify``, not here).

    ``referrers`` (``digest``'s referrers, already listed) and ``fetch`` (a manifest by digest, e.g. from a cache)
    spare requests for a caller that has them (the retention planner)."""
    out: list[tuple[str, Statement]] = []
    for ref in (referrers if referrers is not None else list_referrers(target, repo, digest)):
        if ref.artifactType not in (INTOTO_MEDIA_TYPE, SIGSTORE_BUNDLE):
            continue
        signed = ref.artifactType == SIGSTORE_BUNDLE
        if signed_only and not signed:
            continue
        declared = (ref.annotations or {}).get(ANNOTATION_BUNDLE_PREDICATE_TYPE if signed else A_PREDICATE_TYPE)
        if predicate_type is not None and declared is not None and declared != predicate_type:
            continue  # e.g. a plain signature: not provenance, no need to fetch it
        node = (fetch(ref.digest) if fetch is not None else target.get_manifest(repo, ref.digest)).parse()
        if not isinstance(node, Manifest):
            continue
        want = SIGSTORE_BUNDLE if signed else INTOTO_MEDIA_TYPE
        for layer in node.layers:
            if layer.mediaType != want or layer.size > MAX_STATEMENT_BYTES:
                continue
            with target.open_blob(repo, layer) as chunks:
                raw = b"".join(chunks)
            try:
                if signed:
                    from ..signing.bundle import open_bundle  # only when there is a signed attestation to read

                    raw = open_bundle(raw)[1]
                stmt = Statement.model_validate_json(raw)
            except (OciartError, ValueError):
                continue  # a signature (not provenance) or something else; not lineage
            if predicate_type is None or stmt.predicateType == predicate_type:
                created = (node.annotations or {}).get("org.opencontainers.image.created", "")
                out.append((created, stmt))
    return [s for _, s in sorted(out, key=lambda t: t[0], reverse=True)]


def already_recorded(existing: list[Statement], new: Statement, run_known: bool) -> bool:
    """True when an attached statement says the same: same subject and build definition, and the same run
    (or no run was named this time: re-pushing unchanged output adds no statement)."""
    def run(s: Statement) -> str | None:
        return (s.predicate.runDetails.metadata or RunMetadata()).invocationId

    def build(s: Statement) -> BuildDefinition:
        if run_known:
            return s.predicate.buildDefinition
        # the same output pushed again by another tool (CLI vs library) is not a new build
        ext = s.predicate.buildDefinition.externalParameters.model_copy(update={"entryPoint": None, "args": None})
        return s.predicate.buildDefinition.model_copy(update={"externalParameters": ext})

    return any(s.subject == new.subject and build(s) == build(new)
               and (not run_known or run(s) == run(new)) for s in existing)
