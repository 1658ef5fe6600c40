"""Loading of the YAML under knative/, kustomizations and their kubectl renders."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class DuplicateKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a mapping with a repeated key.

    PyYAML, like kubectl, keeps the last of two equal keys, which silently
    drops the first (two `env:` lists in one container, for example).
    """


def _construct_mapping(loader: DuplicateKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


DuplicateKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


@dataclass
class Manifest:
    """One Kubernetes object and where it came from."""

    obj: dict[str, Any]
    source: str

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def load_documents(path: Path) -> list[Any]:
    """Parse every YAML document in `path`, dropping empty ones; raises yaml.YAMLError."""
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.load_all(stream, Loader=DuplicateKeyLoader) if document is not None]


def parse_documents(text: str) -> list[Any]:
    return [document for document in yaml.load_all(text, Loader=DuplicateKeyLoader) if document is not None]


def is_kustomization(path: Path) -> bool:
    return path.name in KUSTOMIZATION_NAMES


def find_kustomization(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def yaml_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.suffix in (".yaml", ".yml") and path.is_file())


def kustomization_dirs(knative_dir: Path) -> list[Path]:
    """Return every folder under knative/ that has a kustomization, base first."""
    found = sorted(path.parent for path in knative_dir.rglob("*") if is_kustomization(path))
    return sorted(found, key=lambda directory: (directory.name != "base", str(directory)))


@dataclass
class Kustomization:
    """The parts of a kustomization file that the checks follow."""

    directory: Path
    data: dict[str, Any]

    def list_of(self, key: str) -> list[Any]:
        value = self.data.get(key) or []
        return value if isinstance(value, list) else []

    def resources(self) -> list[Path]:
        return [self.directory / entry for entry in self.list_of("resources") if isinstance(entry, str)]

    def patch_files(self) -> list[Path]:
        files = [self.directory / entry for entry in self.list_of("patchesStrategicMerge") if isinstance(entry, str)]
        for patch in self.list_of("patches"):
            if isinstance(patch, dict) and isinstance(patch.get("path"), str):
                files.append(self.directory / patch["path"])
        return files

    def configuration_files(self) -> list[Path]:
        return [self.directory / entry for entry in self.list_of("configurations") if isinstance(entry, str)]

    def generators(self) -> list[tuple[str, dict[str, Any]]]:
        """Return (kind, generator) for each configMapGenerator and secretGenerator entry."""
        pairs: list[tuple[str, dict[str, Any]]] = []
        for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
            pairs.extend((kind, entry) for entry in self.list_of(key) if isinstance(entry, dict))
        return pairs

    def env_files(self) -> list[Path]:
        files: list[Path] = []
        for _, generator in self.generators():
            for entry in generator.get("envs") or []:
                files.append(self.directory / entry)
        return files


def load_kustomization(directory: Path) -> Kustomization:
    path = find_kustomization(directory)
    if path is None:
        raise FileNotFoundError(f"{directory} has no kustomization.yaml")
    data = load_documents(path)
    return Kustomization(directory, data[0] if data and isinstance(data[0], dict) else {})


def read_env_file(path: Path) -> dict[str, str]:
    """Read a kustomize env file: KEY=VALUE lines, with # comments and blank lines ignored."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition("=")
        values[key.strip()] = value
    return values


def generated_object(kind: str, generator: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Build the ConfigMap or Secret a generator makes, without the hash suffix.

    Used when kubectl is missing. Only `envs` and `literals` are read, which
    is all this repository's kustomizations use.
    """
    data: dict[str, str] = {}
    for entry in generator.get("envs") or []:
        data.update(read_env_file(directory / entry))
    for literal in generator.get("literals") or []:
        key, _, value = str(literal).partition("=")
        data[key] = value
    key = "stringData" if kind == "Secret" else "data"
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator.get("name", "")}, key: data}


def collect_objects(directory: Path) -> list[Manifest]:
    """Gather the objects of a kustomization and its bases without rendering.

    Generated objects keep their plain names and overlay patches, images and
    generator merges are not applied; this is the fallback when kubectl is
    missing.
    """
    kustomization = load_kustomization(directory)
    objects: list[Manifest] = []
    generated: dict[tuple[str, str], Manifest] = {}
    for resource in kustomization.resources():
        if resource.is_dir():
            for manifest in collect_objects(resource):
                if manifest.kind in ("ConfigMap", "Secret"):
                    generated[(manifest.kind, manifest.name)] = manifest
                else:
                    objects.append(manifest)
        elif resource.is_file():
            for document in load_documents(resource):
                if isinstance(document, dict):
                    objects.append(Manifest(document, str(resource)))
    for kind, generator in kustomization.generators():
        name = str(generator.get("name", ""))
        generated_manifest = Manifest(generated_object(kind, generator, directory), str(directory))
        if generator.get("behavior") == "merge" and (kind, name) in generated:
            data_key = "stringData" if kind == "Secret" else "data"
            merged = dict(generated[(kind, name)].obj.get(data_key) or {})
            merged.update(generated_manifest.obj[data_key])
            generated_manifest.obj[data_key] = merged
        generated[(kind, name)] = generated_manifest
    return objects + list(generated.values())


def copy_knative_tree(knative_dir: Path, destination: Path) -> Path:
    """Copy knative/ for rendering, with every X.example copied over X.

    Overlays read secrets from env files that exist only on an operator's
    machine (secrets.env). The copy uses their .example templates instead, so
    a render never reads real secrets and works on a fresh clone.
    """
    target = destination / "knative"
    shutil.copytree(knative_dir, target)
    for example in target.rglob("*.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return target


@dataclass
class Render:
    """The output of `kubectl kustomize` for one folder, or why it failed."""

    directory: Path
    objects: list[Manifest]
    error: str | None
    # The objects the kustomization's files, bases and generators define,
    # read from the same copy that was rendered, or why they could not be read.
    expected: list[Manifest] = field(default_factory=list)
    expected_error: str | None = None


def render_all(knative_dir: Path, kubectl: str) -> list[Render]:
    """Render every kustomization under knative/ with `kubectl kustomize`."""
    renders: list[Render] = []
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as scratch:
        copy = copy_knative_tree(knative_dir, Path(scratch))
        for directory in kustomization_dirs(copy):
            relative = directory.relative_to(copy)
            original = knative_dir / relative
            expected: list[Manifest] = []
            expected_error = None
            try:
                expected = collect_objects(directory)
            except (OSError, yaml.YAMLError) as error:
                expected_error = str(error)
            completed = subprocess.run(
                [kubectl, "kustomize", str(directory)],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            if completed.returncode != 0:
                message = completed.stderr.strip() or f"exit status {completed.returncode}"
                renders.append(Render(original, [], message, expected, expected_error))
                continue
            try:
                documents = parse_documents(completed.stdout)
            except yaml.YAMLError as error:
                renders.append(Render(original, [], f"output is not valid YAML: {error}", expected, expected_error))
                continue
            label = f"render of {original}"
            objects = [Manifest(document, label) for document in documents if isinstance(document, dict)]
            renders.append(Render(original, objects, None, expected, expected_error))
    return renders
