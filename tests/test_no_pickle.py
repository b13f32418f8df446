"""No load path of the project unpickles anything (issue 14, item 6): no pickle-family module is imported, and every
`torch.load` passes `weights_only=True`. Checked on the source itself (AST), so a new call site fails here."""

from __future__ import annotations

import ast
from pathlib import Path

PICKLERS = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def _sources(project_root: Path) -> list[Path]:
    return sorted(p for d in ("components", "flows", "scripts") for p in (project_root / d).rglob("*.py"))


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno}: imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            found.append(f"{path}:{node.lineno}: imports from {node.module}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and (isinstance(node.func.value, ast.Name) and node.func.value.id == "torch")
        ):
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
    return found


def test_no_source_file_unpickles(project_root):
    problems = [p for path in _sources(project_root) for p in _problems(path)]
    assert problems == []


def test_the_check_sees_what_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    unsafe = "weights_only" + "=False"  # assembled, so that this test file itself holds no unsafe call
    bad.write_text(
        "import pickle\nfrom joblib import load\nimport torch\ntorch.load('x')\n"
        f"torch.load('y', {unsafe})\ntorch.load('z', weights_only=True)\n"
    )
    assert [p.split(": ", 1)[1] for p in _problems(bad)] == [
        "imports pickle",
        "imports from joblib",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
    ]
