"""The repository stands on its own: no machine-specific paths in tracked files, and external reference data only
through ``$OCIART_SPEC_DIR`` (``helpers.spec_dir``), with the skip/fail rule README states and ``.ci/run`` applies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import helpers
import pytest
from helpers import REPO_ROOT, optional_spec_dir, spec_dir

#: Paths that only exist on one machine: a checkout or home location, a virtualenv's absolute bin directory.
#: Absolute system paths used on purpose (``/etc/...`` as an attack target, ``/models`` in a Pod) are fine.
MACHINE_PATHS = {
    "checkout or root's home": re.compile(r"(?<![\w.:/~$-])/(?:work|root)(?![\w.-])"),
    "home directory": re.compile(r"(?<![\w.:/~-])/(?:home|Users)/[\w.-]+"),
    "absolute virtualenv": re.compile(r"(?<![\w.:/~-])(?:/[\w.+-]+)*/\.?venv/bin(?![\w.-])"),
}
#: External data found beside the checkout instead of through ``$OCIART_SPEC_DIR``: allowed only where CI's layout
#: is described (``.ci/run`` computes ``$OCIART_SPEC_DIR`` from it, README says so).
SIBLING_SPEC = re.compile(r"\bshared(?:/|[\"']\s*/\s*[\"'])spec\b")
SIBLING_SPEC_ALLOWED = {".ci/run", "README.md"}


def offenders(name: str, text: str) -> list[str]:
    """``name:line: what: match`` for every machine path (and misplaced spec lookup) in ``text``."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for what, rx in MACHINE_PATHS.items():
            found += [f"{name}:{lineno}: {what}: {m.group(0)}" for m in rx.finditer(line)]
        if name not in SIBLING_SPEC_ALLOWED:
            found += [f"{name}:{lineno}: spec data beside the checkout: {m.group(0)}"
                      for m in SIBLING_SPEC.finditer(line)]
    return found


def tracked_files() -> list[str]:
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip(f"{REPO_ROOT} is not a git checkout (or git is not installed): no tracked files to scan")
    r = subprocess.run([git, "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, timeout=60, check=False)
    if r.returncode != 0:
        pytest.skip(f"git ls-files failed in {REPO_ROOT}: {r.stderr.decode(errors='replace').strip()}")
    return [n for n in r.stdout.decode().split("\0") if n]


def test_tracked_files_name_no_machine_paths() -> None:
    names = tracked_files()
    assert "README.md" in names and ".ci/run" in names
    found: list[str] = []
    for name in names:
        path = REPO_ROOT / name
        if path.is_file() and not path.is_symlink():
            found += offenders(name, path.read_text(encoding="utf-8", errors="replace"))
    assert found == [], "machine-specific paths in tracked files:\n" + "\n".join(found)


def _p(*parts: str) -> str:
    """An absolute path from its parts (so this file itself never spells one)."""
    return "/" + "/".join(parts)


@pytest.mark.parametrize("text", [
    f"    {_p('work', 'venv', 'bin', 'python')} benchmarks/packaging.py --rounds 3",
    f'SPEC = Path("{_p("work", "shared", "spec")}")',
    f"cd {_p('work')} && make",
    f"see {_p('root', '.cache', 'x')}",
    f"export PATH={_p('home', 'alice', 'src', 'ociart', '.venv', 'bin')}:$PATH",
    f"{_p('Users', 'bob', 'ociart')}/README.md",
    f"python={_p('opt', 'ci', '.venv', 'bin', 'python')}",
    f'REPO_ROOT.parent / "{"shared"}" / "spec"',
    f"default: ../{'shared'}/spec next to the repository",
])
def test_scan_catches_machine_paths(text: str) -> None:
    assert offenders("tests/x.py", text), text


@pytest.mark.parametrize("text", [
    ".venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest -q",
    "python3 -m venv .venv && .venv/bin/ociart push demo/model:v1 demo-model",
    'target = "/etc/passwd"  # an attack target, on purpose',
    "command: [ociart, pull, -o, /models, --policy, /etc/ociart/policy.yaml]",
    "https://example.com/work/root/home/alice/venv/bin",
    "~/.docker/config.json and $HOME/.config",
    "tests/support/node/node_modules/.bin/x and src/workflow, /rootfs, /workspace",
    'KServe runs `sh -c "ln -s /proc/$$/root/models /mnt/models && sleep infinity"` in a modelcar',
])
def test_scan_leaves_legitimate_paths(text: str) -> None:
    assert offenders("tests/x.py", text) == []


def test_sibling_spec_lookup_allowed_only_where_ci_layout_is_described() -> None:
    line = f'spec="$(dirname "$PWD")/{"shared"}/spec"'
    assert offenders(".ci/run", line) == [] and offenders("README.md", line) == []
    assert offenders("tests/helpers.py", line)


# -- the spec-data rule -----------------------------------------------------------------------------
@pytest.fixture
def spec_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A spec dir holding only ``a/one.json``; both variables unset."""
    monkeypatch.delenv(helpers.SPEC_ENV, raising=False)
    monkeypatch.delenv(helpers.REQUIRE_SPEC_ENV, raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.json").write_text("{}")
    return tmp_path


def test_unset_spec_dir_skips_naming_variable_and_files(spec_env: Path) -> None:
    with pytest.raises(pytest.skip.Exception) as exc:
        spec_dir("a/one.json", "b/two.yaml")
    msg = str(exc.value)
    assert "OCIART_SPEC_DIR is not set" in msg and "a/one.json" in msg and "b/two.yaml" in msg
    assert optional_spec_dir("a/one.json") is None


def test_incomplete_spec_dir_skips_naming_what_is_missing(spec_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_SPEC_DIR", str(spec_env))
    assert spec_dir("a/one.json") == spec_env
    assert optional_spec_dir("a/one.json") == spec_env
    with pytest.raises(pytest.skip.Exception) as exc:
        spec_dir("a/one.json", "b/two.yaml")
    assert f"OCIART_SPEC_DIR={spec_env} lacks b/two.yaml;" in str(exc.value)
    assert optional_spec_dir("b/two.yaml") is None


@pytest.mark.parametrize("where", ["unset", "incomplete"])
def test_required_spec_data_missing_is_a_failure(where: str, spec_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_REQUIRE_SPEC", "1")
    if where == "incomplete":
        monkeypatch.setenv("OCIART_SPEC_DIR", str(spec_env))
    for lookup in (spec_dir, optional_spec_dir):
        with pytest.raises(pytest.fail.Exception) as exc:
            lookup("a/one.json", "b/two.yaml")
        assert "OCIART_SPEC_DIR" in str(exc.value) and "b/two.yaml" in str(exc.value)
        assert "OCIART_REQUIRE_SPEC=1" in str(exc.value)
    monkeypatch.setenv("OCIART_SPEC_DIR", str(spec_env))
    assert spec_dir("a/one.json") == spec_env  # present data passes under the requirement too


def test_relative_spec_dir_is_read_from_where_pytest_started(spec_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_SPEC_DIR", os.path.relpath(spec_env, helpers._START_DIR))
    assert Path.cwd() != helpers._START_DIR  # the isolated environment runs each test elsewhere
    assert spec_dir("a/one.json").resolve() == spec_env.resolve()


# -- CI ---------------------------------------------------------------------------------------------
def _readme_test_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    commands = [b.strip() for b in re.findall(r"```sh\n(.*?)```", readme, re.DOTALL) if "pytest" in b]
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_readme_test_command_with_spec_data_required(tmp_path: Path) -> None:
    script = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = _readme_test_command()
    assert command in script, "README's test command is not run verbatim by .ci/run"
    before = script[:script.index(command)]
    assert "export OCIART_REQUIRE_SPEC=1" in before
    (setting,) = [line for line in before if line.startswith("export OCIART_SPEC_DIR=")]
    # .ci/run runs from the checkout: the spec dir is the shared/ copy beside it, wherever CI cloned it
    checkout = tmp_path / "some-clone"
    checkout.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OCIART_SPEC_DIR"}
    out = subprocess.run(["bash", "-c", f'{setting}\nprintf %s "$OCIART_SPEC_DIR"'], cwd=checkout, env=env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert Path(out) == tmp_path.joinpath("shared", "spec")
