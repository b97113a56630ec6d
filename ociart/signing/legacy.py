"""Legacy cosign signatures: the ``sha256-<hex>.sig`` tag holding simple-signing payloads (cosign v2 default).

Format (cosign ``specs/SIGNATURE_SPEC.md``, ``sigstore/pkg/signature/payload``, ``pkg/oci/mutate``):

* payload blob (media type :data:`SIMPLESIGNING_MEDIA_TYPE`) = Go ``json.Marshal`` of ::

    {"critical":{"identity":{"docker-reference":"<registry/repo>"},
                 "image":{"docker-manifest-digest":"sha256:<hex>"},
                 "type":"cosign container image signature"},
     "optional":<annotations or null>}

  compact, no trailing newline, ``optional`` is ``null`` when there are no annotations (the Go field has no
  ``omitempty``), map keys sorted, ``<``, ``>``, ``&``, U+2028, U+2029 escaped as Go does.
* one OCI manifest per signed digest, tagged ``sha256-<hex>.sig``; each signature is one layer whose annotation
  ``dev.cosignproject.cosign/signature`` is the base64 ECDSA P-256/SHA-256 DER signature over the payload bytes.
* the config is the one go-containerregistry computes when cosign appends layers to ``empty.Image``: every layer's
  digest as a ``diff_id`` and one zero-time history entry per layer (verifiers ignore it).

Adding a signature is a read-modify-write of the tag, racy exactly as in cosign. Verification trusts only the key it
is given, never key material found in the registry.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import (
    InvalidContentError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ..oci import Content, Descriptor, Manifest
from ..oci.digest import sha256_bytes
from ..oci.mediatypes import OCI_CONFIG
from ..reference import check_digest
from ..targets.base import Target, bytes_opener
from ..targets.referrers import legacy_tag
from ..transfer import push_manifest
from . import keys
from .common import no_duplicate_keys, read_verified_blob, where
from .signers import SIGNATURE_ANNOTATION, KeySigner, Signer, as_signer

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"

COSIGN_SIGNATURE_TYPE = "cosign container image signature"
SIGNATURE_TAG_SUFFIX = ".sig"
#: cosign refuses to grow a signature manifest past this many layers.
MAX_LAYERS = 1000
#: A simple-signing payload is a few hundred bytes; refuse to read anything much larger.
MAX_PAYLOAD_BYTES = 1 << 20
#: go-containerregistry's zero ``v1.Time``.
ZERO_TIME = "0001-01-01T00:00:00Z"



# -- payload ----------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class Identity(_Strict):
    docker_reference: str = Field(alias="docker-reference")


class Image(_Strict):
    docker_manifest_digest: str = Field(alias="docker-manifest-digest")


class Critical(_Strict):
    identity: Identity
    image: Image
    type: str


class SimpleSigningPayload(_Strict):
    """A parsed cosign simple-signing payload (``critical`` + ``optional``)."""

    critical: Critical
    optional: dict[str, Any] | None = None

    @property
    def docker_reference(self) -> str:
        return self.critical.identity.docker_reference

    @property
    def manifest_digest(self) -> str:
        return self.critical.image.docker_manifest_digest

    def to_bytes(self) -> bytes:
        """The bytes cosign would write for this payload (extra fields are not kept)."""
        return simple_signing_payload(self.docker_reference, self.manifest_digest, self.optional)


class VerifiedSignature(BaseModel):
    """One signature layer that verified: its payload (parsed and exact bytes), its layer descriptor."""

    model_config = ConfigDict(frozen=True)

    payload: SimpleSigningPayload
    data: bytes
    layer: Descriptor


def _go_float(x: float) -> str:
    """A float as Go's encoding/json writes it (shortest round-trip digits, 'f' in [1e-6, 1e21), else 'e')."""
    if math.isnan(x) or math.isinf(x):
        raise UsageError(f"signature annotation value {x!r} is not representable in JSON")
    r = repr(x)
    a = abs(x)
    if a == 0 or 1e-6 <= a < 1e21:
        return format(Decimal(r).normalize(), "f") if "e" in r or "E" in r else r.removesuffix(".0")
    mant, _, exp = r.partition("e")
    sign, digits = (exp[0], exp[1:]) if exp[0] in "+-" else ("+", exp)
    digits = digits.lstrip("0") or "0"
    if sign == "-" and len(digits) < 2:  # Go writes e-7, not e-07; positive exponents keep two digits
        return f"{mant.removesuffix('.0')}e-{digits}"
    return f"{mant.removesuffix('.0')}e{sign}{digits.zfill(2)}"


_GO_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    for ch, esc in _GO_HTML_ESCAPES.items():
        out = out.replace(ch, esc)
    return out


def _go_json(value: Any) -> str:
    """Go ``json.Marshal`` of a ``map[string]interface{}``-like value: compact, map keys sorted, HTML-escaped."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise UsageError("signature annotations: keys must be strings")
        return "{" + ",".join(f"{_go_string(k)}:{_go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    raise UsageError(f"signature annotations: unsupported value type {type(value).__name__}")


def simple_signing_payload(docker_reference: str, manifest_digest: str,
                           annotations: dict[str, Any] | None = None) -> bytes:
    """The exact payload bytes cosign signs for ``docker_reference@manifest_digest``.

    ``docker_reference`` is registry/repository without tag or digest (informational; verifiers ignore it).
    ``annotations`` become ``optional`` (``null`` when None, as cosign without ``-a``).
    """
    text = ('{"critical":{"identity":{"docker-reference":' + _go_string(docker_reference) + '},'
            '"image":{"docker-manifest-digest":' + _go_string(manifest_digest) + '},'
            '"type":' + _go_string(COSIGN_SIGNATURE_TYPE) + '},'
            '"optional":' + _go_json(annotations) + '}')
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError("signature payload: text is not valid Unicode") from exc


def parse_payload(data: bytes) -> SimpleSigningPayload:
    """Parse a simple-signing payload; :class:`InvalidContentError` with the reason when malformed or not cosign's."""
    try:
        obj = json.loads(data, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidContentError(f"malformed signature payload: {exc}") from None
    try:
        payload = SimpleSigningPayload.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidContentError(f"malformed signature payload: {where}: {first['msg']}") from None
    if payload.critical.type != COSIGN_SIGNATURE_TYPE:
        raise InvalidContentError(f"signature payload is of unknown type {payload.critical.type!r} "
                                  f"(expected {COSIGN_SIGNATURE_TYPE!r})")
    return payload


# -- manifest ---------------------------------------------------------------------------------------
def signature_tag(subject_digest: str) -> str:
    """``sha256:<hex>`` → ``sha256-<hex>.sig``."""
    check_digest(subject_digest)
    return legacy_tag(subject_digest, SIGNATURE_TAG_SUFFIX)


def signature_config(layer_digests: list[str]) -> bytes:
    """The config go-containerregistry writes for cosign's signature image with these layers."""
    cfg = {"architecture": "", "created": ZERO_TIME, "history": [{"created": ZERO_TIME} for _ in layer_digests],
           "os": "", "rootfs": {"type": "layers", "diff_ids": list(layer_digests)}, "config": {}}
    return json.dumps(cfg, separators=(",", ":")).encode()


def _signature_b64(layer: Descriptor) -> str | None:
    return (layer.annotations or {}).get(SIGNATURE_ANNOTATION)


def _verifies(pub: ec.EllipticCurvePublicKey, data: bytes, sig_b64: str) -> None:
    try:
        sig = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("bad signature: annotation is not valid base64") from exc
    try:
        keys.verify(pub, data, sig)
    except VerificationError as exc:
        raise VerificationError(f"bad signature: {exc}") from None


def _existing(target: Target, repo: str, tag: str) -> Manifest | None:
    try:
        content = target.get_manifest(repo, tag)
    except NotFoundError:
        return None
    node = content.parse()
    if not isinstance(node, Manifest):
        raise InvalidContentError(f"{repo}:{tag}: signature tag holds an index, not an image manifest")
    return node


def sign_legacy(target: Target, repo: str, subject_digest: str, signer: Signer | ec.EllipticCurvePrivateKey,
                docker_reference: str, annotations: dict[str, Any] | None = None, check_subject: bool = True) -> Content:
    """Sign ``repo@subject_digest`` the legacy cosign way and store it at ``sha256-<hex>.sig``.

    The new signature is appended to the existing signature manifest's layers (or a new manifest is made). When a
    layer with the same payload already verifies with this signer's key, nothing is pushed. Returns the signature
    manifest. ``check_subject=False`` skips checking that the subject exists (the caller just resolved it).
    """
    check_digest(subject_digest)
    if check_subject:
        target.resolve(repo, subject_digest)  # sign only what exists (NotFoundError otherwise)
    signer = as_signer(signer)
    tag = signature_tag(subject_digest)
    payload = simple_signing_payload(docker_reference, subject_digest, annotations)
    payload_digest = sha256_bytes(payload)
    existing = _existing(target, repo, tag)

    if existing is not None:
        public_key = signer.public_key if isinstance(signer, KeySigner) else None
        for layer in existing.layers:
            sig_b64 = _signature_b64(layer)
            if public_key is not None and layer.digest == payload_digest and sig_b64 is not None:
                try:
                    _verifies(public_key, payload, sig_b64)
                except VerificationError:
                    continue
                return target.get_manifest(repo, tag)  # this key already signed this payload
        if len(existing.layers) >= MAX_LAYERS:
            raise UsageError(f"{repo}:{tag}: already holds {len(existing.layers)} signatures (limit {MAX_LAYERS})")

    layer = Descriptor(mediaType=SIMPLESIGNING_MEDIA_TYPE, digest=payload_digest, size=len(payload),
                       annotations=signer.sign_legacy_payload(payload))
    with target.writing():
        target.push_blob_stream(repo, layer, bytes_opener(payload))
        return _put_layers(target, repo, tag, existing, [layer])


def _put_layers(target: Target, repo: str, tag: str, existing: Manifest | None,
                new_layers: list[Descriptor]) -> Content:
    """Write the signature manifest at ``tag``: ``existing``'s layers (if any) followed by ``new_layers``."""
    layers = [*(existing.layers if existing else []), *new_layers]
    if len(layers) > MAX_LAYERS:
        raise UsageError(f"{repo}:{tag}: {len(layers)} signatures would exceed the limit of {MAX_LAYERS}")
    config = Content.of(signature_config([ly.digest for ly in layers]),
                        existing.config.mediaType if existing else OCI_CONFIG)
    if existing is None:  # cosign's signature image: no artifactType, an image config listing the layers
        return push_manifest(target, repo, artifact_type=None, layers=layers, config=config, tag=tag)
    # appending to a signature manifest another tool wrote: its other fields are kept as they are
    config_desc = Descriptor(mediaType=config.media_type, digest=config.digest, size=config.size)
    content = Content.from_model(existing.model_copy(update={"config": config_desc, "layers": layers}))
    with target.writing():
        target.push_blob_stream(repo, config_desc, bytes_opener(config.data))
        target.put_manifest(repo, content, tag)
    return content


def copy_legacy(src: Target, src_repo: str, dst: Target, dst_repo: str, subject_digest: str) -> Content | None:
    """Carry the ``sha256-<hex>.sig`` signatures of ``subject_digest`` to another repository or registry.

    Signature layers the destination does not have yet are appended to its signature manifest (signatures made
    there are kept). The payload's ``docker-reference`` names the source; like cosign, verifiers ignore it.
    Returns the destination's signature manifest, or None when the source has no signatures.
    """
    tag = signature_tag(subject_digest)
    source = _existing(src, src_repo, tag)
    if source is None:
        return None
    existing = _existing(dst, dst_repo, tag)
    have = {(ly.digest, _signature_b64(ly)) for ly in (existing.layers if existing else [])}
    new = [ly for ly in source.layers if (ly.digest, _signature_b64(ly)) not in have]
    if existing is not None and not new:
        return dst.get_manifest(dst_repo, tag)
    from ..transfer import copy_blob

    with dst.writing():
        for layer in new:
            copy_blob(src, src_repo, dst, dst_repo, layer)
        return _put_layers(dst, dst_repo, tag, existing, new)


# -- verification -----------------------------------------------------------------------------------
#: Checks one layer's signature over its payload bytes; raises VerificationError naming the reason.
SignatureCheck = Callable[[bytes, Mapping[str, str]], None]


def key_check(public_key: ec.EllipticCurvePublicKey) -> SignatureCheck:
    """A :data:`SignatureCheck` for signatures made with ``public_key``'s private key (no certificate needed)."""
    def check(data: bytes, annotations: Mapping[str, str]) -> None:
        sig_b64 = annotations.get(SIGNATURE_ANNOTATION)
        if not sig_b64:
            raise VerificationError(f"no {SIGNATURE_ANNOTATION} annotation")
        _verifies(public_key, data, sig_b64)
    return check


def signature_layers(target: Target, repo: str, subject_digest: str) -> list[Descriptor]:
    """The layers at ``sha256-<hex>.sig``; :class:`VerificationError` when there are none."""
    check_digest(subject_digest)
    tag = signature_tag(subject_digest)
    existing = _existing(target, repo, tag)
    if existing is None:
        raise VerificationError(f"{where(repo, subject_digest)}: no signatures (tag {tag} not found)")
    if not existing.layers:
        raise VerificationError(f"{where(repo, subject_digest)}: no signatures (no layers at tag {tag})")
    return existing.layers


def check_layer(target: Target, repo: str, layer: Descriptor, subject_digest: str,
                check: SignatureCheck) -> VerifiedSignature:
    """One signature layer: payload read and digest-checked, signature checked, payload names ``subject_digest``."""
    if layer.mediaType != SIMPLESIGNING_MEDIA_TYPE:
        raise VerificationError(f"not a simple-signing layer ({layer.mediaType})")
    if not _signature_b64(layer):
        raise VerificationError(f"no {SIGNATURE_ANNOTATION} annotation")
    data = read_verified_blob(target, repo, layer, MAX_PAYLOAD_BYTES, "payload")
    check(data, layer.annotations or {})
    payload = parse_payload(data)
    if payload.manifest_digest != subject_digest:
        raise VerificationError(f"digest mismatch: payload signs {payload.manifest_digest}, not {subject_digest}")
    return VerifiedSignature(payload=payload, data=data, layer=layer)


def verify_legacy(target: Target, repo: str, subject_digest: str,
                  public_key: ec.EllipticCurvePublicKey) -> list[VerifiedSignature]:
    """The signatures at ``sha256-<hex>.sig`` that verify with ``public_key`` and sign ``subject_digest``.

    Like cosign, one valid signature suffices and layers that fail are skipped. Raises :class:`VerificationError`
    when there is no signature manifest, or no layer verifies (the message gives each layer's reason).
    """
    verified: list[VerifiedSignature] = []
    reasons: list[str] = []
    for layer in signature_layers(target, repo, subject_digest):
        try:
            verified.append(check_layer(target, repo, layer, subject_digest, key_check(public_key)))
        except VerificationError as exc:
            reasons.append(f"layer {layer.digest}: {exc}")
    if not verified:
        raise VerificationError(f"{where(repo, subject_digest)}: no valid signature among {len(reasons)}: "
                                + "; ".join(reasons))
    return verified


__all__ = [
    "COSIGN_SIGNATURE_TYPE",
    "SIGNATURE_ANNOTATION",
    "SIMPLESIGNING_MEDIA_TYPE",
    "SignatureCheck",
    "SimpleSigningPayload",
    "VerifiedSignature",
    "check_layer",
    "copy_legacy",
    "key_check",
    "parse_payload",
    "sign_legacy",
    "signature_config",
    "signature_layers",
    "signature_tag",
    "simple_signing_payload",
    "verify_legacy",
]
