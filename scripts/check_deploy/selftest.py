"""Shows that each check can fail: breaks a copy of the files one way at a time.

Each case copies the deployment files into a temporary folder, applies one
mistake, runs every check on the copy and expects a check whose name starts
with the case's prefix to fail. Before the cases, the unbroken copy must pass
every check, so a case cannot pass because of an unrelated failure.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cargo
from .docker_rules import FUNCTIONS
from .report import Report

COPIED = (
    "Dockerfile",
    ".dockerignore",
    "Cargo.toml",
    "Cargo.lock",
    "scripts/images",
    "scripts/check-deploy",
    "knative",
    "events",
    "functions",
)


class MutationError(Exception):
    """A case's edit did not apply, because the text it changes is gone."""


def replace(root: Path, relative: str, old: str, new: str, after: str | None = None) -> None:
    """Replace the first `old` in a file, or the first one after the text `after`."""
    path = root / relative
    text = path.read_text(encoding="utf-8")
    start = 0
    if after is not None:
        start = text.find(after)
        if start == -1:
            raise MutationError(f"{relative} no longer contains {after!r}")
    index = text.find(old, start)
    if index == -1:
        raise MutationError(f"{relative} no longer contains {old!r}")
    path.write_text(text[:index] + new + text[index + len(old) :], encoding="utf-8")


def remove_block(root: Path, relative: str, first_line: str, after: str | None = None) -> None:
    """Remove the YAML block that starts with `first_line` (its more-indented lines included)."""
    path = root / relative
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start_at = 0
    if after is not None:
        start_at = next((i for i, line in enumerate(lines) if after in line), -1)
        if start_at == -1:
            raise MutationError(f"{relative} no longer contains {after!r}")
    start = next((i for i in range(start_at, len(lines)) if lines[i].rstrip("\n") == first_line), -1)
    if start == -1:
        raise MutationError(f"{relative} no longer contains the line {first_line!r}")
    indent = len(first_line) - len(first_line.lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    path.write_text("".join(lines[:start] + lines[end:]), encoding="utf-8")


@dataclass
class Case:
    """One deliberate mistake and the check that must catch it."""

    description: str
    expected: str
    mutate: Callable[[Path], None]
    ci: bool = True
    crds_missing: bool = False
    expect_skip: bool = False


BASE = "knative/base"
OVERLAY = "knative/overlays/example"


def cases() -> list[Case]:
    return [
        # YAML, schemas and kustomize
        Case("repeated key in a manifest", f"yaml [{BASE}/convert.yaml]",
             lambda r: replace(r, f"{BASE}/convert.yaml", "timeoutSeconds: 900\n", "timeoutSeconds: 900\n      timeoutSeconds: 901\n")),
        Case("misspelt field in a Knative Service", f"schema [{BASE}/convert.yaml] Service/convert",
             lambda r: replace(r, f"{BASE}/convert.yaml", "containerConcurrency: 1", "containerConcurency: 1")),
        Case("misspelt metadata field", f"schema [{BASE}/broker.yaml] Broker/alchemist",
             lambda r: replace(r, f"{BASE}/broker.yaml", "  annotations:\n", "  annotation:\n")),
        Case("wrong type in a core object", f"schema [{OVERLAY}/datastores.yaml] StatefulSet/mysql",
             lambda r: replace(r, f"{OVERLAY}/datastores.yaml", "  replicas: 1", "  replicas: one")),
        Case("manifest left out of the kustomization", "kustomize files",
             lambda r: replace(r, f"{BASE}/kustomization.yaml", "  - sinkbinding.yaml\n", "")),
        Case("kustomization names a missing file", f"render [{BASE}]",
             lambda r: replace(r, f"{BASE}/kustomization.yaml", "  - sinkbinding.yaml\n", "  - sinkbinding.yaml\n  - missing.yaml\n")),
        Case("overlay patch deletes an object", f"render contents [{OVERLAY}]",
             lambda r: replace(r, f"{OVERLAY}/kustomization.yaml", "images:\n",
                               "patches:\n  - target:\n      kind: SinkBinding\n    patch: |-\n"
                               "      $patch: delete\n      apiVersion: sources.knative.dev/v1\n"
                               "      kind: SinkBinding\n      metadata:\n        name: upload-to-broker\n\nimages:\n")),
        Case("ConfigMap names not rewritten in Knative Services", f"service env [{BASE}] Service/login",
             lambda r: replace(r, f"{BASE}/kustomization.yaml", "configurations:\n  - kustomizeconfig.yaml\n", "")),
        # Triggers and events
        Case("Trigger subscriber names no Service", f"trigger refs [{BASE}] Trigger/convert-on-video-uploaded",
             lambda r: replace(r, f"{BASE}/triggers.yaml", "      name: convert\n", "      name: converter\n")),
        Case("dead-letter sink names no Service", f"trigger refs [{BASE}] Trigger/notify-on-audio-converted",
             lambda r: replace(r, f"{BASE}/triggers.yaml", "        name: convert\n", "        name: converts\n", after="notify-on-audio-converted")),
        Case("Trigger filters on an unknown type", f"trigger refs [{BASE}] Trigger/convert-on-video-uploaded",
             lambda r: replace(r, f"{BASE}/triggers.yaml", "dev.audioalchemist.video.uploaded.v1", "dev.audioalchemist.video.upload.v1")),
        Case("catalogued type without a Trigger", f"event routing [{BASE}] dev.audioalchemist.video.deleted.v1",
             lambda r: (r / "events/schemas/dev.audioalchemist.video.deleted.v1.json").write_text("{}\n", encoding="utf-8")),
        Case("Broker of another class", f"broker [{BASE}] Broker/alchemist",
             lambda r: replace(r, f"{BASE}/broker.yaml", "broker.class: RabbitMQBroker", "broker.class: MTChannelBasedBroker")),
        Case("SinkBinding bound to another Service", f"sinkbinding [{BASE}] upload",
             lambda r: replace(r, f"{BASE}/sinkbinding.yaml", "    name: upload\n", "    name: login\n")),
        # Scale, concurrency and timeouts
        Case("convert max-scale differs from the Trigger's parallelism",
             f"trigger parallelism [{BASE}] Service/convert",
             lambda r: replace(r, f"{BASE}/convert.yaml", 'max-scale: "4"', 'max-scale: "5"')),
        Case("notify Triggers send more than notify takes", f"trigger parallelism [{BASE}] Service/notify",
             lambda r: replace(r, f"{BASE}/triggers.yaml", "  name: notify-on-audio-converted\n",
                               "  name: notify-on-audio-converted\n  annotations:\n"
                               "    rabbitmq.eventing.knative.dev/parallelism: \"20\"\n")),
        Case("convert takes two requests per pod", f"convert concurrency [{BASE}]",
             lambda r: replace(r, f"{BASE}/convert.yaml", "containerConcurrency: 1", "containerConcurrency: 2")),
        Case("convert timeout below ffmpeg's limit", f"convert timeout [{BASE}]",
             lambda r: replace(r, f"{BASE}/convert.yaml", "      timeoutSeconds: 900\n", "      timeoutSeconds: 600\n")),
        Case("ffmpeg limit raised without the timeout", f"convert timeout [{BASE}]",
             lambda r: replace(r, f"{BASE}/config.env", "CONVERT_TIMEOUT_SECONDS=600", "CONVERT_TIMEOUT_SECONDS=850")),
        Case("function kept warm", f"service shape [{BASE}] Service/login",
             lambda r: replace(r, f"{BASE}/login.yaml", 'min-scale: "0"', 'min-scale: "1"')),
        Case("readiness probe missing", f"service shape [{BASE}] Service/notify",
             lambda r: remove_block(r, f"{BASE}/notify.yaml", "          readinessProbe:")),
        Case("container may run as root", f"service shape [{BASE}] Service/upload",
             lambda r: replace(r, f"{BASE}/upload.yaml", "runAsNonRoot: true", "runAsNonRoot: false")),
        Case("convert without a writable /tmp", f"service shape [{BASE}] Service/convert",
             lambda r: replace(r, f"{BASE}/convert.yaml", "mountPath: /tmp", "mountPath: /scratch")),
        Case("manifest sets PORT", f"service shape [{BASE}] Service/login",
             lambda r: replace(r, f"{BASE}/login.yaml", "          env:\n", '          env:\n            - name: PORT\n              value: "9000"\n')),
        # Background jobs
        Case("relay job runs another command", f"background job [{BASE}] CronJob/upload-relay",
             lambda r: replace(r, f"{BASE}/cronjobs.yaml", "                - relay\n", "                - serve\n")),
        Case("retry job runs another function's image", f"background job [{BASE}] CronJob/notify-retry",
             lambda r: replace(r, f"{BASE}/cronjobs.yaml", "image: audio-alchemist/notify", "image: audio-alchemist/upload")),
        Case("background passes may overlap", f"background job [{BASE}] CronJob/notify-retry",
             lambda r: replace(r, f"{BASE}/cronjobs.yaml", "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow", after="name: notify-retry")),
        Case("relay job without K_SINK", f"background job [{BASE}] CronJob/upload-relay",
             lambda r: replace(r, f"{BASE}/cronjobs.yaml", "        app.kubernetes.io/name: upload-relay\n  sink:",
                               "        app.kubernetes.io/name: upload-relays\n  sink:")),
        Case("relay binding aimed at the CronJob itself", f"background job [{BASE}] CronJob/upload-relay",
             lambda r: replace(r, f"{BASE}/cronjobs.yaml", "    kind: Job\n    selector:", "    kind: CronJob\n    selector:")),
        Case("relay job gets a secret it does not read", f"background job [{BASE}] CronJob/upload-relay",
             lambda r: replace(r, f"{BASE}/cronjobs.yaml", "                      key: DATABASE_URL\n",
                               "                      key: DATABASE_URL\n                - name: JWT_SECRET\n"
                               "                  valueFrom:\n                    secretKeyRef:\n"
                               "                      name: alchemist-secrets\n                      key: JWT_SECRET\n")),
        # Configuration and secrets
        Case("function gets a secret it does not read", f"service env [{BASE}] Service/notify",
             lambda r: replace(r, f"{BASE}/notify.yaml", "          env:\n",
                               "          env:\n            - name: JWT_SECRET\n              valueFrom:\n"
                               "                secretKeyRef:\n                  name: alchemist-secrets\n"
                               "                  key: JWT_SECRET\n")),
        Case("function misses a secret", f"service env [{BASE}] Service/login",
             lambda r: remove_block(r, f"{BASE}/login.yaml", "            - name: JWT_SECRET")),
        Case("secret given as a literal value", f"service env [{BASE}] Service/upload",
             lambda r: replace(r, f"{BASE}/upload.yaml",
                               "            - name: DATABASE_URL\n              valueFrom:\n                secretKeyRef:\n"
                               "                  name: alchemist-secrets\n                  key: DATABASE_URL\n",
                               "            - name: DATABASE_URL\n              value: mysql://REPLACE_ME\n")),
        Case("real value in the base Secret", f"secret placeholders [{BASE}]",
             lambda r: replace(r, f"{BASE}/secret-placeholders.env", "JWT_SECRET=REPLACE_ME", "JWT_SECRET=correct-horse-battery-staple-0123456789")),
        Case("real value in an example env file", f"example env [{OVERLAY}/secrets.env.example]",
             lambda r: replace(r, f"{OVERLAY}/secrets.env.example", "JWT_SECRET=REPLACE_ME", "JWT_SECRET=correct-horse-battery-staple")),
        Case("overlay keeps a base image name", f"overlay images [{OVERLAY}]",
             lambda r: remove_block(r, f"{OVERLAY}/kustomization.yaml", "  - name: audio-alchemist/convert")),
        # Dockerfile and scripts
        Case("Dockerfile copies a binary no crate builds", "dockerfile binaries",
             lambda r: replace(r, "Dockerfile", "release/alchemist-convert /usr", "release/alchemist-converter /usr")),
        Case("image runs another function's binary", "dockerfile entrypoint convert",
             lambda r: replace(r, "Dockerfile", 'ENTRYPOINT ["/usr/local/bin/alchemist-convert"]', 'ENTRYPOINT ["/usr/local/bin/alchemist-notify"]')),
        Case("image runs as root", "dockerfile user login",
             lambda r: replace(r, "Dockerfile", "USER 65532:65532", "USER 0", after="AS login")),
        Case("image user is a name", "dockerfile user notify",
             lambda r: replace(r, "Dockerfile", "USER 65532:65532", "USER nonroot", after="AS notify")),
        Case("convert image without ffmpeg", "dockerfile ffmpeg convert",
             lambda r: replace(r, "Dockerfile", "ffmpeg ca-certificates", "ca-certificates")),
        Case("upload image with ffmpeg", "dockerfile ffmpeg upload",
             lambda r: replace(r, "Dockerfile", "ENV PORT=8080", "RUN apt-get install -y --no-install-recommends ffmpeg\nENV PORT=8080", after="AS upload")),
        Case("image without PORT", "dockerfile port notify",
             lambda r: replace(r, "Dockerfile", "ENV PORT=8080\n", "", after="AS notify")),
        Case("image PORT differs from the containerPort", "dockerfile port upload",
             lambda r: replace(r, f"{BASE}/upload.yaml", "containerPort: 8080", "containerPort: 9090")),
        Case("function without an image stage", "dockerfile stage notify",
             lambda r: replace(r, "Dockerfile", "AS notify", "AS notifier")),
        Case("toolchain older than rust-version", "dockerfile rust-version",
             lambda r: replace(r, "Dockerfile", "ARG RUST_VERSION=1.95", "ARG RUST_VERSION=1.80")),
        Case("build context misses an embedded file", "dockerfile context",
             lambda r: replace(r, ".dockerignore", "!knative/base/triggers.yaml\n", "")),
        Case("build context takes in target/", "dockerfile context",
             lambda r: replace(r, ".dockerignore", "\n*\n", "\n")),
        Case("scripts/images misses a function", "scripts/images functions",
             lambda r: replace(r, "scripts/images", "FUNCTIONS=(login upload convert notify)", "FUNCTIONS=(login upload notify)")),
        Case("Dockerfile lint warning", "hadolint Dockerfile",
             lambda r: replace(r, "Dockerfile", "COPY --from=builder /src/target/release/alchemist-convert",
                               "RUN cd /tmp && echo scratch\nCOPY --from=builder /src/target/release/alchemist-convert")),
        Case("shell script lint warning", "shellcheck scripts/images",
             lambda r: replace(r, "scripts/images", 'built+=("$image")', 'built+=("$image")\n    echo $undefined_variable')),
        # Missing reference schemas
        Case("Knative CRDs missing in CI", "knative crds", lambda r: None, crds_missing=True),
        Case("Knative CRDs missing outside CI", "knative crds", lambda r: None, ci=False, crds_missing=True, expect_skip=True),
    ]


def make_fixture(source: Path, destination: Path) -> None:
    """Copy the deployment files and make sure the workspace has the function binaries.

    While the function crates are being written, the workspace may lack some
    of them. The fixture then adds stub crates that define the missing
    alchemist-NAME binaries, so that the Dockerfile checks start green.
    """
    for relative in COPIED:
        path = source / relative
        if path.is_dir():
            shutil.copytree(path, destination / relative, ignore=shutil.ignore_patterns("target"))
        elif path.is_file():
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / relative)
    for example in (destination / "knative").rglob("*.example"):
        real = example.with_suffix("")
        if real.exists():
            real.unlink()

    workspace = cargo.load_workspace(destination)
    members_text = []
    for function in FUNCTIONS:
        binary = f"alchemist-{function}"
        if workspace.bin_owner(binary) is not None:
            continue
        stub = destination / "functions" / f"selftest-stub-{function}"
        (stub / "src").mkdir(parents=True)
        (stub / "Cargo.toml").write_text(f'[package]\nname = "{binary}"\nversion = "0.0.0"\n', encoding="utf-8")
        (stub / "src" / "main.rs").write_text("fn main() {}\n", encoding="utf-8")
        members_text.append(f'"functions/selftest-stub-{function}"')
    healthy = [m for m in workspace.members if m.problem is None]
    if members_text or len(healthy) != len(workspace.members):
        manifest = destination / "Cargo.toml"
        kept_members = ", ".join(f'"{member.path}"' for member in healthy)
        listed = ", ".join(filter(None, [kept_members, *members_text]))
        text = re.sub(r"members\s*=\s*\[[^\]]*\]", f"members = [{listed}]", manifest.read_text(encoding="utf-8"), count=1)
        manifest.write_text(text, encoding="utf-8")


def run_case(source: Path, crds_dir: Path, kubernetes_version: str, case: Case | None) -> tuple[Report, str | None]:
    from .__main__ import run_checks

    with tempfile.TemporaryDirectory(prefix="check-deploy-selftest-") as scratch:
        root = Path(scratch) / "repo"
        root.mkdir()
        make_fixture(source, root)
        ci = True
        crds = crds_dir
        if case is not None:
            try:
                case.mutate(root)
            except MutationError as error:
                return Report(quiet=True), str(error)
            ci = case.ci
            if case.crds_missing:
                crds = Path(scratch) / "no-crds"
        report = Report(quiet=True)
        run_checks(root, crds, kubernetes_version, report, ci)
        return report, None


def run_self_test(source: Path, crds_dir: Path, kubernetes_version: str) -> int:
    passed = failed = 0
    started = time.monotonic()
    baseline, _ = run_case(source, crds_dir, kubernetes_version, None)
    baseline_failures = baseline.failed_names()
    if baseline_failures:
        print("FAIL unbroken copy passes every check")
        for outcome in baseline.outcomes:
            if outcome.status == "FAIL":
                print(f"    {outcome.name}: {'; '.join(outcome.details)}")
        print("0 passed, 1 failed")
        return 1
    print(f"PASS unbroken copy passes every check ({baseline.count('PASS')} checks)")

    for case in cases():
        report, mutation_error = run_case(source, crds_dir, kubernetes_version, case)
        if mutation_error is not None:
            print(f"FAIL {case.description}: the edit did not apply: {mutation_error}")
            failed += 1
            continue
        status = "SKIP" if case.expect_skip else "FAIL"
        matched = [o.name for o in report.outcomes if o.status == status and o.name.startswith(case.expected)]
        if matched:
            passed += 1
            print(f"PASS {case.description} -> {status} {matched[0]}")
        else:
            failed += 1
            others = ", ".join(report.failed_names()) or "none"
            print(f"FAIL {case.description}: expected {status} of a check starting with {case.expected!r}; failed: {others}")
        sys.stdout.flush()
    passed += 1
    print(f"self-test took {time.monotonic() - started:.0f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
