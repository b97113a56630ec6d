#!/bin/sh
# Build the ociart init image (images/init/Containerfile) from this checkout.
#   examples/k8s/build-image.sh IMAGE [BASE]
# BASE defaults to docker.io/library/python:3.12-slim, resolved to its current digest with skopeo and passed
# pinned (REPO@sha256:...). Needs podman (or docker: CONTAINER_ENGINE=docker), skopeo and network access to
# the base image's registry.
set -eu
image=${1:?usage: build-image.sh IMAGE [BASE]}
base=${2:-docker.io/library/python:3.12-slim}
root=$(cd "$(dirname "$0")/../.." && pwd)
engine=${CONTAINER_ENGINE:-podman}
case "$base" in
  *@sha256:*) pinned=$base ;;
  *) pinned="${base%:*}@$(skopeo inspect --format '{{.Digest}}' "docker://$base")" ;;
esac
case "$pinned" in
  *@sha256:????????????????????????????????????????????????????????????????) ;;
  *) echo "build-image.sh: base $pinned is not pinned by digest" >&2; exit 2 ;;
esac
rm -rf "$root/dist"
python3 -m pip wheel --no-deps --wheel-dir "$root/dist" "$root"
"$engine" build --file "$root/images/init/Containerfile" --build-arg "BASE=$pinned" \
  --label "org.opencontainers.image.base.name=$pinned" --tag "$image" "$root"
echo "$image (base $pinned)"
