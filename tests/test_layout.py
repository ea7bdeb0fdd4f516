"""The package layout: one `musicrec` namespace, and a base package that never imports upward."""

import ast
import pathlib
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("pipeline", "components", "trainer", "serving")
# The base package: what every layer builds on. It must not depend on the layers above it.
BASE = ("musicrec/data", "musicrec/audio", "musicrec/simulation", "musicrec/genre", "musicrec/names.py", "musicrec/__init__.py")


def imported_modules(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_the_base_package_never_imports_the_layers_above_it():
    files = [f for base in BASE for f in ((ROOT / base).rglob("*.py") if (ROOT / base).is_dir() else [ROOT / base])]
    assert len(files) > 20
    upward = sorted(
        f"{f.relative_to(ROOT)} imports {module}"
        for f in files for module in imported_modules(f)
        if module.split(".")[0] in LAYERS or any(module.startswith(f"musicrec.{layer}") for layer in LAYERS + ("cli",))
    )
    assert upward == []


def test_no_code_imports_a_layer_outside_the_musicrec_namespace():
    files = [f for folder in LAYERS + ("musicrec", "tests", "benchmarks") for f in (ROOT / folder).rglob("*.py")]
    generic = sorted(f"{f.relative_to(ROOT)} imports {m}" for f in files for m in imported_modules(f) if m.split(".")[0] in LAYERS)
    assert generic == []


def test_the_wheel_installs_only_the_musicrec_namespace(tmp_path):
    # Built from a copy of the tracked sources: pip builds in the source tree, whose build/ may hold stale modules.
    source = tmp_path / "source"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in files.split():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("musicrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"musicrec"}
    for module in ("musicrec/trainer/user_module.py", "musicrec/components/audio_trainer/component.py",
                   "musicrec/pipeline/configs/demo.yaml", "musicrec/serving/export.py", "musicrec/names.py"):
        assert module in names


def test_a_working_directory_with_its_own_pipeline_and_trainer_folders_does_not_shadow_ours(tmp_path):
    for name in LAYERS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package was imported')\n")
    code = ("import musicrec.pipeline.pipeline as p, musicrec.trainer.user_module, musicrec.serving.export, "
            "musicrec.components.audio_trainer.component; print(p.USER_RUN_FN)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "musicrec.trainer.user_module.run_fn"
