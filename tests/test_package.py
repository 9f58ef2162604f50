"""A real package: every import declared, and a wheel installed without `-e` that trains and predicts
from any working folder, with its configs inside it."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT, write_carvana

# Needed only by optional features, each declared in an extra of pyproject.toml.
OPTIONAL = {"kaggle"}


def third_party_imports() -> set[str]:
    names = set()
    for path in (ROOT / "carvana_seg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("carvana_seg", "__future__")}


def test_every_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower().replace("_", "-") for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {Requirement(r).name.lower().replace("_", "-") for r in extra}
    providers = metadata.packages_distributions()
    undeclared = {}
    for module in third_party_imports():
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    core = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    assert not OPTIONAL & set(core), "optional features stay out of the core dependencies"
    for name in ("torch", "torchvision"):
        assert "==" not in str(core[name].specifier), f"{name} is a range, not a pin (constraints.txt pins)"


@pytest.mark.slow
def test_a_wheel_installed_without_editable_trains_and_predicts_from_any_folder(tmp_path):
    # Built from a copy of the sources: setuptools writes build/ beside them.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "runs", ".cache", "build", "dist", "*.egg-info", "__pycache__"
    )
    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("carvana_seg-*.whl"))

    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (torch and the rest) come from this test's environment: nothing is downloaded.
    Path(site, "reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed"]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)

    work = tmp_path / "elsewhere"
    data = write_carvana(work / "data", cars=4, views=4, size=(64, 96))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run(
        [python, "-c", "import carvana_seg.config as c; print(c.__file__, c.CONF_DIR)"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    assert all(str(env_dir) in p for p in where), where

    run = work / "run"
    train = [
        env_dir / "bin" / "carvana-train",
        "data=carvana",
        f"data.root={data}",
        "debug=tiny",
        "model.base_channels=4",
        "model.depth=2",
        "data.val_fraction=0.5",
        f"paths.cache_dir={work / 'cache'}",
        f"hydra.run.dir={run}",
    ]
    result = subprocess.run(train, cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    predict = [
        env_dir / "bin" / "carvana-predict",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"input={data / 'train'}",
        f"output={work / 'pred'}",
        "data.num_workers=0",
        f"hydra.run.dir={work / 'predict_logs'}",
    ]
    result = subprocess.run(predict, cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (work / "pred" / "submission.csv.gz").is_file()
    assert len(list((work / "pred" / "masks").glob("*_mask.gif"))) == 16
