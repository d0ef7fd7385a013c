"""The dependency directions the layout promises (README, Architecture), checked in fresh interpreters: the
closed-loop policy loads nothing of training, the real station nothing of the simulator, the data layer no
model; and nothing the project loads goes through pickle or remote code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SOURCES = sorted(p for pkg in ("harmowam_core", "harmowam_cli") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("harmowam_core.policy.policy", "harmowam_core.training"),
        ("harmowam_core.envs.real.station", "harmowam_core.envs.sim"),
        ("harmowam_core.data.reader", "harmowam_core.models"),
        ("harmowam_core.data.writer", "harmowam_core.training"),
    ],
)
def test_a_module_does_not_load_what_it_must_not_depend_on(module, forbidden):
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m == {forbidden!r} or m.startswith({forbidden!r} + '.'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} loads {out}"


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every call `name(...)` in `text` (balanced parentheses, across lines)."""
    out = []
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[match.end() : i - 1])
    return out


def test_nothing_loaded_goes_through_pickle_or_remote_code():
    """Datasets, bundles and checkpoints are untrusted input (issue 22): weights load from safetensors only
    (`use_safetensors=True` on every model's from_pretrained), numpy arrays without pickle, and no pickle module,
    `torch.load` without `weights_only=True` or `trust_remote_code=True` appears. The one exception is
    accelerate's `load_state` of the user's own training checkpoints (`training/loop.py`)."""
    assert len(SOURCES) > 50
    models = re.compile(r"\b(?!WorldModel\b)(\w*(Model|KLWan)|model_cls)\.from_pretrained$")  # not our own
    for path in SOURCES:
        text = path.read_text()
        where = path.relative_to(ROOT).as_posix()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib)\b", text, re.M), where
        assert not re.search(r"trust_remote_code\s*=\s*True", text), where
        for args in _calls(text, "torch.load"):
            assert "weights_only=True" in args, f"{where}: torch.load({args})"
        for args in _calls(text, "np.load"):
            assert "allow_pickle=False" in args, f"{where}: np.load({args})"
        for match in re.finditer(r"[\w.]+\.from_pretrained\(", text):
            name = match.group(0)[:-1]
            if models.search(name):
                args = _calls(text[match.start() :], name)[0]
                assert "use_safetensors=True" in args, f"{where}: {name}({args})"
        if "load_state(" in text:
            assert where == "harmowam_core/training/loop.py", where
