"""Entry point of scripts/check-deploy: runs every check and prints the tally."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from . import docker_rules, knative_rules, manifests
from .report import Report
from .schemas import KUBERNETES_GROUPS, UNVALIDATED_KINDS, CrdSchemas, validate_kubernetes, validate_metadata

# The oldest Kubernetes minor version whose API the core objects must fit.
DEFAULT_KUBERNETES_VERSION = "1.30"


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="check-deploy", description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root (default: current folder)")
    parser.add_argument(
        "--crds",
        type=Path,
        default=None,
        help="folder with the Knative CRD manifests (default: $KNATIVE_CRDS_DIR, else ../shared/knative-crds "
        "next to the repository)",
    )
    parser.add_argument(
        "--kubernetes-version",
        default=DEFAULT_KUBERNETES_VERSION,
        help=f"Kubernetes version whose API schemas core objects are checked against (default: {DEFAULT_KUBERNETES_VERSION})",
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="break the files on purpose in temporary copies and check that the matching check fails",
    )
    return parser.parse_args(argv)


def crds_directory(arguments: argparse.Namespace) -> Path:
    if arguments.crds is not None:
        return arguments.crds
    if os.environ.get("KNATIVE_CRDS_DIR"):
        return Path(os.environ["KNATIVE_CRDS_DIR"])
    return arguments.repo.resolve().parent / "shared" / "knative-crds"


def git_tracked_files(root: Path) -> set[str] | None:
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=False, timeout=60
        )
    except OSError:
        return None
    if completed.returncode != 0:
        return None
    return set(completed.stdout.splitlines())


class Checker:
    """Runs the checks on one repository tree and records them in a Report."""

    def __init__(self, root: Path, crds_dir: Path, kubernetes_version: str, report: Report, ci: bool) -> None:
        self.root = root
        self.knative_dir = root / "knative"
        self.crds_dir = crds_dir
        self.kubernetes_version = kubernetes_version
        self.report = report
        self.ci = ci
        self.crds: CrdSchemas | None = None

    def relative(self, path: Path | str) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def run(self, kubectl: str | None, tools_dir: Path | None, tracked: set[str] | None) -> None:
        self.load_crds()
        files = self.check_yaml_files()
        self.check_kustomize_files(files)
        for manifest in self.source_manifests(files):
            self.check_schema(manifest, self.relative(manifest.source))

        event_types, event_source = knative_rules.load_event_types(self.root)
        self.report.result(f"event catalogue ({event_source})", [] if event_types else ["no event types found"])
        service_ports = self.check_renders(kubectl, event_types)
        knative_rules.check_example_env_files(self.knative_dir, tracked, self.report)

        docker_rules.check_dockerfile(self.root, self.report, service_ports)
        docker_rules.check_images_script(self.root, self.report)
        docker_rules.check_linters(self.root, self.report, tools_dir)

    def load_crds(self) -> None:
        name = "knative crds"
        if not self.crds_dir.is_dir():
            message = f"{self.crds_dir} is missing, so Knative objects are not checked against their CRD schemas"
            if self.ci:
                self.report.result(name, [message + " (CI is set, where the schemas are required)"])
            else:
                self.report.skip(name, message)
            return
        try:
            self.crds = CrdSchemas(self.crds_dir)
        except (OSError, KeyError, yaml.YAMLError) as error:
            self.report.result(name, [f"CRDs in {self.crds_dir} could not be read: {error}"])
            return
        kinds = ", ".join(f"{kind} ({group})" for group, kind in sorted(self.crds.versions))
        self.report.result(name, [] if self.crds.versions else [f"no CRD with a served schema in {self.crds_dir}"])
        if not self.report.quiet:
            print(f"    schemas: {kinds}")

    def check_yaml_files(self) -> dict[Path, list]:
        """Parse every YAML file under knative/; return the documents of those that parse."""
        parsed: dict[Path, list] = {}
        for path in manifests.yaml_files(self.knative_dir):
            problems = []
            try:
                documents = manifests.load_documents(path)
            except yaml.YAMLError as error:
                self.report.result(f"yaml [{self.relative(path)}]", [str(error).replace("\n", " ")])
                continue
            if not documents:
                problems.append("has no YAML document")
            for index, document in enumerate(documents):
                if not isinstance(document, dict):
                    problems.append(f"document {index + 1} is a {type(document).__name__}, not a mapping")
            parsed[path] = documents
            self.report.result(f"yaml [{self.relative(path)}]", problems)
        return parsed

    def kustomize_roles(self) -> tuple[dict[Path, str], list[str]]:
        """Map each file that a kustomization uses to its role; also list the references that are missing."""
        roles: dict[Path, str] = {}
        missing: list[str] = []
        for directory in manifests.kustomization_dirs(self.knative_dir):
            kustomization = manifests.load_kustomization(directory)
            roles[manifests.find_kustomization(directory).resolve()] = "kustomization"
            for role, paths in (
                ("resource", kustomization.resources()),
                ("patch", kustomization.patch_files()),
                ("configuration", kustomization.configuration_files()),
                ("env", kustomization.env_files()),
            ):
                for path in paths:
                    exists = path.exists() or (role == "env" and Path(f"{path}.example").is_file())
                    if not exists:
                        missing.append(f"{self.relative(directory)} refers to {self.relative(path)} ({role}), which does not exist")
                    roles.setdefault(path.resolve(), role)
        return roles, missing

    def check_kustomize_files(self, files: dict[Path, list]) -> None:
        """Check that a kustomization uses every YAML file under knative/ and that every file it names exists."""
        try:
            roles, problems = self.kustomize_roles()
        except (OSError, yaml.YAMLError, FileNotFoundError) as error:
            self.report.result("kustomize files", [f"a kustomization could not be read: {error}"])
            return
        for path in files:
            if path.resolve() not in roles:
                problems.append(f"{self.relative(path)} is in no kustomization, so kubectl apply -k never applies it")
        self.report.result("kustomize files", problems)

    def source_manifests(self, files: dict[Path, list]) -> list[manifests.Manifest]:
        """Return the whole objects in the YAML files, leaving out kustomize's own files and patches."""
        try:
            roles, _ = self.kustomize_roles()
        except (OSError, yaml.YAMLError, FileNotFoundError):
            roles = {}
        objects = []
        for path, documents in files.items():
            if roles.get(path.resolve()) in ("kustomization", "patch", "configuration"):
                continue
            for document in documents:
                if isinstance(document, dict):
                    objects.append(manifests.Manifest(document, str(path)))
        return objects

    def check_schema(self, manifest: manifests.Manifest, where: str) -> None:
        name = f"schema [{where}] {manifest.label()}"
        missing = [key for key in ("apiVersion", "kind") if not manifest.obj.get(key)]
        if missing or not manifest.name:
            fields = missing + ([] if manifest.name else ["metadata.name"])
            self.report.result(name, [f"missing {', '.join(fields)}"])
            return
        group = manifest.group
        if (group, manifest.kind) in UNVALIDATED_KINDS:
            self.report.skip(name, UNVALIDATED_KINDS[(group, manifest.kind)])
            return
        if group in KUBERNETES_GROUPS:
            self.report.result(name, validate_kubernetes(manifest.obj, self.kubernetes_version))
            return
        if self.crds is None:
            if group.endswith("knative.dev"):
                self.report.skip(name, "Knative CRDs not loaded")
            else:
                self.report.result(name, [f"no schema for {manifest.api_version} {manifest.kind}"])
            return
        if not self.crds.knows(group, manifest.kind):
            self.report.result(name, [f"no schema for {manifest.api_version} {manifest.kind} (not a known CRD)"])
            return
        problems = self.crds.validate(manifest) + validate_metadata(manifest, self.kubernetes_version)
        self.report.result(name, problems)

    def check_renders(self, kubectl: str | None, event_types: dict[str, str | None]) -> dict[str, int]:
        """Render each kustomization and check the output; return the base's containerPort per Service."""
        base_dir = self.knative_dir / "base"
        if kubectl is None:
            self.report.skip("render", "kubectl is not installed; checking the base's files without rendering")
            objects = knative_rules.Objects(manifests.collect_objects(base_dir))
            knative_rules.run_all(objects, "knative/base files", event_types, True, True, self.report)
            return service_ports(objects)

        ports: dict[str, int] = {}
        try:
            renders = manifests.render_all(self.knative_dir, kubectl)
        except (OSError, subprocess.SubprocessError) as error:
            self.report.result("render", [f"kubectl kustomize could not run: {error}"])
            return ports
        for render in renders:
            where = self.relative(render.directory)
            if render.error is not None:
                self.report.result(f"render [{where}]", [render.error])
                continue
            self.report.result(f"render [{where}]", [])
            self.check_render_contents(render, where)
            for manifest in render.objects:
                self.check_schema(manifest, f"render {where}")
            objects = knative_rules.Objects(render.objects)
            is_base = render.directory.resolve() == base_dir.resolve()
            knative_rules.run_all(objects, where, event_types, True, is_base, self.report)
            if is_base:
                ports = service_ports(objects)
            else:
                self.check_overlay_images(render, where)
        return ports

    def check_render_contents(self, render: manifests.Render, where: str) -> None:
        """Check that the render contains every object of the kustomization's files, bases and generators."""
        if render.expected_error is not None:
            self.report.result(f"render contents [{where}]", [f"could not list the expected objects: {render.expected_error}"])
            return
        expected = render.expected
        rendered = {(manifest.kind, manifest.name) for manifest in render.objects}
        problems = []
        for manifest in expected:
            key = (manifest.kind, manifest.name)
            generated = manifest.kind in ("ConfigMap", "Secret") and any(
                kind == manifest.kind and name.startswith(f"{manifest.name}-") for kind, name in rendered
            )
            if key not in rendered and not generated:
                source = Path(manifest.source).name
                problems.append(f"{manifest.label()} (from {source}) is missing from the output")
        self.report.result(f"render contents [{where}]", problems)

    def check_overlay_images(self, render: manifests.Render, where: str) -> None:
        """Check that an overlay names every function image with a registry and a tag or digest."""
        problems = []
        for manifest in knative_rules.Objects(render.objects).services():
            image = str(knative_rules.first_container(manifest).get("image", ""))
            first = image.split("/")[0]
            has_registry = "/" in image and ("." in first or ":" in first or first == "localhost")
            has_version = "@sha256:" in image or ":" in image.rsplit("/", 1)[-1]
            if not has_registry or not has_version:
                problems.append(f"{manifest.label()} runs {image!r}; an overlay sets registry/name:tag (kustomize images)")
        self.report.result(f"overlay images [{where}]", problems)


def service_ports(objects: knative_rules.Objects) -> dict[str, int]:
    ports = {}
    for service in objects.services():
        port = knative_rules.dig(knative_rules.first_container(service), "ports", 0, "containerPort")
        if isinstance(port, int):
            ports[service.name] = port
    return ports


def run_checks(root: Path, crds_dir: Path, kubernetes_version: str, report: Report, ci: bool) -> None:
    """Run every check on the repository at `root`."""
    tools_dir = Path(sys.executable).parent
    kubectl = shutil.which("kubectl")
    Checker(root, crds_dir, kubernetes_version, report, ci).run(kubectl, tools_dir, git_tracked_files(root))


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    root = arguments.repo.resolve()
    crds_dir = crds_directory(arguments)
    ci = bool(os.environ.get("CI"))
    if arguments.self_test:
        from .selftest import run_self_test

        return run_self_test(root, crds_dir, arguments.kubernetes_version)

    report = Report()
    run_checks(root, crds_dir, arguments.kubernetes_version, report, ci)
    print(report.summary())
    return 1 if report.count("FAIL") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
