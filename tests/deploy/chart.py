"""Render the chart with the real helm and read the manifests back (helpers for test_chart.py)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import yaml

from tests.support.tools import CHART, run, tool

# helm defaults to Kubernetes 1.20 when it renders offline; the chart needs >= 1.25.
KUBE_VERSION = "1.33.0"
SCENARIOS = sorted(path.name for path in (CHART / "ci").glob("*-values.yaml"))

Manifest = dict[str, Any]


def helm_template(*args: str) -> tuple[int, str, str]:
    done = run(
        tool("helm.sh"), "template", "tagstream", CHART, "--namespace", "crm", "--kube-version", KUBE_VERSION, *args
    )
    return done.returncode, done.stdout, done.stderr


@cache
def render(scenario: str, *sets: str) -> tuple[Manifest, ...]:
    """The manifests of one ci/ scenario (plus --set overrides); fails on a rendering error."""
    flags = [flag for value in sets for flag in ("--set", value)]
    code, out, err = helm_template("-f", str(CHART / "ci" / scenario), *flags)
    assert code == 0, f"helm template with ci/{scenario} {sets} failed:\n{err}"
    return tuple(document for document in yaml.safe_load_all(out) if document)


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: tuple[Manifest, ...], kind: str, component: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    assert len(found) == 1, f"expected one {kind} of {component}, found {len(found)}"
    return found[0]


def workloads(manifests: tuple[Manifest, ...]) -> Iterator[Manifest]:
    yield from (m for m in manifests if m["kind"] in {"Deployment", "StatefulSet", "Job"})


def containers(manifests: tuple[Manifest, ...]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for workload in workloads(manifests):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


def literal_env(container: dict[str, Any], secret_placeholder: str = "secret-from-kubernetes") -> dict[str, str]:
    """The container's environment, with values from Secrets replaced by a placeholder."""
    return {variable["name"]: variable.get("value", secret_placeholder) for variable in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
