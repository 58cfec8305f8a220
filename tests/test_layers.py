"""The house reads bottom to top: no module imports from a floor above its own.

Floors: foundations (config, errors, storage, starting Ray) < data (pipeline's corpora, audio,
spectrogram, shards, manifest, ingestion, generated corpora) < training < evaluation < the entry
points (semisep/: CLI, nightly, demo, experiment, sweep). Every import counts, also the ones
inside functions (kept there only to keep the CLI fast), so a lazy import cannot hide an arrow
running upward.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOUNDATIONS = {"semisep.pipeline.config", "semisep.pipeline.errors", "semisep.pipeline.storage",
               "semisep.pipeline.ray_session"}
# installed name -> (folder in the checkout, floor)
PACKAGES = {"semisep.pipeline": ("pipeline", 1), "semisep.training": ("training", 2),
            "semisep.evaluation": ("evaluation", 3), "semisep": ("semisep", 4)}
NAMES = {0: "foundations", 1: "data (pipeline)", 2: "training", 3: "evaluation", 4: "entry points (semisep)"}


def floor(module: str) -> int:
    if module in FOUNDATIONS:
        return 0
    stage = ".".join(module.split(".")[:2])
    return PACKAGES.get(stage, PACKAGES["semisep"])[1]


def project_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "semisep":
                found.append((node.lineno, name))
    return found


def modules():
    for package, (folder, _) in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = f"{package}.{path.stem}" if path.stem != "__init__" else package
            yield name, path


def test_no_import_runs_upward():
    known = {name for name, _ in modules()}
    upward = set()
    for name, path in modules():
        for line, imported in project_imports(path):
            target = imported if imported in known else imported.rsplit(".", 1)[0]
            if target not in known:
                continue
            if floor(target) > floor(name):
                upward.add(f"{path.relative_to(ROOT)}:{line} ({NAMES[floor(name)]}) imports {target} "
                           f"({NAMES[floor(target)]})")
    assert not upward, "\n".join(sorted(upward))


def test_every_package_has_modules_on_its_floor():
    seen = {floor(name) for name, _ in modules()}
    assert seen == set(NAMES)


def test_the_demo_command_only_calls_the_demo_flow():
    """cmd_demo holds no training or evaluation of its own: it calls semisep.demo.run_demo."""
    tree = ast.parse((ROOT / "semisep" / "cli.py").read_text())
    cmd = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "cmd_demo")
    calls = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr for n in ast.walk(cmd) if isinstance(n, ast.Call)}
    assert "run_demo" in calls
    assert not calls & {"train", "evaluate", "ingest", "generate", "register", "promote"}


def test_no_module_imports_the_stage_folders_by_their_checkout_names():
    """``pipeline``, ``training`` and ``evaluation`` are other packages' names once semisep is
    installed beside them: semisep's code imports its stages as ``semisep.<stage>`` only."""
    found = []
    for _, path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                      if n.split(".")[0] in ("pipeline", "training", "evaluation")]
    assert not found, "\n".join(found)
