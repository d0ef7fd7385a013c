"""Policy bundles: everything a trained HarmoWAM needs to run, in one directory.

    bundle = export_bundle("runs/stack_cans", "bundles")      # -> bundles/stack_cans-<date>-<time>/
    policy = HarmoWAMPolicy.from_bundle(bundle)

    bundles/<name>/
      bundle.json      format, name, task, creation time, library versions, where it came from, the runs' reports,
                       and the SHA-256 of every other file (`files`)
      recipe.yaml      the recipe the experts were trained with
      world_model/     WorldModel.save_pretrained
      experts/         Experts.save_pretrained(with_encoders=True): weights, configuration, action/state
                       standardisation and any checkpoint encoders (SigLIP, T5, DINOv2)

A run directory is a stage-2 run (`runs/<task>/experts`, whose report.json names its world model) or the
task's run root holding `experts/`.

A bundle copied from elsewhere is untrusted input: before its weights are loaded, `verify_bundle` checks every
file against the SHA-256 that export recorded, so a truncated download or an altered file is one line naming
it instead of a traceback from deep inside safetensors. The hashes catch damage, not a forger (who can rewrite
bundle.json too); what keeps a bundle from running code is that nothing in it is unpickled (weights are
safetensors, configurations JSON / YAML read safely) and no encoder loads with `trust_remote_code`. Bundles
exported before the hashes (no `files`) load unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from harmowam_core.errors import HarmoWAMError

BUNDLE_FORMAT = 1
BUNDLE_FILE = "bundle.json"
_verified: dict[str, tuple] = {}  # bundle path -> the (file, size, mtime) listing last verified in this process
LIBRARIES = ("harmowam", "torch", "diffusers", "transformers", "accelerate", "numpy")


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def experts_run(run_dir: str | Path, snapshot: int | None = None) -> Path:
    """The stage-2 run directory inside `run_dir` (itself, or its `experts/`): a finished run, or with
    `snapshot`, any run that saved that snapshot (one stopped before its end too)."""
    run_dir = Path(run_dir)
    for candidate in (run_dir, run_dir / "experts"):
        if (candidate / "model").is_dir() and (candidate / "report.json").is_file():
            return candidate
        if snapshot is not None and (candidate / "snapshots" / f"step_{snapshot}" / "run.json").is_file():
            return candidate
    raise HarmoWAMError(
        f"{run_dir}: no trained experts (expected model/ and report.json here or in experts/); "
        "run `harmowam train-experts` first"
    )


def export_bundle(
    run_dir: str | Path, bundles: str | Path = "bundles", name: str | None = None, snapshot: int | None = None
) -> Path:
    """Package the run's final experts, or those of its `snapshot` step (`train_experts.snapshot_every`), with
    their world model into bundles/<name>/. Raises HarmoWAMError (one line) for a run, world model or snapshot
    that is not there."""
    from harmowam_core.models.experts import Experts
    from harmowam_core.models.world_model import load_world_model

    run = experts_run(run_dir, snapshot)
    model_dir = run / "model"
    if snapshot is not None:
        model_dir = run / "snapshots" / f"step_{snapshot}"
        if not model_dir.is_dir():
            have = sorted(int(p.name.split("_")[1]) for p in (run / "snapshots").glob("step_*") if p.is_dir())
            listed = ", ".join(map(str, have)) if have else "none (set train_experts.snapshot_every)"
            raise HarmoWAMError(f"{run}: no snapshot of step {snapshot}; the run has {listed}")
    names = model_dir / "run.json" if (model_dir / "run.json").is_file() else run / "report.json"  # the world model
    report = json.loads(names.read_text())
    wm_dir = Path(report["world_model"])
    if not wm_dir.is_dir():
        raise HarmoWAMError(f"{names} names the world model {wm_dir}, which no longer exists")
    recipe_path = run / "recipe.yaml"
    if not recipe_path.is_file():  # the policy reads the recipe's cameras, arms and gate threshold
        raise HarmoWAMError(f"{run}: no recipe.yaml (train-experts writes it); the run is incomplete")
    recipe = yaml.safe_load(recipe_path.read_text())
    task = recipe.get("name", run.parent.name)
    name = name or f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(bundles) / name
    if out.exists():
        raise HarmoWAMError(f"{out} already exists: choose another --name or remove it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        load_world_model(wm_dir).save_pretrained(partial / "world_model")
        Experts.from_pretrained(model_dir).save_pretrained(partial / "experts", with_encoders=True)
        shutil.copyfile(recipe_path, partial / "recipe.yaml")
        wm_eval = wm_dir.parent / "evaluation.json"
        meta = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "task": task,
            "arms": recipe.get("arms", "single"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
            "sources": {"experts": str(run.resolve()), "world_model": str(wm_dir.resolve()), "snapshot": snapshot},
            "reports": {
                "experts": report,
                "world_model": json.loads(wm_eval.read_text()) if wm_eval.is_file() else None,
            },
        }
        meta["files"] = {name: sha256_file(partial / name) for name in _bundle_files(partial)}
        (partial / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    except BaseException:  # a full disk, Ctrl-C: leave nothing behind (a kill leaves <name>.partial, never <name>)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return out


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _bundle_files(path: Path) -> list[str]:
    """Every file of a bundle but bundle.json and hidden ones (`.DS_Store`), as sorted POSIX relative paths."""
    names = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            rel = (Path(folder) / name).relative_to(path).as_posix()
            if not name.startswith(".") and rel != BUNDLE_FILE:
                names.append(rel)
    return sorted(names)


def read_bundle(path: str | Path) -> dict:
    """bundle.json of a bundle, as a dict. Raises HarmoWAMError (one line) where there is none, it is not JSON or
    it is of another bundle format."""
    path = Path(path)
    if not (path / BUNDLE_FILE).is_file():
        raise HarmoWAMError(f"{path}: not a HarmoWAM bundle (no {BUNDLE_FILE}); make one with `harmowam export`")
    try:
        meta = json.loads((path / BUNDLE_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HarmoWAMError(
            f"{path / BUNDLE_FILE}: not readable JSON ({err}); re-export or re-download the bundle"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else "none"
        raise HarmoWAMError(f"{path}: bundle format {got}; this harmowam reads {BUNDLE_FORMAT}")
    return meta


def verify_bundle(path: str | Path) -> None:
    """Check every file of the bundle against the SHA-256 bundle.json records (`files`, written by export): one
    line naming the first file that is missing, truncated or altered, or present but not recorded (HarmoWAMError).
    A bundle exported before the hashes has no `files`: its required files must be there, its JSON files parse
    and its safetensors files hold all the bytes their headers promise (`_check_unhashed`). A listing verified once
    in this process (same files, sizes and modification times) is not hashed again."""
    path = Path(path)
    recorded = read_bundle(path).get("files")
    if recorded is None:
        _check_unhashed(path)
        return
    if not isinstance(recorded, dict):
        raise HarmoWAMError(f"{path / BUNDLE_FILE}: key 'files': expected a mapping of file -> SHA-256")
    present = _bundle_files(path)
    listing = tuple((name, (path / name).stat().st_size, (path / name).stat().st_mtime_ns) for name in present)
    key = str(path.resolve())
    if _verified.get(key) == (listing, tuple(sorted(recorded.items()))):
        return
    fix = "re-export it or download it again"
    for name in sorted(recorded):
        if name not in present:
            raise HarmoWAMError(f"{path / name}: missing from the bundle ({BUNDLE_FILE} lists it); {fix}")
        if sha256_file(path / name) != recorded[name]:
            raise HarmoWAMError(
                f"{path / name}: its SHA-256 differs from the one {BUNDLE_FILE} records (truncated or altered); {fix}"
            )
    extra = [name for name in present if name not in recorded]
    if extra:
        raise HarmoWAMError(f"{path / extra[0]}: not part of the exported bundle ({BUNDLE_FILE} does not list it)")
    _verified[key] = (listing, tuple(sorted(recorded.items())))


REQUIRED_FILES = (
    "recipe.yaml",
    "world_model/harmowam_world_model.json",
    "world_model/transformer/config.json",
    "experts/harmowam_experts.json",
    "experts/experts.safetensors",
)


def _check_unhashed(path: Path) -> None:
    """What can be checked of a bundle without recorded hashes, cheaply and before anything loads: the files
    every bundle has, JSON that parses, and safetensors files as long as their headers say (a truncated copy is
    the usual damage). HarmoWAMError naming the first bad file."""
    fix = "re-export it or download it again"
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise HarmoWAMError(f"{path / name}: missing from the bundle; {fix}")
    for name in _bundle_files(path):
        file = path / name
        if file.suffix == ".json":
            try:
                json.loads(file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise HarmoWAMError(f"{file}: not readable JSON ({err.__class__.__name__}); {fix}") from None
        elif file.suffix == ".safetensors" and not _safetensors_complete(file):
            raise HarmoWAMError(f"{file}: truncated or not a safetensors file; {fix}")


def _safetensors_complete(file: Path) -> bool:
    """Whether `file` is a safetensors file holding every byte its header describes: an 8-byte little-endian
    header length, the JSON header, then the tensors' data up to the largest `data_offsets` end."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        length = int.from_bytes(head, "little")
        if length > size - 8 or length > 100 * 2**20:
            return False
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
    if not isinstance(header, dict):
        return False
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and isinstance(t.get("data_offsets"), list)
    ]
    return 8 + length + max(ends, default=0) == size


def bundle_recipe(path: str | Path):
    """The `Recipe` a bundle was trained with (its recipe.yaml)."""
    from harmowam_core.config import recipe_from_data

    path = Path(path)
    if not (path / "recipe.yaml").is_file():
        raise HarmoWAMError(f"{path}: the bundle has no recipe.yaml")
    data = yaml.safe_load((path / "recipe.yaml").read_text())
    model = data.get("model") or {}
    if set(model) - {"preset", "overrides"}:  # a run's resolved recipe: the full model configuration
        overrides = {k: v for k, v in model.items() if k != "preset"}
        data["model"] = {"preset": model.get("preset", "tiny"), "overrides": overrides}
    return recipe_from_data(data, str(path / "recipe.yaml"))


def _arms(path: Path, meta: dict) -> str:
    if "arms" in meta:
        return meta["arms"]
    recipe = path / "recipe.yaml"
    return (yaml.safe_load(recipe.read_text()) or {}).get("arms", "single") if recipe.is_file() else "single"


def newest_bundle(bundles: str | Path = "bundles", task: str | None = None, arms: str | None = None) -> Path:
    """The most recently exported bundle under `bundles`, of `task` and for `arms` where given."""
    root = Path(bundles)
    found = [p for p in root.iterdir() if (p / BUNDLE_FILE).is_file()] if root.is_dir() else []
    if not found:
        raise HarmoWAMError(f"no bundle in {root}/: train and run `harmowam export runs/<task>` first")
    metas = {p: read_bundle(p) for p in found}  # one that is not JSON, or of another format: one line
    matching = [
        p
        for p in found
        if (task is None or metas[p].get("task") == task) and (arms is None or _arms(p, metas[p]) == arms)
    ]
    if not matching:
        wanted = " and ".join(x for x in (task and f"task {task}", arms and f"{arms}-arm") if x)
        raise HarmoWAMError(
            f"no {wanted} bundle in {root}/ (there are {len(found)} others); export one with `harmowam export`"
        )
    return max(matching, key=lambda p: ((p / BUNDLE_FILE).stat().st_mtime, p.name))


def untrained_models(recipe, resolution: int | None = None, seed: int = 0):
    """(world model, experts): randomly initialised models of `recipe`'s model configuration for its arms and
    cameras, from `seed`; `resolution` (pixels) replaces the world model's resolution and the experts' image sizes
    with a square one (None: the recipe's). The experts' normalisation is a stand-in (zero means; scales 0.01 for
    the actions, 0.5 for a gripper, 1 for the state)."""
    import torch

    from harmowam_core.models.experts import Experts, ExpertsConfig, Normalizer
    from harmowam_core.models.world_model import WorldModel, latent_frames

    config = recipe.model_config
    wm_config, predictive, reactive = config.world_model, config.predictive_expert, config.reactive_expert
    if resolution is not None:
        wm_config = replace(wm_config, resolution=[resolution, resolution])
        predictive, reactive = replace(predictive, image_size=resolution), replace(reactive, image_size=resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wm = WorldModel.from_config(wm_config)
        dim, step = recipe.action_dim, ([0.01] * 6 + [0.5]) * recipe.num_arms  # an action's (and a state's) scale
        experts = Experts(
            ExpertsConfig(
                predictive,
                reactive,
                config.gate,
                action_dim=dim,
                state_dim=dim,
                num_cameras=len(recipe.cameras),
                wm_width=wm.hidden_size,
                wm_latent_frames=latent_frames(wm.config.num_frames, wm.codec.temporal),
                chunk=config.action_chunk,
                cameras=[c.name for c in recipe.cameras],
            ),
            Normalizer([0.0] * dim, step, [0.0] * dim, [1.0] * dim, state_change_std=step),
        )
    return wm, experts


def untrained_run(root: str | Path, recipe, resolution: int = 64, seed: int = 0) -> Path:
    """A run directory (`root/wm/model`, `root/experts/{model,report.json,recipe.yaml}`) holding randomly
    initialised tiny models for `recipe`'s arms and cameras (`untrained_models` at `resolution`): what benchmarks
    and tests export when latency, not skill, is measured."""
    root = Path(root)
    wm, experts = untrained_models(recipe, resolution, seed)
    wm.save_pretrained(root / "wm" / "model")
    experts.save_pretrained(root / "experts" / "model")
    report = {"world_model": str((root / "wm" / "model").resolve()), "untrained": True}
    (root / "experts" / "report.json").write_text(json.dumps(report))
    (root / "experts" / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(resolved=False)))
    return root
