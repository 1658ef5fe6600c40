"""Checks of the Dockerfile, its build context and the image scripts."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile

from . import cargo
from .dockerignore import is_excluded, load_rules
from .report import Report

# The functions that get an image, named as their Dockerfile target, their
# Knative Service and their scripts/images entry. Each image runs the binary
# alchemist-NAME.
FUNCTIONS = ("login", "upload", "convert", "notify")
FFMPEG_FUNCTIONS = {"convert"}

USER_PATTERN = re.compile(r"^(\d+)(?::(\d+))?$")
FFMPEG_INSTALL = re.compile(r"\bapt(?:-get)?\s+install\b[^;&|]*\bffmpeg\b")
RELEASE_BINARY = re.compile(r"/target/(?:[^/]+/)?(?:release|debug)/([^/]+)$")
CARGO_BIN_FLAG = re.compile(r"--bin(?:\s+|=)([A-Za-z0-9_-]+)")
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass
class Stage:
    """One FROM section of the Dockerfile."""

    index: int
    name: str | None
    base: str
    line: int
    commands: list = field(default_factory=list)


def parse_stages(path: Path) -> list[Stage]:
    """Split the Dockerfile into stages, with global ARG defaults substituted in FROM."""
    commands = dockerfile.parse_file(str(path))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for command in commands:
        if command.cmd == "FROM":
            values = list(command.value)
            image = VARIABLE.sub(lambda match: global_args.get(match.group(1), match.group(0)), values[0])
            name = values[2] if len(values) >= 3 and values[1].lower() == "as" else None
            stages.append(Stage(len(stages), name, image, command.start_line))
        elif not stages:
            if command.cmd == "ARG":
                for declaration in command.value:
                    key, _, default = declaration.partition("=")
                    global_args[key] = default.strip('"')
        else:
            stages[-1].commands.append(command)
    return stages


def stage_chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """Return the stage and the stages it is built FROM, oldest first."""
    by_name = {candidate.name: candidate for candidate in stages if candidate.name}
    chain = [stage]
    while chain[0].base in by_name and by_name[chain[0].base] not in chain:
        chain.insert(0, by_name[chain[0].base])
    return chain


def chain_commands(stages: list[Stage], stage: Stage, instruction: str) -> list:
    return [command for link in stage_chain(stages, stage) for command in link.commands if command.cmd == instruction]


def copied_binaries(stage: Stage) -> list[tuple[str, str]]:
    """Return (binary name, destination) for each COPY --from of a cargo build output."""
    copies = []
    for command in stage.commands:
        if command.cmd != "COPY" or not any(flag.startswith("--from=") for flag in command.flags):
            continue
        *sources, destination = command.value
        for source in sources:
            match = RELEASE_BINARY.search(source)
            if match:
                copies.append((match.group(1), destination))
    return copies


def env_values(commands: list) -> dict[str, str]:
    values: dict[str, str] = {}
    for command in commands:
        items = list(command.value)
        for index in range(0, len(items) - 1, 2):
            values[items[index]] = items[index + 1]
    return values


def check_dockerfile(root: Path, report: Report, service_ports: dict[str, int]) -> None:
    """Run every Dockerfile check; `service_ports` maps a function to its Knative containerPort."""
    path = root / "Dockerfile"
    try:
        stages = parse_stages(path)
    except (OSError, dockerfile.GoParseError) as error:
        report.result("dockerfile parse", [f"Dockerfile could not be parsed: {error}"])
        return
    report.result("dockerfile parse", [] if stages else ["Dockerfile has no FROM instruction"])
    if not stages:
        return

    try:
        workspace = cargo.load_workspace(root)
    except (OSError, ValueError) as error:
        report.result("dockerfile binaries", [f"Cargo.toml could not be read: {error}"])
        workspace = None

    by_name = {stage.name: stage for stage in stages if stage.name}
    if workspace is not None:
        check_binaries(stages, workspace, report)
        check_rust_version(stages, workspace, report)
        check_context(root, workspace, report)

    for function in FUNCTIONS:
        stage = by_name.get(function)
        if stage is None:
            report.result(f"dockerfile stage {function}", [f"Dockerfile has no stage named {function!r}"])
            continue
        report.result(f"dockerfile stage {function}", [])
        check_entrypoint(function, stage, stages, report)
        check_user(function, stage, stages, report)
        check_ffmpeg(function, stage, stages, report)
        check_port(function, stage, stages, service_ports.get(function), report)


def check_binaries(stages: list[Stage], workspace: cargo.Workspace, report: Report) -> None:
    """Check that every binary that cargo builds or a stage copies is a bin target of a workspace member."""
    problems = [f"workspace member {member.problem}" for member in workspace.members if member.problem]
    known = set(workspace.all_bins())
    built: set[str] = set()
    for stage in stages:
        for command in stage.commands:
            if command.cmd == "RUN" and "cargo build" in " ".join(command.value):
                built.update(CARGO_BIN_FLAG.findall(" ".join(command.value)))
    for name in sorted(built - known):
        problems.append(f"cargo build --bin {name}: no workspace member has a bin target {name!r}")
    for stage in stages:
        for binary, _ in copied_binaries(stage):
            if binary not in known:
                problems.append(
                    f"stage {stage.name or stage.index} copies {binary!r}, which is not a bin target of a "
                    f"workspace member (bin targets: {', '.join(sorted(known)) or 'none'})"
                )
            elif built and binary not in built:
                problems.append(f"stage {stage.name or stage.index} copies {binary!r}, which no cargo build --bin builds")
    report.result("dockerfile binaries", problems)


def check_rust_version(stages: list[Stage], workspace: cargo.Workspace, report: Report) -> None:
    name = "dockerfile rust-version"
    rust_stages = [stage for stage in stages if re.match(r"^(?:docker\.io/(?:library/)?)?rust:", stage.base)]
    if workspace.rust_version is None or not rust_stages:
        report.skip(name, "no rust-version in Cargo.toml or no rust: base image")
        return
    problems = []
    required = version_tuple(workspace.rust_version)
    for stage in rust_stages:
        tag = stage.base.split(":", 1)[1]
        match = re.match(r"^(\d+(?:\.\d+){0,2})", tag)
        if not match:
            problems.append(f"stage {stage.name or stage.index}: cannot read a Rust version from {stage.base!r}")
        elif version_tuple(match.group(1)) < required:
            problems.append(
                f"stage {stage.name or stage.index} uses {stage.base}, older than rust-version "
                f"{workspace.rust_version} in Cargo.toml"
            )
    report.result(name, problems)


def version_tuple(text: str) -> tuple[int, ...]:
    numbers = [int(part) for part in text.split(".")]
    return tuple(numbers + [0] * (3 - len(numbers)))


def check_context(root: Path, workspace: cargo.Workspace, report: Report) -> None:
    """Check that the build context contains the manifests, sources and embedded files, and not target/."""
    rules = load_rules(root / ".dockerignore")
    problems = []
    if not (root / ".dockerignore").is_file():
        problems.append(".dockerignore is missing, so target/ and .git/ are sent to the Docker engine")
    needed = ["Cargo.toml", "Cargo.lock"]
    for member in workspace.members:
        needed += [f"{member.path}/Cargo.toml", f"{member.path}/src/lib.rs", f"{member.path}/src/main.rs"]
    for path, named_in in cargo.embedded_files(root, workspace):
        if path.startswith("(outside"):
            problems.append(f"{named_in} embeds {path}, which no Docker build context can hold")
        elif is_excluded(path, rules):
            problems.append(f".dockerignore excludes {path}, which {named_in} embeds")
    for path in needed:
        if is_excluded(path, rules):
            problems.append(f".dockerignore excludes {path}, which cargo needs")
    for path in ("target/release/build-output", ".git/HEAD"):
        if not is_excluded(path, rules):
            problems.append(f".dockerignore lets {path.split('/')[0]}/ into the build context")
    report.result("dockerfile context", problems)


def check_entrypoint(function: str, stage: Stage, stages: list[Stage], report: Report) -> None:
    """Check that the stage copies alchemist-FUNCTION and runs it as its ENTRYPOINT."""
    problems = []
    expected = f"alchemist-{function}"
    copies = {binary: destination for binary, destination in copied_binaries(stage)}
    if expected not in copies:
        problems.append(f"stage {function} does not copy the binary {expected} from the build stage")
    entrypoints = chain_commands(stages, stage, "ENTRYPOINT")
    if not entrypoints:
        problems.append(f"stage {function} has no ENTRYPOINT")
    else:
        program = entrypoints[-1].value[0] if entrypoints[-1].value else ""
        if Path(program).name != expected:
            problems.append(f"stage {function} runs {program!r}; expected the binary {expected}")
        elif expected in copies and copies[expected].rstrip("/") not in (program, str(Path(program).parent)):
            problems.append(f"stage {function} runs {program!r} but copies {expected} to {copies[expected]!r}")
    report.result(f"dockerfile entrypoint {function}", problems)


def check_user(function: str, stage: Stage, stages: list[Stage], report: Report) -> None:
    """Check that the image runs as a numeric, non-zero uid, which Kubernetes' runAsNonRoot can verify."""
    users = chain_commands(stages, stage, "USER")
    if not users:
        report.result(f"dockerfile user {function}", [f"stage {function} sets no USER, so it runs as root"])
        return
    user = users[-1].value[0] if users[-1].value else ""
    match = USER_PATTERN.match(user)
    problems = []
    if not match:
        problems.append(f"stage {function} has USER {user!r}; use a numeric uid[:gid] so runAsNonRoot can check it")
    elif int(match.group(1)) == 0:
        problems.append(f"stage {function} runs as uid 0 (root)")
    report.result(f"dockerfile user {function}", problems)


def check_ffmpeg(function: str, stage: Stage, stages: list[Stage], report: Report) -> None:
    """Check that convert installs Debian's ffmpeg without recommended packages and no other image carries it."""
    runs = [" ".join(command.value) for command in chain_commands(stages, stage, "RUN")]
    chain = stage_chain(stages, stage)
    installs = [run for run in runs if FFMPEG_INSTALL.search(run)]
    problems = []
    if function in FFMPEG_FUNCTIONS:
        if not installs:
            problems.append(f"stage {function} does not apt-get install ffmpeg")
        for run in installs:
            if "--no-install-recommends" not in run:
                problems.append(f"stage {function} installs ffmpeg without --no-install-recommends")
    else:
        mentions = [run for run in runs if "ffmpeg" in run]
        mentions += [link.base for link in chain if "ffmpeg" in link.base]
        mentions += [
            " ".join(command.value)
            for link in chain
            for command in link.commands
            if command.cmd in ("COPY", "ADD") and "ffmpeg" in " ".join(command.value)
        ]
        for mention in mentions:
            problems.append(f"stage {function} must not carry ffmpeg, but has: {mention[:120]}")
    report.result(f"dockerfile ffmpeg {function}", problems)


def check_port(function: str, stage: Stage, stages: list[Stage], service_port: int | None, report: Report) -> None:
    """Check that the image sets PORT and exposes it, matching the Knative Service's containerPort."""
    env = env_values(chain_commands(stages, stage, "ENV"))
    exposed = [value.split("/")[0] for command in chain_commands(stages, stage, "EXPOSE") for value in command.value]
    problems = []
    port = env.get("PORT")
    if port is None:
        problems.append(f"stage {function} does not set ENV PORT")
    elif not port.isdigit():
        problems.append(f"stage {function} sets PORT={port!r}, not a port number")
    else:
        if port not in exposed:
            problems.append(f"stage {function} sets PORT={port} but does not EXPOSE {port}")
        if service_port is not None and int(port) != service_port:
            problems.append(
                f"stage {function} sets PORT={port} but the Knative Service {function} has containerPort {service_port}"
            )
    report.result(f"dockerfile port {function}", problems)


def check_images_script(root: Path, report: Report) -> None:
    """Check that scripts/images builds exactly the function targets."""
    path = root / "scripts" / "images"
    name = "scripts/images functions"
    if not path.is_file():
        report.result(name, ["scripts/images is missing"])
        return
    match = re.search(r"FUNCTIONS=\(([^)]*)\)", path.read_text(encoding="utf-8"))
    if not match:
        report.result(name, ["scripts/images has no FUNCTIONS=(...) list"])
        return
    listed = match.group(1).split()
    problems = []
    if sorted(listed) != sorted(FUNCTIONS):
        problems.append(f"scripts/images builds {listed}; the functions are {list(FUNCTIONS)}")
    report.result(name, problems)


def run_linter(report: Report, name: str, command: list[str], tool: str | None) -> None:
    if tool is None:
        report.skip(name, f"{command[0]} is not installed")
        return
    completed = subprocess.run([tool, *command[1:]], capture_output=True, text=True, check=False, timeout=120)
    output = (completed.stdout + completed.stderr).strip().splitlines()
    report.result(name, output or [f"exit status {completed.returncode}"] if completed.returncode else [])


def check_linters(root: Path, report: Report, tools_dir: Path | None) -> None:
    """Run hadolint on the Dockerfile and shellcheck on the deploy scripts."""

    def find(program: str) -> str | None:
        if tools_dir is not None and (tools_dir / program).is_file():
            return str(tools_dir / program)
        return shutil.which(program)

    run_linter(
        report,
        "hadolint Dockerfile",
        ["hadolint", "--failure-threshold", "warning", str(root / "Dockerfile")],
        find("hadolint"),
    )
    for script in ("scripts/images", "scripts/check-deploy"):
        run_linter(report, f"shellcheck {script}", ["shellcheck", str(root / script)], find("shellcheck"))
