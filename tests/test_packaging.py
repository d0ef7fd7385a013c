"""pyproject.toml lists its packages explicitly (to ship recipes/ as harmowam_recipes): keep it complete."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("harmowam_core", "harmowam_cli")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found | {"harmowam_recipes"} == listed
    assert config["package-dir"]["harmowam_recipes"] == "recipes"


def test_no_torchvision_or_timm_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.startswith(("torchvision", "timm")) for d in deps)
