"""Media types and annotation keys (OCI image spec v1.1.1, Docker manifest v2 schema 2)."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
#: Filesystem changesets (image-spec layer.md), whatever their annotations say: extracted, whiteouts applied.
IMAGE_LAYER_TYPES = frozenset({
    OCI_LAYER, OCI_LAYER + "+gzip", OCI_LAYER + "+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
})
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: distribution 2.8.2 answers 404 for an OCI manifest unless its type is accepted explicitly.
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])

#: The empty descriptor's content (image-spec "Guidance for an Empty Descriptor").
EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"

#: Default artifactType for `ociart push` without --artifact-type or --config.
DEFAULT_ARTIFACT_TYPE = "application/vnd.ociart.artifact.v1"
DEFAULT_FILE_TYPE = "application/octet-stream"

# Sigstore bundles stored as referrers (cosign specs/BUNDLE_SPEC.md; read by lineage, written by ociart.signing)
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ANNOTATION_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANNOTATION_BUNDLE_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"
