"""File names for the layers of other tools' model artifacts that carry no name (docs/spec.md §5, "Restored names").

Pull restores a layer under its ``org.cncf.model.filepath`` or ``org.opencontainers.image.title`` annotation and skips
a layer with neither, except for the media types below, whose meaning fixes a name:

* Docker Model Runner (``application/vnd.docker.ai.*``, config ``application/vnd.docker.ai.model.config.v0.1+json`` or
  ``v0.2``; docker/model-runner ``pkg/distribution/types/config.go``): the names its runtime bundle gives them
  (``pkg/distribution/internal/bundle/unpack.go``): one GGUF is ``model.gguf``, several are
  ``model-00001-of-0000N.gguf`` in manifest order, the same for safetensors; ``model.mmproj``, ``template.jinja``,
  ``model.dduf``; licenses (not in its bundle) ``LICENSE``, ``LICENSE.2``, ... Current DMR writes a filepath
  annotation on every layer (``pkg/distribution/internal/partial/layer.go``), which wins.
* Ollama (``application/vnd.ollama.image.*`` layers in a Docker schema 2 manifest; ollama ``server/images.go``):
  ``model.gguf``, ``adapter.gguf``, ``projector.gguf``, ``template``, ``system``, ``prompt`` (the old name of the
  template), ``params.json``, ``messages.json``, ``license`` (``license.2``, ... when there are several). Media type
  parameters (``; name=...``) are ignored; tensor layers (``application/vnd.ollama.image.tensor``) have no fixed
  name and are skipped.
"""

from __future__ import annotations

from ..oci import Manifest

DMR_PREFIX = "application/vnd.docker.ai."
OLLAMA_PREFIX = "application/vnd.ollama.image."

#: media type (without parameters) -> (name of the only one, name pattern when there are several)
_SHARDED = {
    DMR_PREFIX + "gguf.v3": ("model.gguf", "model-{i:05d}-of-{n:05d}.gguf"),
    DMR_PREFIX + "safetensors": ("model.safetensors", "model-{i:05d}-of-{n:05d}.safetensors"),
}
_NUMBERED = {
    DMR_PREFIX + "mmproj": "model.mmproj",
    DMR_PREFIX + "chat.template.jinja": "template.jinja",
    DMR_PREFIX + "dduf": "model.dduf",
    DMR_PREFIX + "license": "LICENSE",
    OLLAMA_PREFIX + "model": "model.gguf",
    OLLAMA_PREFIX + "adapter": "adapter.gguf",
    OLLAMA_PREFIX + "projector": "projector.gguf",
    OLLAMA_PREFIX + "template": "template",
    OLLAMA_PREFIX + "system": "system",
    OLLAMA_PREFIX + "prompt": "prompt",
    OLLAMA_PREFIX + "params": "params.json",
    OLLAMA_PREFIX + "messages": "messages.json",
    OLLAMA_PREFIX + "license": "license",
}


def base_type(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip()


def restored_names(manifest: Manifest, named: set[int]) -> dict[int, str]:
    """Layer index -> the file name to restore it as, for the layers not in ``named`` (those with a name
    annotation) whose media type fixes one."""
    by_type: dict[str, list[int]] = {}
    for i, layer in enumerate(manifest.layers):
        if i not in named:
            by_type.setdefault(base_type(layer.mediaType), []).append(i)
    out: dict[int, str] = {}
    for mt, indexes in by_type.items():
        if mt in _SHARDED:
            one, many = _SHARDED[mt]
            n = len(indexes)
            for k, i in enumerate(indexes, 1):
                out[i] = one if n == 1 else many.format(i=k, n=n)
        elif mt in _NUMBERED:
            name = _NUMBERED[mt]
            for k, i in enumerate(indexes, 1):
                out[i] = name if k == 1 else f"{name}.{k}"
    return out
