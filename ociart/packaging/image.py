"""The image form of an artifact (docs/spec.md §7): a runnable-image manifest that container engines pull, cache and
mount (Kubernetes image volumes, KServe modelcars), holding the same files under a mount path.

* every layer is an uncompressed deterministic tar (``application/vnd.oci.image.layer.v1.tar``, so digest ==
  diff_id) of one large file or of the grouped small files of one directory, exactly the layer plan of the artifact
  form (:func:`ociart.packaging.pack.plan`), members named ``<mount path>/<path>``;
* one image config per platform (``linux/amd64`` and ``linux/arm64`` by default) differing only in
  ``architecture``, with ``rootfs.diff_ids``, no entrypoint, and labels: the mount path, the number of base layers,
  the typed config (ModelPack for models) and the manifest annotations (metadata, lineage summary);
* an image index over those manifests, tagged; everything deterministic, so the same directory gives the same
  digest;
* ``base``: a base image's layers (copied by digest into the repository) come first, its config is extended.

Reading it back is :mod:`ociart.packaging.unpack` (any image: layers applied in order with whiteouts, only the
files under the mount path kept).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from ..cache import DigestCache
from ..errors import DigestMismatchError, InvalidContentError, UsageError
from ..oci import Content, Descriptor, Index, Manifest
from ..oci.digest import Digester
from ..oci.mediatypes import IMAGE_CONFIG_TYPES, OCI_CONFIG, OCI_INDEX, OCI_LAYER
from ..oci.models import History, ImageConfig, ImageConfigBody, Platform, RootFS
from ..progress import Progress
from ..targets.base import Target
from ..transfer import copy_blobs, parallel, push_manifest
from .kinds import KIND_SPECS, Kind, weight_format
from .metadata import Metadata, build_config, created_timestamp, manifest_annotations
from .pack import DEFAULT_SMALL_FILE_THRESHOLD, _role_media_type, plan, push_layer
from .tarlayer import TarMember, iter_tar, restream

if TYPE_CHECKING:
    from ..encryption import EncryptionPlan
    from .unpack import Entry

#: Image config labels (``config.Labels``) of the image form; they travel with the config when another tool copies
#: the image, so pull can find the files without ociart's manifest annotations.
L_MOUNT_PATH = "dev.ociart.mount-path"
L_BASE_LAYERS = "dev.ociart.base-layers"
L_CONFIG = "dev.ociart.artifact-config"
DEFAULT_MOUNT_PATH = "/models"
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
#: artifactType of the referrers linking the two forms: attached to the artifact form, it names its image form;
#: attached to the image form, its artifact form. The other form is in the annotations below.
IMAGE_FORM = "application/vnd.ociart.image-form.v1"
ARTIFACT_FORM = "application/vnd.ociart.artifact-form.v1"
A_FORM_DIGEST = "dev.ociart.form.digest"
A_FORM_REFERENCE = "dev.ociart.form.reference"


class FormLink(BaseModel):
    """The other form of the same files (a form-link referrer)."""

    artifactType: str
    digest: str
    reference: str | None = None


def mount_path(value: str) -> str:
    """``/models`` form of a mount path: absolute, normalized, not the root."""
    if not value.startswith("/") or "\x00" in value or "\\" in value:
        raise UsageError(f"--mount-path {value!r}: give an absolute path such as /models")
    norm = posixpath.normpath(value)
    if norm in ("/", "//") or ".." in norm.split("/"):
        raise UsageError(f"--mount-path {value!r}: give a directory below / such as /models")
    return norm


def parse_platform(value: str) -> Platform:
    parts = value.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"--platform {value!r}: give OS/ARCH[/VARIANT], e.g. linux/arm64")
    return Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None)


def platform_key(p: Platform) -> str:
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


@dataclass
class BaseImage:
    """A base image read from its store: per platform (``os/arch[/variant]``) its manifest and config."""

    target: Target
    repo: str
    reference: str
    images: dict[str, tuple[Manifest, ImageConfig]]


def read_base(target: Target, repo: str, reference: str, limit: int) -> BaseImage:
    """Read the base image ``reference`` (a tag or digest; an index or a single image) and its configs."""
    from ..signing.common import read_verified_blob

    content = target.get_manifest(repo, reference)
    node = content.parse()
    children: list[Content] = []
    if isinstance(node, Index):
        children = [target.get_manifest(repo, d.digest) for d in node.manifests
                    if d.platform is not None and d.platform.os != "unknown"]
    else:
        children = [content]
    images: dict[str, tuple[Manifest, ImageConfig]] = {}
    for child in children:
        m = child.parse()
        if not isinstance(m, Manifest) or m.config.mediaType not in IMAGE_CONFIG_TYPES:
            raise UsageError(f"--base {reference}: {child.digest} is not a container image")
        raw = read_verified_blob(target, repo, m.config, limit, f"--base config {m.config.digest}")
        try:
            cfg = ImageConfig.model_validate_json(raw)
        except ValueError:
            raise InvalidContentError(f"--base {reference}: its config {m.config.digest} is not an image config") \
                from None
        if len(cfg.rootfs.diff_ids) != len(m.layers):
            raise InvalidContentError(f"--base {reference}: its config lists {len(cfg.rootfs.diff_ids)} diff_ids "
                                      f"for {len(m.layers)} layers")
        images[platform_key(Platform(os=cfg.os, architecture=cfg.architecture, variant=cfg.variant))] = (m, cfg)
    if not images:
        raise UsageError(f"--base {reference}: no image in it")
    return BaseImage(target, repo, reference, images)


def push_index(target: Target, repo: str, manifests: Sequence[Descriptor], tag: str | None,
               annotations: dict[str, str] | None = None) -> Content:
    """Write an image index over ``manifests`` (already stored), tagged ``tag``."""
    content = Content.from_model(Index(mediaType=OCI_INDEX, manifests=list(manifests), annotations=annotations or None))
    target.put_manifest(repo, content, tag)
    return content


def _platforms(platforms: Sequence[str], base: BaseImage | None) -> list[Platform]:
    wanted = [parse_platform(p) for p in platforms] if platforms else []
    if base is not None and not platforms:
        wanted = [parse_platform(k) for k in sorted(base.images)]
    if not wanted:
        raise UsageError("--platform: give at least one platform")
    keys = [platform_key(p) for p in wanted]
    if len(set(keys)) != len(keys):
        raise UsageError(f"--platform lists a platform twice ({', '.join(keys)})")
    if base is not None:
        missing = [k for k in keys if k not in base.images]
        if missing:
            raise UsageError(f"--base {base.reference} has no {', '.join(missing)} image (it has "
                             f"{', '.join(sorted(base.images))}); pass --platform to choose among those")
    return wanted


def push_image(target: Target, repo: str, tag: str | None, root: Path, kind: Kind, meta: Metadata, *,
               mount: str = DEFAULT_MOUNT_PATH, platforms: Sequence[str] = DEFAULT_PLATFORMS,
               base: BaseImage | None = None, reproducible: bool = False,
               threshold: int = DEFAULT_SMALL_FILE_THRESHOLD, annotations: dict[str, str] | None = None,
               base_annotations: dict[str, str] | None = None, prehash: bool = False, concurrency: int = 4,
               progress: Progress | None = None, cache: DigestCache | None = None,
               follow_symlinks: bool = False, encryption: EncryptionPlan | None = None) -> Content:
    """Pack ``root`` as the image form and push it; returns the image index content (tagged ``tag``).
    ``encryption``: the layers it selects by role (weights and datasets by default) are pushed as
    ``application/vnd.oci.image.layer.v1.tar+encrypted`` (ocicrypt; docs/encryption.md), once for every platform;
    ``rootfs.diff_ids`` name the plaintext tars, as ocicrypt readers expect."""
    if kind is Kind.GENERIC:
        raise UsageError("--as-image packs a typed artifact: add --kind model (or another kind)")
    mount = mount_path(mount)
    wanted = _platforms(platforms, base)
    cache = cache if cache is not None else DigestCache()
    p = plan(root, kind, threshold, follow_symlinks)
    prefix = mount.lstrip("/")
    if encryption is not None:
        encryption.require_any([_role_media_type(kind, lp) for lp in p.layers])
    with target.writing():
        pushed = parallel(lambda lp: push_layer(target, repo, kind, lp, cache, progress, prehash, prefix,
                                                encryption), p.layers, concurrency)
        descs = [d for d, _ in pushed]
        created = created_timestamp(reproducible, p.newest_mtime)
        diff_ids = [diff for _, diff in pushed]  # uncompressed plaintext: digest == diff_id unless encrypted
        weights = [e.rel for lp in p.layers for e in lp.files if e.role == "weight"]
        typed = build_config(kind.value, meta, created, diff_ids, p.files, p.size, weight_format(weights)) \
            if KIND_SPECS[kind].config_media_type is not None else b"{}"
        notes = {**(base_annotations or {}), **manifest_annotations(kind.value, meta, created), **(annotations or {})}
        names = [lp.filepath + ("/ (small files)" if lp.tar else "") for lp in p.layers]
        return write_image(target, repo, tag, descs, names, mount=mount, typed_config=typed, annotations=notes,
                           created=created, platforms=wanted, base=base, concurrency=concurrency,
                           progress=progress, diff_ids=diff_ids)


def write_image(target: Target, repo: str, tag: str | None, layers: Sequence[Descriptor], names: Sequence[str], *,
                mount: str, typed_config: bytes, annotations: dict[str, str], created: str | None,
                platforms: Sequence[Platform], base: BaseImage | None, concurrency: int = 4,
                progress: Progress | None = None, diff_ids: Sequence[str] | None = None) -> Content:
    """The image form's configs, manifests (one per platform, through :func:`~ociart.transfer.push_manifest`) and
    index over ``layers`` (uncompressed tars already stored; ``names`` for the history; ``diff_ids`` of the
    plaintext tars when some layers are encrypted, else their digests)."""
    diff_ids = list(diff_ids) if diff_ids is not None else [d.digest for d in layers]
    labels = {**annotations, L_MOUNT_PATH: mount, L_CONFIG: typed_config.decode("utf-8", "replace")}
    history = [History(created=created, created_by=f"ociart push --as-image: {name}") for name in names]
    children: list[Descriptor] = []
    for plat in platforms:
        own = list(layers)
        if base is not None:
            bm, bcfg = base.images[platform_key(plat)]
            copy_blobs(base.target, base.repo, target, repo, bm.layers, concurrency, progress)
            own = [*bm.layers, *layers]
            body = bcfg.config or ImageConfigBody()
            cfg = bcfg.model_copy(update={
                "created": created or bcfg.created,
                "config": body.model_copy(update={"Labels": {**(body.Labels or {}), **labels,
                                                              L_BASE_LAYERS: str(len(bm.layers))}}),
                "rootfs": RootFS(diff_ids=[*bcfg.rootfs.diff_ids, *diff_ids]),
                "history": [*(bcfg.history or []), *history] if bcfg.history else None,
            })
        else:
            cfg = ImageConfig(created=created, architecture=plat.architecture, os=plat.os, variant=plat.variant,
                              config=ImageConfigBody(Labels=labels), rootfs=RootFS(diff_ids=diff_ids),
                              history=history)
        config = Content.of(cfg.to_json_bytes(), OCI_CONFIG)
        manifest = push_manifest(target, repo, artifact_type=None, layers=own, config=config,
                                 annotations=annotations)
        children.append(manifest.descriptor(platform=Platform(os=plat.os, architecture=plat.architecture,
                                                               variant=plat.variant)))
    return push_index(target, repo, children, tag, annotations)


def convert_to_image(src: Target, src_repo: str, manifest: Manifest, dst: Target, dst_repo: str, tag: str | None, *,
                     mount: str = DEFAULT_MOUNT_PATH, platforms: Sequence[str] = DEFAULT_PLATFORMS,
                     base: BaseImage | None = None, concurrency: int = 4,
                     progress: Progress | None = None) -> Content:
    """The image form of an artifact already in a store, without its directory: each raw layer is streamed into a
    one-file tar, each tar layer re-streamed with its members renamed under the mount path (verified against the
    layer digest as it streams; nothing is copied to disk). The artifact's config is kept in a label."""
    from ..signing.common import read_verified_blob
    from .. import limits
    from .metadata import A_FILEPATH
    from .unpack import image_view, layer_path, select

    mount = mount_path(mount)
    wanted = _platforms(platforms, base)
    if image_view(src, src_repo, manifest) is not None:
        raise UsageError("the source is already an image (its layers are image layers); copy it instead")
    if any(layer.mediaType.endswith("+encrypted") for layer in manifest.layers):
        raise UsageError("the source has encrypted layers: convert its decrypted copy (ociart decrypt), then "
                         "ociart encrypt the image")
    entries = select(manifest)
    if not entries:
        raise UsageError("the source has no named files to convert")
    prefix = mount.lstrip("/")

    def convert(e: Entry) -> Descriptor:
        if e.rel is not None:
            rel = str(e.rel)

            def members() -> Iterator[TarMember]:
                yield TarMember(None, f"{prefix}/{rel}", e.desc.size, e.mode,
                                source=lambda: verified_blob(src, src_repo, e.desc))
        else:
            def members() -> Iterator[TarMember]:
                return restream(lambda: verified_blob(src, src_repo, e.desc), e.desc.mediaType,
                                f"layer {e.desc.digest}", prefix)

        out = dst.push_blob_chunks(dst_repo, lambda: nullcontext(iter_tar(members())), OCI_LAYER)
        return out.model_copy(update={"annotations": {A_FILEPATH: layer_path(e.desc) or str(e.rel or ".")}})

    typed = b"{}"
    if manifest.config.mediaType != "application/vnd.oci.empty.v1+json" and manifest.config.size > 2:
        typed = read_verified_blob(src, src_repo, manifest.config, limits.CONFIG_BYTES,
                                   f"config {manifest.config.digest}")
    with dst.writing():
        descs = parallel(convert, entries, concurrency)
        names = [str(e.rel) if e.rel is not None else f"{e.desc.digest} (tar)" for e in entries]
        notes = dict(manifest.annotations or {})
        return write_image(dst, dst_repo, tag, descs, names, mount=mount, typed_config=typed, annotations=notes,
                           created=notes.get("org.opencontainers.image.created"), platforms=wanted, base=base,
                           concurrency=concurrency, progress=progress)


@contextmanager
def verified_blob(target: Target, repo: str, desc: Descriptor) -> Iterator[Iterator[bytes]]:
    """:meth:`Target.open_blob`, checked against ``desc`` as it streams: a wrong byte count or digest raises at the
    end of the stream, before the consumer (a blob upload) can complete."""
    with target.open_blob(repo, desc) as chunks:
        def gen() -> Iterator[bytes]:
            d = Digester()
            for chunk in chunks:
                d.update(chunk)
                if d.size > desc.size:
                    break
                yield chunk
            if d.size != desc.size or d.digest != desc.digest:
                raise DigestMismatchError(f"blob digest mismatch: expected {desc.digest} ({desc.size} bytes), got "
                                          f"{d.digest if d.size <= desc.size else 'more'} ({d.size} bytes)")
        yield gen()


def image_labels(config: bytes) -> dict[str, str]:
    """``config.Labels`` of an image config ({} when there are none or it is not one)."""
    try:
        obj = json.loads(config)
    except ValueError:
        return {}
    labels = (obj.get("config") or {}).get("Labels") if isinstance(obj, dict) else None
    return {k: v for k, v in labels.items() if isinstance(v, str)} if isinstance(labels, dict) else {}


def link_forms(artifact_target: Target, artifact_repo: str, artifact: Descriptor, artifact_ref: str,
               image_target: Target, image_repo: str, image: Descriptor, image_ref: str) -> tuple[Content, Content]:
    """Attach each form to the other: on the artifact form a referrer of type :data:`IMAGE_FORM` naming the image
    form, on the image form one of type :data:`ARTIFACT_FORM` naming the artifact form (by digest and pinned
    reference in its annotations). Returns (the artifact form's link, the image form's link)."""
    from ..oci import EMPTY_JSON_DIGEST, OCI_EMPTY

    empty = [Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2)]
    to_image = push_manifest(artifact_target, artifact_repo, artifact_type=IMAGE_FORM, layers=empty, subject=artifact,
                             annotations={A_FORM_DIGEST: image.digest, A_FORM_REFERENCE: image_ref})
    to_artifact = push_manifest(image_target, image_repo, artifact_type=ARTIFACT_FORM, layers=empty, subject=image,
                                annotations={A_FORM_DIGEST: artifact.digest, A_FORM_REFERENCE: artifact_ref})
    return to_image, to_artifact


def host_platform() -> str:
    import platform as _platform

    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"linux/{arch}"


def choose_platform(index: Index) -> Descriptor | None:
    """The child of a multi-platform index for this machine (else ``linux/amd64``); None when the index is not one
    image per platform. Every platform of the image form holds the same files, so any will do for pull."""
    children = [d for d in index.manifests if d.platform is not None and d.platform.os != "unknown"]
    if not children or len(children) != len(index.manifests):
        return None
    by_key = {platform_key(d.platform): d for d in children if d.platform is not None}
    for key in (host_platform(), "linux/amd64"):
        if key in by_key:
            return by_key[key]
    return children[0]


def form_links(target: Target, repo: str, digest: str) -> list[FormLink]:
    """The other forms ``digest`` is linked to (its :data:`IMAGE_FORM` / :data:`ARTIFACT_FORM` referrers)."""
    from ..targets.referrers import list_referrers

    out: list[FormLink] = []
    for d in list_referrers(target, repo, digest):
        ann = d.annotations or {}
        if d.artifactType in (IMAGE_FORM, ARTIFACT_FORM) and A_FORM_DIGEST in ann:
            out.append(FormLink(artifactType=d.artifactType, digest=ann[A_FORM_DIGEST],
                                reference=ann.get(A_FORM_REFERENCE)))
    return out
