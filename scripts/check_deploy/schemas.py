"""Validation of objects against the Knative CRD schemas and the Kubernetes API schemas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kubernetes_schemas

from .manifests import Manifest, load_documents

# Kinds whose schema is neither a Knative CRD in the reference set nor part of
# the Kubernetes API, with the reason they are not validated.
UNVALIDATED_KINDS = {
    ("rabbitmq.com", "RabbitmqCluster"): "the RabbitMQ cluster operator's CRD is not in the reference set",
}

# The Kubernetes API groups that kubernetes-validate has schemas for. An
# object of any other group needs a CRD.
KUBERNETES_GROUPS = {
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
}

MAX_REPORTED_ERRORS = 8


def strict_schema(node: Any) -> Any:
    """Convert a CRD's structural OpenAPI v3 schema to JSON Schema that rejects unknown fields.

    The API server prunes, and `kubectl apply` with its default strict field
    validation rejects, any field the schema does not declare unless the node
    has x-kubernetes-preserve-unknown-fields. jsonschema allows extra fields by
    default, so each object node with declared properties gets
    additionalProperties: false. The Kubernetes extensions for int-or-string
    and nullable are turned into plain JSON Schema types.
    """
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node

    converted = {key: value for key, value in node.items()}
    if "properties" in converted:
        converted["properties"] = {name: strict_schema(child) for name, child in converted["properties"].items()}
    for key in ("items", "not"):
        if isinstance(converted.get(key), dict):
            converted[key] = strict_schema(converted[key])
    if isinstance(converted.get("additionalProperties"), dict):
        converted["additionalProperties"] = strict_schema(converted["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(converted.get(key), list):
            converted[key] = strict_schema(converted[key])

    if converted.get("x-kubernetes-int-or-string"):
        converted["type"] = ["integer", "string"]
    if converted.get("nullable") and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    preserves_unknown = converted.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in converted and "additionalProperties" not in converted and not preserves_unknown:
        converted["additionalProperties"] = False
    return converted


def with_root_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare apiVersion, kind and metadata, which every object may carry.

    Some CRD schemas (Broker, Trigger, SinkBinding) list only spec and status
    because the API server adds the root fields itself.
    """
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties.setdefault("metadata", {"type": "object"})
    return schema


class CrdSchemas:
    """The openAPIV3Schema of each served version of each CRD in a folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.versions: dict[tuple[str, str], list[str]] = {}
        for path in sorted(directory.glob("*.yaml")):
            for document in load_documents(path):
                if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
                    continue
                spec = document["spec"]
                group, kind = spec["group"], spec["names"]["kind"]
                for version in spec.get("versions", []):
                    schema = (version.get("schema") or {}).get("openAPIV3Schema")
                    if not version.get("served") or schema is None:
                        continue
                    self.schemas[(group, version["name"], kind)] = with_root_fields(strict_schema(schema))
                    self.versions.setdefault((group, kind), []).append(version["name"])

    def knows(self, group: str, kind: str) -> bool:
        return (group, kind) in self.versions

    def validate(self, manifest: Manifest) -> list[str]:
        group, _, version = manifest.api_version.rpartition("/")
        schema = self.schemas.get((group, version, manifest.kind))
        if schema is None:
            served = ", ".join(self.versions.get((group, manifest.kind), []))
            return [f"{manifest.api_version} is not a served version of {manifest.kind}; served: {served}"]
        return format_errors(jsonschema.Draft7Validator(schema).iter_errors(manifest.obj))


def format_errors(errors: Any) -> list[str]:
    ordered = sorted(errors, key=lambda error: [str(part) for part in error.absolute_path])
    messages = []
    for error in ordered[:MAX_REPORTED_ERRORS]:
        path = ".".join(str(part) for part in error.absolute_path) or "(object)"
        messages.append(f"{path}: {error.message}")
    if len(ordered) > MAX_REPORTED_ERRORS:
        messages.append(f"... and {len(ordered) - MAX_REPORTED_ERRORS} more")
    return messages


def validate_kubernetes(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Validate against kubernetes-validate's strict schemas (unknown fields rejected).

    kubernetes-validate stops at the first error, so at most one is returned.
    """
    try:
        kubernetes_schemas.validate(obj, kubernetes_version, strict=True)
    except kubernetes_schemas.SchemaNotFoundError as error:
        return [error.message]
    except kubernetes_schemas.ValidationError as error:
        path = ".".join(str(part) for part in error.path) or "(object)"
        return [f"{path}: {error.message}"]
    return []


def validate_metadata(manifest: Manifest, kubernetes_version: str) -> list[str]:
    """Validate metadata against the Kubernetes ObjectMeta schema.

    A CRD's schema declares metadata as a bare object, so the API server's
    own ObjectMeta rules apply. They are checked through a ConfigMap that
    carries the same metadata.
    """
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": copy.deepcopy(manifest.obj.get("metadata"))}
    return validate_kubernetes(carrier, kubernetes_version)
