"""The one-import-root layout of ARCHITECTURE.md holds: every code folder is packaged, none shadows HF datasets."""

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOP_LEVEL = ("datasets", "pipelines", "annotators", "training", "flows")


def test_every_code_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for top in TOP_LEVEL:
        assert config["package-dir"][f"vlaforge.{top}"] == top
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if folder.name == "__pycache__" or not any(folder.glob("*.py")):
                continue
            dotted = "vlaforge." + ".".join(folder.relative_to(ROOT).parts)
            assert dotted in listed, f"{folder} holds Python code but {dotted} is not in pyproject's packages"


def test_top_level_folders_are_namespace_portions():
    for top in TOP_LEVEL:
        assert not (ROOT / top / "__init__.py").exists(), f"{top}/__init__.py would shadow other packages"


def test_hugging_face_datasets_is_not_shadowed_from_the_repo_root():
    code = "import datasets, vlaforge.datasets.schema as s; print(datasets.__file__); print(s.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    hf, ours = out.splitlines()
    assert "site-packages" in hf and ours == str(ROOT / "datasets" / "schema.py")
