"""The container image (Dockerfile) installs exactly what `make` installs, and is a Beam worker.

No Docker daemon is needed. Both sides' install commands run against a recording interpreter (it
logs each pip / uv call instead of installing): `make setup` for real, and the install commands of
the Dockerfile's RUN instructions, found by a small parse of its instructions. The two logs must be
the same but for the editable install. Each check also runs on copies with one side edited, and
must catch the difference.
"""

import dataclasses
import fnmatch
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from distutils.core import run_setup
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What the checks read; the package folders are read from ROOT (no edit below touches them).
PROJECT_FILES = ("Makefile", "Dockerfile", ".dockerignore", "setup.py", "requirements")
BEAM_BOOT = "/opt/apache/beam/boot"  # the SDK harness entrypoint Dataflow starts workers with
BEAM_DIR = "/opt/apache/beam"
PYTHON_PREFIX = "/usr/local"  # where the official python images install Python (and packages)
INSTALLERS = {"pip", "pip3", "uv", "easy_install", "conda", "mamba", "poetry", "pipenv"}
DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
RECORDER = """#!{python} -IS
import json, os, pathlib, sys
name = pathlib.Path(sys.argv[0]).name
call = sys.argv[1:] if name.startswith("python") else [name] + sys.argv[1:]
with open(os.environ["INSTALL_LOG"], "a") as log:
    log.write(json.dumps(call) + "\\n")
"""


@pytest.fixture
def project(tmp_path) -> pathlib.Path:
    """A copy of the files that define both installs, to edit one side of."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in PROJECT_FILES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, copy / name)
    return copy


# --- parsing ------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    image: str
    name: Optional[str]
    platform: Optional[str]
    instructions: List[Tuple[str, str]]


def dockerfile_stages(text: str) -> List[Stage]:
    """The build stages of a Dockerfile, with the global ARG defaults substituted into FROM lines.

    (No Dockerfile parser is in the lock; this covers the syntax the project's Dockerfile uses:
    comments, continuation lines, flags, ARG, JSON exec forms.)"""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
    global_args: Dict[str, str] = {}
    stages: List[Stage] = []
    for line in filter(str.strip, logical):
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), ""), args).split()
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
            rest = [w for w in words if not w.startswith("--")]
            name = rest[2] if len(rest) == 3 and rest[1].upper() == "AS" else None
            stages.append(Stage(rest[0], name, flags.get("platform"), []))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def split_flags(args: str) -> Tuple[Dict[str, str], List[str]]:
    """`--from=build /a /b` -> ({"from": "build"}, ["/a", "/b"]); JSON forms give no flags."""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = dict((w[2:].split("=", 1) + [""])[:2] for w in words if w.startswith("--"))
    return flags, [w for w in words if not w.startswith("--")]


def simple_commands(command: str) -> List[List[str]]:
    """The simple commands of a shell command line (split at && || ; | and parentheses), without
    leading variable assignments; a JSON exec form is one command."""
    if command.startswith("["):
        return [json.loads(command)]
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words = [], []
    for token in list(lexer) + [";"]:
        if set(token) <= set("&|;()"):
            while words and re.fullmatch(r"\w+=.*", words[0]):
                words.pop(0)
            commands += [words] if words else []
            words = []
        else:
            words.append(token)
    return commands


def installs_packages(argv: List[str]) -> bool:
    tool = pathlib.PurePath(argv[0]).name
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None
    return tool in INSTALLERS or tool.startswith("pip3.") or module in ("pip", "uv")


def dockerignored(path: str, patterns: List[str]) -> bool:
    """Whether .dockerignore's patterns leave `path` (or a folder above it) out of the build
    context: patterns are rooted at the context, the last matching one wins, `!` re-includes.
    (fnmatch's `*` also crosses `/`, so this errs towards reporting an exclusion.)"""
    parts = pathlib.PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated, pattern = pattern.startswith("!"), pattern.lstrip("!").strip("/")
        candidates = {pattern, pattern[3:] if pattern.startswith("**/") else pattern}
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            ignored = not negated
    return ignored


def dockerignore_patterns(project: pathlib.Path) -> List[str]:
    path = project / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def locked_version(project: pathlib.Path, package: str) -> str:
    for line in (project / "requirements/lock.txt").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line)
            if requirement.name == package:
                (pin,) = requirement.specifier
                return pin.version
    raise AssertionError(f"{package} is not in the lock")


def lock_architecture(project: pathlib.Path) -> str:
    """The architecture the lock is compiled for (uv writes its command into the lock's header)."""
    platform = re.search(r"--python-platform\s+(\S+)", (project / "requirements/lock.txt").read_text()).group(1)
    return DOCKER_ARCH[platform.split("-")[0]]


@lru_cache(maxsize=None)
def package_definition() -> Tuple[str, Tuple[str, ...]]:
    """setup.py's python_requires and the files its packages are built from, as setuptools reads them."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        dist = run_setup("setup.py", stop_after="init")
    finally:
        os.chdir(cwd)
    folders = {(dist.package_dir or {}).get(p) or p.replace(".", "/") for p in dist.packages}
    files = sorted(str(f.relative_to(ROOT)) for folder in folders for f in (ROOT / folder).glob("*")
                   if f.is_file() and f.suffix != ".pyc")
    return dist.python_requires, tuple(["setup.py"] + files)


# --- running each side's install against the recorder ---------------------------------------


def recorder(folder: pathlib.Path) -> pathlib.Path:
    """`python` and `uv` in `folder` that log their arguments instead of installing anything."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("python", "uv"):
        (folder / name).write_text(RECORDER.format(python=sys.executable))
        (folder / name).chmod(0o755)
    return folder / "python"


def recorded(log: pathlib.Path, project: pathlib.Path, python: pathlib.Path) -> List[List[str]]:
    """The logged calls, comparable across sides: `python -m X` as `X`, the interpreter as PYTHON,
    paths in the project relative to it."""
    def normal(arg: str) -> str:
        if arg in (str(python), "python", "python3"):
            return "PYTHON"
        if arg.startswith(str(project)):
            return os.path.relpath(arg, project)
        return arg
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [[normal(a) for a in (call[1:] if call[:1] == ["-m"] else call)] for call in calls]


# Set by an outer `make` (`make test` runs these tests): a nested make would then print
# "Entering/Leaving directory" lines, inherit the outer flags and take the outer's variables.
OUTER_MAKE = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")


def run(argv, project: pathlib.Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    # PYTHON310 given, the Makefile need not ask pyenv for it (a second per `make`).
    outer = {k: v for k, v in os.environ.items() if k not in OUTER_MAKE}
    env = {**outer, "PYTHON310": sys.executable, **env}
    return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)


def make_installs(project: pathlib.Path, tmp_path: pathlib.Path) -> List[List[str]]:
    """What `make setup` installs into a fresh virtualenv (whose python and uv are recorders)."""
    python, log = recorder(tmp_path / "venv/bin"), tmp_path / "make.log"
    out = run(["make", "setup", f"VENV={tmp_path / 'venv'}", f"PYTHON310={python}"], project, {"INSTALL_LOG": str(log)})
    assert out.returncode == 0, out.stderr
    return recorded(log, project, python)


def install_stage(stages: List[Stage]) -> Optional[Stage]:
    """The stage whose Python prefix the final stage copies (where the packages are installed)."""
    for keyword, args in stages[-1].instructions:
        flags, paths = split_flags(args)
        if keyword == "COPY" and "from" in flags and paths[0].rstrip("/") == PYTHON_PREFIX:
            return next((s for s in stages if s.name == flags["from"]), None)
    return None


@dataclasses.dataclass
class ImageInstall:
    calls: List[List[str]]  # as recorded
    problems: List[str]


def image_installs(project: pathlib.Path, tmp_path: pathlib.Path) -> ImageInstall:
    """What the Dockerfile installs: the install commands of its install stage's RUN instructions,
    run in order against the recorder (as `python` on PATH, the image's interpreter), each checked
    for the files it reads being in the image by then."""
    stages = dockerfile_stages((project / "Dockerfile").read_text())
    stage = install_stage(stages)
    if stage is None:
        return ImageInstall([], [f"the final stage copies no stage's {PYTHON_PREFIX} (the installed packages)"])
    python, log = recorder(tmp_path / "image/bin"), tmp_path / "image.log"
    env = {"INSTALL_LOG": str(log), "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}
    workdir, copied, problems = pathlib.PurePosixPath("/"), [], []
    for keyword, args in stage.instructions:
        if keyword == "WORKDIR":
            workdir = workdir / args
        elif keyword in ("COPY", "ADD") and "from" not in split_flags(args)[0]:
            *sources, destination = split_flags(args)[1]
            for source in sources:
                if os.path.normpath(source) != os.path.normpath(os.path.relpath(workdir / destination, workdir)):
                    problems.append(f"{keyword} {args} moves files: the install recipe finds its inputs beside itself")
                copied.append(os.path.normpath(source))
        elif keyword == "RUN":
            for argv in simple_commands(args):
                if not installs_packages(argv) and not (project / argv[0]).is_file():
                    continue
                if not (project / argv[0]).is_file() or not os.access(project / argv[0], os.X_OK):
                    problems.append(f"the image installs outside the shared recipe: {shlex.join(argv)}")
                    continue
                before = len(recorded(log, project, python))
                out = run(argv, project, env)
                if out.returncode:
                    problems.append(f"{shlex.join(argv)} fails: {out.stderr.strip()}")
                for call in recorded(log, project, python)[before:] + [[argv[0]]]:
                    problems += [f"{path} is not in the image when `{shlex.join(argv)}` runs" for path in read_files(call, project)
                                 if not any(c == "." or path == c or path.startswith(c + "/") for c in copied)]
    return ImageInstall(recorded(log, project, python), problems)


def read_files(call: List[str], project: pathlib.Path) -> List[str]:
    """The project files a recorded call reads: requirement files, and the project when it installs it."""
    files = [call[i + 1] for i, arg in enumerate(call[:-1]) if arg in ("-r", "--requirement")]
    if "." in call:
        files += list(package_definition()[1])
    return files + [a for a in call[:1] if (project / a).is_file()]


# --- the checks ---------------------------------------------------------------------------


def editable(call: List[str]) -> bool:
    return "-e" in call or "--editable" in call


def image_problems(project: pathlib.Path, tmp_path: pathlib.Path) -> List[str]:
    """Every way the image's install differs from `make`'s, or the image is not a Beam worker."""
    made = make_installs(project, tmp_path)
    image = image_installs(project, tmp_path)
    problems = list(image.problems)
    # The same calls but for the editable install of the project, which the image must not have.
    expected = [[a for a in call if a not in ("-e", "--editable")] for call in made]
    if image.calls != expected:
        problems.append(f"make installs {made}, the image {image.calls}")
    if not any(editable(call) and "." in call for call in made):
        problems.append("make does not install the project editable")
    if any(editable(call) for call in image.calls):
        problems.append("the image installs editable")
    if not any("." in call for call in image.calls):
        problems.append("the image does not install the project")
    lock = shlex.split(run(["make", "-n", "-B", "lock", "VENV=/nonexistent"], project, {}).stdout.splitlines()[-1])
    lock_file = lock[lock.index("-o") + 1]
    if not any(read_files(call, project)[:1] == [lock_file] and "--no-deps" not in call for call in image.calls):
        problems.append(f"the image does not install the lock `make lock` writes ({lock_file}) with its dependencies")
    uv_pins = [Requirement(a) for call in image.calls if call[:2] == ["pip", "install"] for a in call if a.startswith("uv")]
    if not any(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in uv_pins):
        problems.append("the image does not install one pinned uv")
    ignore = dockerignore_patterns(project)
    needed = {path for call in image.calls for path in read_files(call, project)}
    problems += [f".dockerignore leaves {path} out of the build context" for path in sorted(needed) if dockerignored(path, ignore)]
    return problems + beam_worker_problems(project)


def beam_worker_problems(project: pathlib.Path) -> List[str]:
    """The image must start Beam's SDK harness (boot) of the locked Beam release, on setup.py's
    Python, for the architecture the lock is compiled for."""
    stages = dockerfile_stages((project / "Dockerfile").read_text())
    final, problems = stages[-1], []
    python_requires, _ = package_definition()
    for stage in stages:
        if stage.platform != f"linux/{lock_architecture(project)}":
            problems.append(f"{stage.image} is built for {stage.platform}, the lock for linux/{lock_architecture(project)}")
    pythons = {m.group(1) for s in stages for m in [re.match(r"python:(\d+\.\d+)", s.image)] if m}
    if len(pythons) != 1 or not SpecifierSet(python_requires).contains(next(iter(pythons))):
        problems.append(f"the image's Python {pythons} is not one Python of setup.py's {python_requires}")
    beam_image = f"apache/beam_python{min(pythons, default='')}_sdk:{locked_version(project, 'apache-beam')}"
    copies = [(split_flags(args)[0].get("from"), split_flags(args)[1]) for keyword, args in final.instructions if keyword == "COPY"]
    sources = {s.name: s.image for s in stages if s.name} | {s.image: s.image for s in stages}
    if not any(sources.get(origin) == beam_image and paths[:1] == [BEAM_DIR] and paths[-1].rstrip("/") == BEAM_DIR
               for origin, paths in copies):
        problems.append(f"the final stage does not copy {BEAM_DIR} from {beam_image} (the locked Beam)")
    entrypoints = [args for keyword, args in final.instructions if keyword == "ENTRYPOINT"]
    if not entrypoints or not entrypoints[-1].startswith("[") or json.loads(entrypoints[-1]) != [BEAM_BOOT]:
        problems.append(f"the entrypoint is not Beam's {BEAM_BOOT}")
    return problems


# --- tests --------------------------------------------------------------------------------


def test_the_image_installs_exactly_what_make_installs_and_runs_beam_workers(project, tmp_path):
    assert image_problems(project, tmp_path) == []


def edit(project: pathlib.Path, name: str, old: str, new: str) -> None:
    path = project / name
    assert old in path.read_text(), f"{name} no longer has {old!r}: update this test's edit"
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize("name, old, new, caught", [
    # The image installs the lock itself instead of through the shared recipe.
    ("Dockerfile", "RUN requirements/install.sh dependencies python",
     "RUN pip install uv && uv pip install --system -r requirements/lock.txt", "outside the shared recipe"),
    # make installs the lock but no longer the no-deps list.
    ("Makefile", "requirements/install.sh dependencies $(PY)",
     "$(PY) -m pip install -q uv==0.13.9 && $(PY) -m uv pip install -q --python $(PY) -r requirements/lock.txt", "make installs"),
    ("Dockerfile", "RUN requirements/install.sh package python", "RUN requirements/install.sh package python --editable",
     "the image installs editable"),
    ("Dockerfile", "COPY requirements/ requirements/\n", "", "is not in the image when"),
    ("Dockerfile", "COPY requirements/ requirements/", "COPY requirements/ deps/", "moves files"),
    (".dockerignore", "\ntests\n", "\ntests\ntrainer\n", ".dockerignore leaves trainer/"),
    # Either side of the Beam release alone: the image's worker entrypoint, or the lock's SDK.
    ("Dockerfile", "ARG BEAM_VERSION=2.59.0", "ARG BEAM_VERSION=2.58.0", "the locked Beam"),
    ("requirements/lock.txt", "\napache-beam==2.59.0", "\napache-beam==2.60.0", "the locked Beam"),
    ("Dockerfile", f'ENTRYPOINT ["{BEAM_BOOT}"]', 'ENTRYPOINT ["python"]', "the entrypoint"),
    ("Dockerfile", "ARG PYTHON_VERSION=3.10", "ARG PYTHON_VERSION=3.11", "setup.py"),
    ("Dockerfile", "--platform=linux/amd64 python:${PYTHON_VERSION}-slim AS build", "python:${PYTHON_VERSION}-slim AS build",
     "the lock for linux/amd64"),
])
def test_a_change_to_one_side_only_is_caught(project, tmp_path, name, old, new, caught):
    edit(project, name, old, new)
    problems = image_problems(project, tmp_path)
    assert any(caught in problem for problem in problems), problems


def test_make_reinstalls_when_the_recipe_or_what_it_reads_changes(project, tmp_path):
    calls = make_installs(project, tmp_path)
    up_to_date = ["make", "-q", "setup", f"VENV={tmp_path / 'venv'}", f"PYTHON310={tmp_path / 'venv/bin/python'}"]
    assert run(up_to_date, project, {}).returncode == 0
    planned = run(["make", "-n", "-B", "setup"], project, {}).stdout.splitlines()
    recipes = {argv[0] for line in planned for argv in simple_commands(line)
               if not os.path.isabs(argv[0]) and (project / argv[0]).is_file()}
    inputs = sorted(recipes | {f for call in calls for f in read_files(call, project) if (project / f).exists()})
    assert "requirements/install.sh" in inputs and "setup.py" in inputs
    stamp = (tmp_path / "venv/.installed").stat().st_mtime
    for name in inputs:
        os.utime(project / name, (stamp + 60, stamp + 60))
        assert run(up_to_date, project, {}).returncode == 1, f"make does not reinstall when {name} changes"
        os.utime(project / name, (stamp - 60, stamp - 60))


def test_make_image_without_a_docker_daemon_says_so(project):
    out = run(["make", "image", "IMAGE=registry.example/musicrec:test"], project, {"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert out.returncode != 0
    assert "make image needs a Docker daemon" in out.stderr
    assert "docker build" not in out.stdout
    # With a daemon, it builds this Dockerfile with the tag given, and pushes that tag.
    planned = [shlex.split(line) for line in run(["make", "-n", "push-image", "IMAGE=registry.example/musicrec:test"], project, {}).stdout.splitlines()]
    assert ["docker", "build", "-t", "registry.example/musicrec:test", "."] in planned
    assert planned[-1] == ["docker", "push", "registry.example/musicrec:test"]
