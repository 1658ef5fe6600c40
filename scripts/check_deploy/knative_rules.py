"""Checks of the Knative objects against each other and against what the functions need."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from .manifests import Manifest
from .report import Report

SERVING = "serving.knative.dev"

# Event types and the function that emits each, used when events/schemas/ is
# missing; otherwise the catalogue there is the list.
DEFAULT_EVENT_TYPES = {
    "dev.audioalchemist.video.uploaded.v1": "upload",
    "dev.audioalchemist.audio.converted.v1": "convert",
    "dev.audioalchemist.conversion.failed.v1": "convert",
}

# Event types that are emitted but deliberately routed to no Trigger, with the
# reason. docs/deploy.md lists the same. The chain ends at notify, which emits
# nothing, so today no type is final.
FINAL_EVENT_TYPES: dict[str, str] = {}

# Functions that publish events themselves (not as replies) and so need
# K_SINK from a SinkBinding.
PUBLISHERS = {"upload"}

# The variables each function reads: those in "secret" must come from a
# Secret (secretKeyRef), and a function gets no secret it does not read.
FUNCTION_ENV = {
    "login": {
        "secret": {"DATABASE_URL", "JWT_SECRET"},
        "config": {"JWT_ISSUER", "JWT_AUDIENCE", "JWT_TTL_SECONDS", "RUST_LOG"},
    },
    "upload": {
        "secret": {"DATABASE_URL", "MONGODB_URL", "JWT_SECRET"},
        "config": {"JWT_ISSUER", "JWT_AUDIENCE", "MAX_UPLOAD_BYTES", "RUST_LOG"},
    },
    "convert": {
        "secret": {"DATABASE_URL", "MONGODB_URL"},
        "config": {"CONVERT_TIMEOUT_SECONDS", "RUST_LOG"},
    },
    "notify": {
        "secret": {"DATABASE_URL", "WEBHOOK_SECRET"},
        "config": {"WEBHOOK_ALLOW_PRIVATE", "WEBHOOK_TIMEOUT_SECONDS", "RUST_LOG"},
    },
}

# CronJobs that do a scaled-to-zero function's background work: the job's
# name, the function whose image it runs, the argument that selects one pass
# of that work, and the secrets it must get. A job gets no other secret.
BACKGROUND_JOBS = {
    "upload-relay": {"function": "upload", "args": ["relay"], "secret": {"DATABASE_URL"}},
    "notify-retry": {"function": "notify", "args": ["retry"], "secret": {"DATABASE_URL", "WEBHOOK_SECRET"}},
}

# Background jobs that publish events and so need K_SINK from a SinkBinding.
PUBLISHING_JOBS = {"upload-relay"}

# Variables that Knative Serving sets in every revision (PORT and the K_
# names) or that the SinkBinding injects (K_SINK, K_CE_OVERRIDES). A manifest
# must not set them.
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION", "K_SINK", "K_CE_OVERRIDES"}

CONVERT_TIMEOUT_DEFAULT = 600
# Time a conversion request needs beyond the ffmpeg run: reading the video
# from GridFS, storing the MP3 and a cold start.
CONVERT_TIMEOUT_MARGIN_SECONDS = 120

PARALLELISM_ANNOTATION = "rabbitmq.eventing.knative.dev/parallelism"
BROKER_CLASS_ANNOTATION = "eventing.knative.dev/broker.class"
PLACEHOLDER = "REPLACE_ME"


def load_event_types(root: Path) -> tuple[dict[str, str | None], str]:
    """Return the catalogue's event types and where the list came from."""
    schema_dir = root / "events" / "schemas"
    files = sorted(schema_dir.glob("*.json")) if schema_dir.is_dir() else []
    if not files:
        return dict(DEFAULT_EVENT_TYPES), "the built-in list (events/schemas/ has no schemas)"
    return {path.stem: DEFAULT_EVENT_TYPES.get(path.stem) for path in files}, "events/schemas/"


class Objects:
    """Lookup of the objects of one kustomization by kind and name."""

    def __init__(self, manifests: list[Manifest]) -> None:
        self.manifests = manifests

    def of_kind(self, kind: str, group: str | None = None) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind and (group is None or m.group == group)]

    def find(self, kind: str, name: str, group: str | None = None) -> Manifest | None:
        for manifest in self.of_kind(kind, group):
            if manifest.name == name:
                return manifest
        return None

    def services(self) -> list[Manifest]:
        return self.of_kind("Service", SERVING)

    def config_data(self, kind: str, name: str) -> dict[str, str] | None:
        manifest = self.find(kind, name, "")
        if manifest is None:
            return None
        return object_data(manifest)


def object_data(manifest: Manifest) -> dict[str, str]:
    """Return a ConfigMap's or Secret's entries as text, with a Secret's base64 data decoded."""
    data: dict[str, str] = {}
    for key, value in (manifest.obj.get("data") or {}).items():
        if manifest.kind == "Secret":
            try:
                value = base64.b64decode(str(value), validate=True).decode("utf-8", errors="replace")
            except binascii.Error:
                value = f"(invalid base64: {value!r})"
        data[key] = str(value)
    data.update({key: str(value) for key, value in (manifest.obj.get("stringData") or {}).items()})
    return data


def dig(obj: Any, *keys: Any, default: Any = None) -> Any:
    for key in keys:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def annotation(manifest: Manifest, key: str) -> Any:
    return dig(manifest.obj, "spec", "template", "metadata", "annotations", key)


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    return dig(manifest.obj, "spec", "template", "spec", default={}) or {}


def first_container(manifest: Manifest) -> dict[str, Any]:
    return dig(pod_spec(manifest), "containers", 0, default={}) or {}


def as_int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def ref_target(objects: Objects, ref: dict[str, Any]) -> Manifest | None:
    group = str(ref.get("apiVersion", "")).rpartition("/")[0]
    return objects.find(str(ref.get("kind", "")), str(ref.get("name", "")), group)


def check_triggers(objects: Objects, where: str, event_types: dict[str, str | None], report: Report) -> None:
    """Check that each Trigger names an existing Broker, subscriber and dead-letter sink, and a catalogued type."""
    for trigger in objects.of_kind("Trigger"):
        problems = []
        broker = dig(trigger.obj, "spec", "broker")
        if objects.find("Broker", str(broker)) is None:
            problems.append(f"spec.broker {broker!r} is not a Broker in {where}")
        subscriber = dig(trigger.obj, "spec", "subscriber", default={}) or {}
        if "ref" in subscriber:
            if ref_target(objects, subscriber["ref"]) is None:
                problems.append(f"spec.subscriber.ref {describe(subscriber['ref'])} is not an object in {where}")
        elif not subscriber.get("uri"):
            problems.append("spec.subscriber has neither ref nor uri")
        dead_letter = dig(trigger.obj, "spec", "delivery", "deadLetterSink", default=None)
        if dead_letter is None:
            problems.append("spec.delivery.deadLetterSink is missing, so undeliverable events are dropped")
        elif "ref" in dead_letter and ref_target(objects, dead_letter["ref"]) is None:
            problems.append(f"spec.delivery.deadLetterSink.ref {describe(dead_letter['ref'])} is not an object in {where}")
        event_type = dig(trigger.obj, "spec", "filter", "attributes", "type")
        if event_type is None:
            problems.append("spec.filter.attributes.type is missing, so the Trigger receives every event")
        elif event_type not in event_types:
            problems.append(f"filter type {event_type!r} is not in the event catalogue")
        report.result(f"trigger refs [{where}] {trigger.label()}", problems)


def describe(ref: dict[str, Any]) -> str:
    return f"{ref.get('kind')}/{ref.get('name')} ({ref.get('apiVersion')})"


def check_event_routing(objects: Objects, where: str, event_types: dict[str, str | None], report: Report) -> None:
    """Check that every catalogued event type has a Trigger or is listed in FINAL_EVENT_TYPES."""
    routed = {dig(t.obj, "spec", "filter", "attributes", "type") for t in objects.of_kind("Trigger")}
    for event_type in sorted(event_types):
        problems = []
        if event_type not in routed and event_type not in FINAL_EVENT_TYPES:
            problems.append(
                f"no Trigger filters on {event_type}; add one, or list the type in FINAL_EVENT_TYPES "
                "(scripts/check_deploy/knative_rules.py) and docs/deploy.md"
            )
        if event_type in routed and event_type in FINAL_EVENT_TYPES:
            problems.append(f"{event_type} is listed as final but a Trigger routes it")
        report.result(f"event routing [{where}] {event_type}", problems)


def check_broker(objects: Objects, where: str, report: Report) -> None:
    """Check that each Broker is a RabbitMQ Broker configured by an existing RabbitmqBrokerConfig."""
    brokers = objects.of_kind("Broker")
    if not brokers:
        report.result(f"broker [{where}]", [f"{where} has no Broker"])
    for broker in brokers:
        problems = []
        broker_class = dig(broker.obj, "metadata", "annotations", BROKER_CLASS_ANNOTATION)
        if broker_class != "RabbitMQBroker":
            problems.append(f"annotation {BROKER_CLASS_ANNOTATION} is {broker_class!r}; expected 'RabbitMQBroker'")
        config = dig(broker.obj, "spec", "config", default={}) or {}
        if config.get("kind") != "RabbitmqBrokerConfig":
            problems.append(f"spec.config.kind is {config.get('kind')!r}; expected 'RabbitmqBrokerConfig'")
        elif ref_target(objects, config) is None:
            problems.append(f"spec.config {describe(config)} is not an object in {where}")
        report.result(f"broker [{where}] {broker.label()}", problems)


def check_sink_bindings(objects: Objects, where: str, report: Report) -> None:
    """Check that each publishing function is the subject of a SinkBinding whose sink is the Triggers' Broker."""
    trigger_brokers = {dig(t.obj, "spec", "broker") for t in objects.of_kind("Trigger")}
    for publisher in sorted(PUBLISHERS):
        problems = []
        bindings = [
            binding
            for binding in objects.of_kind("SinkBinding")
            if dig(binding.obj, "spec", "subject", "kind") == "Service"
            and dig(binding.obj, "spec", "subject", "name") == publisher
            and str(dig(binding.obj, "spec", "subject", "apiVersion", default="")).startswith(SERVING)
        ]
        if objects.find("Service", publisher, SERVING) is None:
            problems.append(f"{where} has no Knative Service {publisher}")
        if not bindings:
            problems.append(f"no SinkBinding has the Knative Service {publisher} as subject, so it gets no K_SINK")
        for binding in bindings:
            sink = dig(binding.obj, "spec", "sink", "ref", default={}) or {}
            target = ref_target(objects, sink)
            if target is None or target.kind != "Broker":
                problems.append(f"{binding.label()} sinks to {describe(sink)}, which is not a Broker in {where}")
            elif target.name not in trigger_brokers:
                problems.append(f"{binding.label()} sinks to Broker {target.name}, which no Trigger reads from")
        report.result(f"sinkbinding [{where}] {publisher}", problems)


def check_service_shape(objects: Objects, where: str, report: Report) -> None:
    """Check the scale, concurrency, timeout, resources, probes and security context of each Knative Service."""
    for service in objects.services():
        problems: list[str] = []
        spec = pod_spec(service)
        containers = spec.get("containers") or []
        if len(containers) != 1:
            problems.append(f"has {len(containers)} containers; each function runs in exactly one")
        container = first_container(service)

        if str(annotation(service, "autoscaling.knative.dev/min-scale")) != "0":
            problems.append("autoscaling.knative.dev/min-scale must be \"0\" so the function scales to zero")
        max_scale = as_int(annotation(service, "autoscaling.knative.dev/max-scale"))
        if max_scale is None or max_scale < 1:
            problems.append("autoscaling.knative.dev/max-scale must be set to a positive number (a bound)")
        concurrency = spec.get("containerConcurrency")
        if not isinstance(concurrency, int) or concurrency < 1:
            problems.append("containerConcurrency must be a positive number (a bound per pod)")
        if not isinstance(spec.get("timeoutSeconds"), int):
            problems.append("timeoutSeconds must be set")

        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(section) or {}):
                    problems.append(f"resources.{section}.{resource} is missing")

        problems += probe_problems(container, "livenessProbe", "/healthz")
        problems += probe_problems(container, "readinessProbe", "/readyz")
        problems += security_problems(service, container, spec)

        for variable in container.get("env") or []:
            if variable.get("name") in RESERVED_ENV:
                problems.append(f"env sets {variable.get('name')}, which Knative or the SinkBinding sets")
        report.result(f"service shape [{where}] {service.label()}", problems)


def probe_problems(container: dict[str, Any], probe_name: str, path: str) -> list[str]:
    probe = container.get(probe_name)
    if not isinstance(probe, dict):
        return [f"{probe_name} is missing"]
    problems = []
    if dig(probe, "httpGet", "path") != path:
        problems.append(f"{probe_name}.httpGet.path must be {path}")
    port = dig(probe, "httpGet", "port")
    container_port = dig(container, "ports", 0, "containerPort")
    if port is not None and port != container_port:
        problems.append(f"{probe_name}.httpGet.port {port} differs from containerPort {container_port}")
    return problems


def security_problems(service: Manifest, container: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    context = container.get("securityContext") or {}
    problems = []
    if context.get("runAsNonRoot") is not True:
        problems.append("securityContext.runAsNonRoot must be true")
    if context.get("runAsUser") == 0:
        problems.append("securityContext.runAsUser must not be 0")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in (dig(context, "capabilities", "drop", default=[]) or []):
        problems.append("securityContext.capabilities.drop must contain ALL")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("securityContext.readOnlyRootFilesystem must be true")
    if service.name == "convert" and not tmp_is_empty_dir(container, spec):
        problems.append("/tmp must be an emptyDir volume, because ffmpeg needs scratch space on a read-only root")
    return problems


def tmp_is_empty_dir(container: dict[str, Any], spec: dict[str, Any]) -> bool:
    volumes = {volume.get("name"): volume for volume in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if mount.get("mountPath") == "/tmp" and "emptyDir" in volumes.get(mount.get("name"), {}):
            return True
    return False


def check_service_env(objects: Objects, where: str, resolve_refs: bool, report: Report) -> None:
    """Check that each function gets the variables it reads, secrets only from Secrets, and no other secret.

    With `resolve_refs`, every referenced ConfigMap, Secret and key must also
    exist among the objects (true for rendered output, where generated names
    carry their hash).
    """
    for function, required in FUNCTION_ENV.items():
        name = f"service env [{where}] Service/{function}"
        service = objects.find("Service", function, SERVING)
        if service is None:
            report.result(name, [f"{where} has no Knative Service {function}"])
            continue
        problems = []
        sources: dict[str, str] = {}
        for variable in first_container(service).get("env") or []:
            variable_name = variable.get("name")
            secret_ref = dig(variable, "valueFrom", "secretKeyRef")
            config_ref = dig(variable, "valueFrom", "configMapKeyRef")
            if secret_ref:
                sources[variable_name] = "secret"
                if variable_name not in required["secret"]:
                    problems.append(f"gets the secret {variable_name}, which {function} does not read")
                problems += missing_key(objects, "Secret", secret_ref, resolve_refs)
            elif config_ref:
                sources[variable_name] = "config"
                problems += missing_key(objects, "ConfigMap", config_ref, resolve_refs)
            else:
                sources[variable_name] = "value"
        for variable_name in sorted(required["secret"]):
            if variable_name not in sources:
                problems.append(f"{variable_name} is not set")
            elif sources[variable_name] != "secret":
                problems.append(f"{variable_name} must come from a Secret (secretKeyRef)")
        for variable_name in sorted(required["config"] - sources.keys()):
            problems.append(f"{variable_name} is not set")
        if first_container(service).get("envFrom"):
            problems.append("envFrom passes every key of a ConfigMap or Secret; name each variable instead")
        report.result(name, problems)


def missing_key(objects: Objects, kind: str, ref: dict[str, Any], resolve_refs: bool) -> list[str]:
    if not resolve_refs or ref.get("optional"):
        return []
    data = objects.config_data(kind, str(ref.get("name")))
    if data is None:
        return [f"{kind} {ref.get('name')!r} is not an object in this kustomization"]
    if ref.get("key") not in data:
        return [f"{kind} {ref.get('name')!r} has no key {ref.get('key')!r}"]
    return []


def env_value(objects: Objects, service: Manifest, variable_name: str) -> str | None:
    for variable in first_container(service).get("env") or []:
        if variable.get("name") != variable_name:
            continue
        if "value" in variable:
            return str(variable["value"])
        ref = dig(variable, "valueFrom", "configMapKeyRef") or dig(variable, "valueFrom", "secretKeyRef")
        kind = "ConfigMap" if dig(variable, "valueFrom", "configMapKeyRef") else "Secret"
        data = objects.config_data(kind, str((ref or {}).get("name"))) or {}
        return data.get((ref or {}).get("key"))
    return None


def check_convert(objects: Objects, where: str, report: Report) -> None:
    """Check that convert runs one conversion per pod and that its timeouts exceed the ffmpeg limit."""
    convert = objects.find("Service", "convert", SERVING)
    if convert is None:
        report.result(f"convert concurrency [{where}]", [f"{where} has no Knative Service convert"])
        return
    spec = pod_spec(convert)
    concurrency = spec.get("containerConcurrency")
    report.result(
        f"convert concurrency [{where}]",
        [] if concurrency == 1 else [f"containerConcurrency is {concurrency!r}; convert runs one ffmpeg per pod (1)"],
    )

    limit_text = env_value(objects, convert, "CONVERT_TIMEOUT_SECONDS")
    limit = as_int(limit_text) if limit_text is not None else CONVERT_TIMEOUT_DEFAULT
    problems = []
    if limit is None:
        problems.append(f"CONVERT_TIMEOUT_SECONDS is {limit_text!r}, not a number of seconds")
    else:
        needed = limit + CONVERT_TIMEOUT_MARGIN_SECONDS
        for field_name in ("timeoutSeconds", "responseStartTimeoutSeconds"):
            value = spec.get(field_name)
            if value is None and field_name == "responseStartTimeoutSeconds":
                continue
            if not isinstance(value, int) or value < needed:
                problems.append(
                    f"{field_name} is {value!r}; it must be at least CONVERT_TIMEOUT_SECONDS ({limit}) + "
                    f"{CONVERT_TIMEOUT_MARGIN_SECONDS} s = {needed}, or Knative cuts off conversions ffmpeg may finish"
                )
    report.result(f"convert timeout [{where}]", problems)


def check_parallelism(objects: Objects, where: str, report: Report) -> None:
    """Check that the dispatchers feeding a Service send as many events at once as it takes.

    A Service takes max-scale times containerConcurrency requests at once. Its
    dispatchers send the sum of their Triggers' parallelism annotations, and
    one each for Triggers without the annotation. A lower sum leaves pods idle
    while events wait in RabbitMQ. A higher one makes requests queue in
    Knative's activator, where they count against the subscriber's timeout and
    the dispatcher's. Services whose Triggers set no annotation keep the
    default of one event at a time and are not compared, except convert,
    which must set it.
    """
    by_subscriber: dict[str, list[Manifest]] = {}
    for trigger in objects.of_kind("Trigger"):
        subscriber_ref = dig(trigger.obj, "spec", "subscriber", "ref", default={}) or {}
        subscriber = ref_target(objects, subscriber_ref)
        if subscriber is not None and subscriber.kind == "Service" and subscriber.group == SERVING:
            by_subscriber.setdefault(subscriber.name, []).append(trigger)

    for name in sorted(set(by_subscriber) | {"convert"}):
        triggers = by_subscriber.get(name, [])
        annotated = [t for t in triggers if PARALLELISM_ANNOTATION in (dig(t.obj, "metadata", "annotations") or {})]
        if not annotated and name != "convert":
            continue
        problems = []
        if not annotated:
            problems.append(f"no Trigger to convert sets {PARALLELISM_ANNOTATION}, so its dispatcher sends one event at a time")
        total = 0
        for trigger in triggers:
            text = dig(trigger.obj, "metadata", "annotations", PARALLELISM_ANNOTATION, default="1")
            parallelism = as_int(text)
            if parallelism is None or parallelism < 1:
                problems.append(f"{trigger.label()}: {PARALLELISM_ANNOTATION} is {text!r}, not a positive number")
            else:
                total += parallelism
        service = objects.find("Service", name, SERVING)
        max_scale = as_int(annotation(service, "autoscaling.knative.dev/max-scale")) if service else None
        concurrency = pod_spec(service).get("containerConcurrency") if service else None
        if max_scale is None or not isinstance(concurrency, int) or concurrency < 1:
            problems.append(f"Service/{name} needs max-scale and containerConcurrency to compare with")
        elif annotated and total != max_scale * concurrency:
            sources = ", ".join(
                f"{t.label()} {dig(t.obj, 'metadata', 'annotations', PARALLELISM_ANNOTATION, default='1 (default)')}"
                for t in triggers
            )
            problems.append(
                f"the dispatchers send {total} events at once ({sources}) but Service/{name} takes max-scale "
                f"{max_scale} x containerConcurrency {concurrency} = {max_scale * concurrency}; change them together"
            )
        report.result(f"trigger parallelism [{where}] Service/{name}", problems)


def check_secret_placeholders(objects: Objects, where: str, report: Report) -> None:
    """Check that the base's Secrets contain placeholders only, never a real value."""
    for secret in objects.of_kind("Secret", ""):
        problems = []
        for key, value in sorted(object_data(secret).items()):
            if PLACEHOLDER not in str(value):
                problems.append(f"key {key} holds a value without {PLACEHOLDER}; templates hold no real secret")
        report.result(f"secret placeholders [{where}] {secret.label()}", problems)


def check_example_env_files(knative_dir: Path, tracked: set[str] | None, report: Report) -> None:
    """Check that example env files contain placeholders for every credential and that git does not track the real ones."""
    root = knative_dir.parent
    for example in sorted(knative_dir.rglob("*.env.example")):
        problems = []
        for number, line in enumerate(example.read_text(encoding="utf-8").splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            key, _, value = stripped.partition("=")
            sensitive = any(marker in key for marker in ("PASSWORD", "SECRET", "_URL", "TOKEN"))
            if sensitive and PLACEHOLDER not in value:
                problems.append(f"line {number}: {key} holds a value without {PLACEHOLDER}")
        real = example.with_suffix("")
        relative_real = str(real.relative_to(root))
        if tracked is not None and relative_real in tracked:
            problems.append(f"{relative_real} is tracked by git; it holds real secrets, remove it from the index")
        report.result(f"example env [{example.relative_to(root)}]", problems)


def check_background_jobs(objects: Objects, where: str, resolve_refs: bool, report: Report) -> None:
    """Check the CronJobs that relay events and retry webhooks while their functions are scaled to zero.

    Each runs its function's image, the same reference as the function's
    Service, so that an overlay's image rewrite reaches both. It passes the
    argument of its one-pass command, never runs twice at once, runs as a
    non-root user, and gets the secrets it reads and no other. The relay also
    needs K_SINK.
    """
    trigger_brokers = {dig(t.obj, "spec", "broker") for t in objects.of_kind("Trigger")}
    for job_name, expected in BACKGROUND_JOBS.items():
        name = f"background job [{where}] CronJob/{job_name}"
        job = objects.find("CronJob", job_name, "batch")
        if job is None:
            report.result(name, [f"{where} has no CronJob {job_name}"])
            continue
        problems: list[str] = []
        spec = dig(job.obj, "spec", "jobTemplate", "spec", "template", "spec", default={}) or {}
        containers = spec.get("containers") or []
        if len(containers) != 1:
            problems.append(f"has {len(containers)} containers; a background job runs exactly one")
        container = containers[0] if containers else {}
        service = objects.find("Service", expected["function"], SERVING)
        service_image = first_container(service).get("image") if service else None
        if service_image is None or container.get("image") != service_image:
            problems.append(f"runs {container.get('image')!r}; it must run the {expected['function']} Service's image {service_image!r}")
        if container.get("args") != expected["args"] or container.get("command"):
            problems.append(f"must keep the image's entrypoint and pass args {expected['args']}")
        if dig(job.obj, "spec", "concurrencyPolicy") != "Forbid":
            problems.append("spec.concurrencyPolicy must be Forbid, so a slow pass never overlaps the next")
        if dig(spec, "securityContext", "runAsNonRoot") is not True and dig(container, "securityContext", "runAsNonRoot") is not True:
            problems.append("securityContext.runAsNonRoot must be true")
        secrets = set()
        for variable in container.get("env") or []:
            secret_ref = dig(variable, "valueFrom", "secretKeyRef")
            if secret_ref:
                secrets.add(variable.get("name"))
                problems += missing_key(objects, "Secret", secret_ref, resolve_refs)
            elif dig(variable, "valueFrom", "configMapKeyRef"):
                problems += missing_key(objects, "ConfigMap", dig(variable, "valueFrom", "configMapKeyRef"), resolve_refs)
            if variable.get("name") in RESERVED_ENV:
                problems.append(f"env sets {variable.get('name')}, which the SinkBinding sets")
        for missing in sorted(expected["secret"] - secrets):
            problems.append(f"{missing} is not set from a Secret (secretKeyRef)")
        for extra in sorted(secrets - expected["secret"]):
            problems.append(f"gets the secret {extra}, which the {expected['args'][0]} command does not read")
        if job_name in PUBLISHING_JOBS:
            # A CronJob has no pod template to bind: the binding must select
            # the Jobs it creates, by labels that its jobTemplate carries.
            job_labels = dig(job.obj, "spec", "jobTemplate", "metadata", "labels", default={}) or {}
            bindings = [
                binding
                for binding in objects.of_kind("SinkBinding")
                if dig(binding.obj, "spec", "subject", "kind") == "Job"
                and selects(dig(binding.obj, "spec", "subject", "selector", "matchLabels", default={}) or {}, job_labels)
            ]
            targets = [ref_target(objects, dig(b.obj, "spec", "sink", "ref", default={}) or {}) for b in bindings]
            if not any(t is not None and t.kind == "Broker" and t.name in trigger_brokers for t in targets):
                problems.append("no SinkBinding gives it the Triggers' Broker as K_SINK")
        report.result(name, problems)


def selects(match_labels: dict[str, Any], labels: dict[str, Any]) -> bool:
    """Return whether a label selector with `match_labels` (not empty) selects an object with `labels`."""
    return bool(match_labels) and all(labels.get(key) == value for key, value in match_labels.items())


def run_all(objects: Objects, where: str, event_types: dict[str, str | None], resolve_refs: bool, is_base: bool, report: Report) -> None:
    check_triggers(objects, where, event_types, report)
    check_event_routing(objects, where, event_types, report)
    check_broker(objects, where, report)
    check_sink_bindings(objects, where, report)
    check_service_shape(objects, where, report)
    check_service_env(objects, where, resolve_refs, report)
    check_convert(objects, where, report)
    check_parallelism(objects, where, report)
    check_background_jobs(objects, where, resolve_refs, report)
    if is_base:
        check_secret_placeholders(objects, where, report)
