"""The Cargo workspace facts that the Dockerfile checks need: members, bin targets, embedded files."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Member:
    """One workspace member: its folder, package name and bin targets."""

    path: str
    package: str | None
    bins: list[str] = field(default_factory=list)
    problem: str | None = None


@dataclass
class Workspace:
    root: Path
    members: list[Member]
    rust_version: str | None

    def bin_owner(self, name: str) -> Member | None:
        for member in self.members:
            if name in member.bins:
                return member
        return None

    def all_bins(self) -> list[str]:
        return sorted(name for member in self.members for name in member.bins)


def load_workspace(root: Path) -> Workspace:
    """Read the root Cargo.toml and each member's.

    Raises OSError or tomllib.TOMLDecodeError when the root Cargo.toml cannot be read.
    """
    manifest = tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8"))
    workspace = manifest.get("workspace", {})
    rust_version = (workspace.get("package") or {}).get("rust-version")
    members: list[Member] = []
    for pattern in workspace.get("members", []):
        paths = sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]
        for path in paths:
            members.append(load_member(root, path))
    return Workspace(root, members, rust_version)


def load_member(root: Path, path: Path) -> Member:
    """Find a member's bin targets the way Cargo does.

    Explicit [[bin]] entries count, and unless autobins = false so do
    src/main.rs (named after the package) and src/bin/NAME.rs or
    src/bin/NAME/main.rs.
    """
    relative = str(path.relative_to(root))
    manifest_path = path / "Cargo.toml"
    if not manifest_path.is_file():
        return Member(relative, None, problem=f"{relative}/Cargo.toml is missing")
    try:
        manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        return Member(relative, None, problem=f"{relative}/Cargo.toml is not valid TOML: {error}")

    package = manifest.get("package", {})
    name = package.get("name")
    bins = [entry["name"] for entry in manifest.get("bin", []) if "name" in entry]
    if package.get("autobins", True):
        if (path / "src" / "main.rs").is_file() and name not in bins:
            bins.append(name)
        bin_dir = path / "src" / "bin"
        if bin_dir.is_dir():
            for candidate in sorted(bin_dir.iterdir()):
                stem = candidate.stem if candidate.suffix == ".rs" else candidate.name
                if (candidate.suffix == ".rs" or (candidate / "main.rs").is_file()) and stem not in bins:
                    bins.append(stem)
    return Member(relative, name, bins)


EMBED_PATTERN = re.compile(r'\b(include_str|include_bytes)!\s*\(\s*"([^"]+)"\s*\)')
MIGRATE_PATTERN = re.compile(r'\bmigrate!\s*\(\s*"([^"]+)"\s*\)')


def embedded_files(root: Path, workspace: Workspace) -> list[tuple[str, str]]:
    """Return (repository-relative path, the Rust file naming it) for files the crates embed.

    include_str!/include_bytes! resolve relative to the source file and
    sqlx's migrate! relative to the crate's folder. All of them must be in the
    Docker build context.
    """
    found: list[tuple[str, str]] = []
    for member in workspace.members:
        crate_dir = root / member.path
        for source in sorted(crate_dir.rglob("*.rs")):
            if "target" in source.relative_to(crate_dir).parts:
                continue
            text = source.read_text(encoding="utf-8", errors="replace")
            named_in = str(source.relative_to(root))
            for match in EMBED_PATTERN.finditer(text):
                target = (source.parent / match.group(2)).resolve()
                found.append((relative_or_outside(target, root), named_in))
            for match in MIGRATE_PATTERN.finditer(text):
                target = (crate_dir / match.group(1)).resolve()
                found.append((relative_or_outside(target, root), named_in))
    return found


def relative_or_outside(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return f"(outside the repository) {path}"
