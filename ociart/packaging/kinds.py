"""Artifact kinds, their media types, and how files are classified into layer roles (docs/spec.md §2–§4).

Models follow CNCF ModelPack v1 exactly; the other kinds use ociart's own ``application/vnd.ociart.*`` types and
reuse ModelPack layer types where the blob means the same thing (a checkpoint's weights are model weights).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath


class Kind(str, Enum):
    MODEL = "model"
    DATASET = "dataset"
    PREPROCESSOR = "preprocessor"
    REPORT = "report"
    CHECKPOINT = "checkpoint"
    GENERIC = "generic"


MODELPACK_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
REPORT_METRICS = "application/vnd.ociart.evaluation.metrics.v1+json"
KITOPS_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
KITOPS_MANIFEST = "application/vnd.kitops.modelkit.manifest.v1+json"


@dataclass(frozen=True)
class KindSpec:
    artifact_type: str
    config_media_type: str | None  # None: the empty config (report)


KIND_SPECS: dict[Kind, KindSpec] = {
    Kind.MODEL: KindSpec(MODELPACK_MANIFEST, MODELPACK_CONFIG),
    Kind.DATASET: KindSpec("application/vnd.ociart.dataset.manifest.v1+json",
                           "application/vnd.ociart.dataset.config.v1+json"),
    Kind.PREPROCESSOR: KindSpec("application/vnd.ociart.preprocessor.manifest.v1+json",
                                "application/vnd.ociart.preprocessor.config.v1+json"),
    Kind.REPORT: KindSpec("application/vnd.ociart.evaluation.report.v1+json", None),
    Kind.CHECKPOINT: KindSpec("application/vnd.ociart.checkpoint.manifest.v1+json",
                              "application/vnd.ociart.checkpoint.config.v1+json"),
}

ARTIFACT_TYPE_TO_KIND = {spec.artifact_type: kind for kind, spec in KIND_SPECS.items()}

# -- roles ------------------------------------------------------------------------------------------
#: Layer roles. The five ModelPack roles plus ociart's preprocessor payload and checkpoint state.
WEIGHT, WEIGHT_CONFIG, DOC, CODE, DATASET = "weight", "weight.config", "doc", "code", "dataset"
PREPROCESSOR, STATE = "preprocessor", "state"

WEIGHT_SUFFIXES = {
    ".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx", ".pt": "pytorch", ".pth": "pytorch",
    ".bin": "pytorch", ".h5": "keras", ".keras": "keras", ".pkl": "pickle", ".joblib": "joblib",
    ".ckpt": "pytorch", ".msgpack": "flax", ".tflite": "tflite", ".pb": "tensorflow", ".npz": "numpy",
    ".mlmodel": "coreml", ".ubj": "xgboost", ".cbm": "catboost",
}
CONFIG_NAMES = {
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "preprocessor_config.json", "chat_template.jinja",
    "model.safetensors.index.json", "pytorch_model.bin.index.json", "adapter_config.json", "params.json",
}
CONFIG_SUFFIXES = {".model", ".tiktoken", ".jinja"}  # sentencepiece models, tiktoken vocabularies, chat templates
DOC_NAMES = re.compile(r"^(readme|license|licence|notice|copying|changelog|model[_-]?card|citation)(\..*)?\Z", re.I)
DOC_SUFFIXES = {".md", ".rst", ".pdf", ".html", ".htm", ".txt", ".png", ".jpg", ".jpeg", ".svg"}
CODE_SUFFIXES = {
    ".py", ".ipynb", ".sh", ".js", ".ts", ".go", ".rs", ".c", ".cc", ".cpp", ".h", ".java", ".r", ".jl", ".lua",
    ".toml", ".cfg", ".ini", ".mk",
}
CODE_NAMES = {"requirements.txt", "dockerfile", "makefile", "pyproject.toml", "setup.py", "environment.yml",
              "conda.yaml", "mlproject"}
DATASET_SUFFIXES = {".csv", ".tsv", ".parquet", ".jsonl", ".arrow", ".tfrecord", ".avro", ".orc", ".feather"}
STATE_HINT = re.compile(r"(optim|scheduler|rng|trainer_state|scaler|random_states)", re.I)


def classify(kind: Kind, rel: str, executable: bool) -> tuple[str, bool]:
    """The role of a file in an artifact of ``kind``; the flag says the choice was a fallback guess."""
    *dirs, name = rel.lower().split("/")
    dot = name.rfind(".")
    suffix = name[dot:] if 0 < dot < len(name) - 1 else ""  # PurePosixPath.suffix, without the object
    in_code_dir = any(part in ("code", "src", "scripts") for part in dirs)
    if kind is Kind.DATASET:
        if DOC_NAMES.match(name):
            return DOC, False
        return DATASET, False
    if kind is Kind.PREPROCESSOR:
        if DOC_NAMES.match(name) or suffix in (".md", ".rst"):
            return DOC, False
        if suffix in CODE_SUFFIXES or name in CODE_NAMES:
            return CODE, False
        return PREPROCESSOR, False
    if kind is Kind.CHECKPOINT:
        if suffix in WEIGHT_SUFFIXES and not STATE_HINT.search(name):
            return WEIGHT, False
        return STATE, False
    # models
    if name in CONFIG_NAMES or suffix in CONFIG_SUFFIXES:
        return WEIGHT_CONFIG, False
    if DOC_NAMES.match(name):
        return DOC, False
    if name in CODE_NAMES or suffix in CODE_SUFFIXES or in_code_dir or executable:
        return CODE, False
    if suffix in WEIGHT_SUFFIXES:
        return WEIGHT, False
    if suffix in DATASET_SUFFIXES:
        return DATASET, False
    if suffix in DOC_SUFFIXES:
        return DOC, False
    if suffix in (".json", ".yaml", ".yml"):
        return WEIGHT_CONFIG, True
    return DOC, True


def layer_media_type(kind: Kind, role: str, fmt: str) -> str:
    """``fmt`` is ``raw`` or ``tar``."""
    if role == PREPROCESSOR:
        return f"application/vnd.ociart.preprocessor.v1.{fmt}"
    if role == STATE:
        return f"application/vnd.ociart.checkpoint.state.v1.{fmt}"
    return f"application/vnd.cncf.model.{role}.v1.{fmt}"


def weight_format(names: list[str]) -> str | None:
    """The ModelPack ``config.format`` implied by the weight files, when they agree."""
    found = {WEIGHT_SUFFIXES[PurePosixPath(n).suffix.lower()] for n in names
             if PurePosixPath(n).suffix.lower() in WEIGHT_SUFFIXES}
    return found.pop() if len(found) == 1 else None


# -- reading: kinds of foreign artifacts and filter categories -----------------------------------------
FILTERS = ("weights", "config", "docs", "code", "dataset")
_CATEGORY_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^application/vnd\.(cncf|cnai)\.model\.weight\.config\.v1\."), "config"),
    (re.compile(r"^application/vnd\.(cncf|cnai)\.model\.weight\.v1\."), "weights"),
    (re.compile(r"^application/vnd\.(cncf|cnai)\.model\.doc\.v1\."), "docs"),
    (re.compile(r"^application/vnd\.(cncf|cnai)\.model\.code\.v1\."), "code"),
    (re.compile(r"^application/vnd\.(cncf|cnai)\.model\.dataset\.v1\."), "dataset"),
    (re.compile(r"^application/vnd\.ociart\.preprocessor\.v1\."), "config"),
    (re.compile(r"^application/vnd\.ociart\.checkpoint\.state\.v1\."), "weights"),
    (re.compile(r"^application/vnd\.ociart\.evaluation\.metrics\.v1\+json\Z"), "docs"),
    (re.compile(r"^application/vnd\.kitops\.modelkit\.(model|modelpart)\.v1\."), "weights"),
    (re.compile(r"^application/vnd\.kitops\.modelkit\.docs\.v1\."), "docs"),
    (re.compile(r"^application/vnd\.kitops\.modelkit\.code\.v1\."), "code"),
    (re.compile(r"^application/vnd\.kitops\.modelkit\.dataset\.v1\."), "dataset"),
    (re.compile(r"^application/vnd\.docker\.ai\.(gguf|safetensors|dduf|mmproj)"), "weights"),
    (re.compile(r"^application/vnd\.docker\.ai\.(license|chat)"), "docs"),
    (re.compile(r"^application/vnd\.docker\.ai\.(vllm\.config|dir)\.tar"), "config"),
    (re.compile(r"^application/vnd\.ollama\.image\.(model|adapter|projector|tensor)\b"), "weights"),
    (re.compile(r"^application/vnd\.ollama\.image\.(template|system|prompt|params|messages)\b"), "config"),
    (re.compile(r"^application/vnd\.ollama\.image\.license\b"), "docs"),
    (re.compile(r"^(text/|image/)"), "docs"),
]


def category(media_type: str) -> str | None:
    """The filter category of a layer type; an encrypted layer (``+encrypted``) has its plain type's."""
    media_type = media_type.removesuffix("+encrypted")
    for pattern, cat in _CATEGORY_PATTERNS:
        if pattern.search(media_type):
            return cat
    return None


def is_tar(media_type: str) -> bool:
    media_type = media_type.removesuffix("+encrypted")
    return bool(re.search(r"[.+]tar(\+gzip|\+zstd)?\Z", media_type)) or media_type.endswith(".tar")


def detect_kind(artifact_type: str | None, config_media_type: str, annotations: dict[str, str],
                layer_types: Sequence[str] = ()) -> str:
    """A label for inspect: ociart kinds, ``modelkit`` (KitOps), ``docker-model`` (Docker Model Runner), ``ollama``,
    ``modelpack``, ``oras`` or ``generic``."""
    declared = annotations.get("dev.ociart.kind")
    if declared:
        return declared
    if artifact_type in ARTIFACT_TYPE_TO_KIND:
        return ARTIFACT_TYPE_TO_KIND[artifact_type].value
    if config_media_type == MODELPACK_CONFIG or config_media_type == "application/vnd.cnai.model.config.v1+json":
        return "model"
    if config_media_type == KITOPS_CONFIG or artifact_type == KITOPS_MANIFEST:
        return "modelkit"
    if config_media_type.startswith("application/vnd.docker.ai.model.config."):
        return "docker-model"
    if any(t.startswith("application/vnd.ollama.image.") for t in layer_types):
        return "ollama"
    return "generic"
