"""Every fenced ```python block of README.md and docs/*.md runs, as written, against a real registry.

``localhost:5000`` is replaced by the test registry's address; the files a snippet names (``model/``, ``out/bert``,
``cosign.key``, ``policy.yaml``, an input dataset in the registry) are prepared first, and a short prelude defines
the two placeholders of the training-loop example (``steps``, ``train_one_step``). Blocks run in document order in
one working directory, each in a fresh interpreter, so a later block may use what an earlier one pushed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import REPO_ROOT, write_random
from support.registry import RunningRegistry

import ociart

PRELUDE = '''\
from pathlib import Path as _Path
steps = 3
def train_one_step(step):
    d = _Path(f"ckpt/step-{step}")
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.safetensors").write_bytes(bytes([step]) * 1000)
    return 1.0 / (step + 1)
'''

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets() -> list[tuple[str, int, str]]:
    """(file, line, code) of every python block, README first, then docs/*.md."""
    found = []
    for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for m in _BLOCK.finditer(text):
            found.append((path.name, text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def _prepare(work: Path, host: str) -> None:
    for d in ("model", "out/bert", "out/model"):
        write_random(work / d / "model.safetensors", 200_000, seed=len(d))
        (work / d / "config.json").write_text('{"hidden": 8}\n')
    ociart.generate_key_pair(work / "cosign", b"pw")
    (work / "policy.yaml").write_text(
        "apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n"
        "  - repositories: ['**']\n    keys: [cosign.pub]\n")
    data = work / "sst2"
    data.mkdir()
    (data / "train.csv").write_text("text,label\nfine,1\n")
    with ociart.Client() as c:
        c.push(f"{host}/data/sst2:v3", [data], kind="dataset")


def test_every_python_snippet_runs(registry: RunningRegistry, tmp_path: Path) -> None:
    blocks = snippets()
    assert len(blocks) >= 4, blocks  # the five-line API, the library, training scripts, signing
    work = tmp_path / "work"
    work.mkdir()
    _prepare(work, registry.host)
    env = {**os.environ, "COSIGN_PASSWORD": "pw"}
    for name, line, code in blocks:
        assert "localhost:5000" in code or "ociart" in code, (name, line)
        source = PRELUDE + code.replace("localhost:5000", registry.host)
        proc = subprocess.run([sys.executable, "-c", source], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{name}:{line} failed:\n{code}\n--- stderr ---\n{proc.stderr}"
    # what the blocks claim happened did happen
    with ociart.Client() as c:
        assert c.resolve(f"{registry.host}/models/bert:prod").digest == c.resolve(
            f"{registry.host}/models/bert:v1").digest
        assert c.tags(f"{registry.host}/models/bert-sst2") and c.resolve(f"{registry.host}/models/bert-sst2:v1")
        c.verify(f"{registry.host}/models/bert:v1", keys=[work / "cosign.pub"])
    assert (work / "serving" / "bert" / "model.safetensors").is_file()
    assert (work / "out" / "model.safetensors").is_file()
