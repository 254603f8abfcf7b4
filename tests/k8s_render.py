"""deploy/k8s rendered as `kustomize build` would, for tests/test_k8s.py, and lookups into the result.

The renderer does what `kustomize build` does for the fields kustomization.yaml uses (namespace,
labels, resources, configMapGenerator without hash suffixes, images); a field it does not know
fails the test instead of being ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests must still fit
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}
SECRET_KEYS_NOT_SETTINGS = {
    "POSTGRES_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}


# -- a small `kustomize build` -----------------------------------------------------------------------


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
            pairs[key] = value
    return pairs


def _pod_templates(resource: dict) -> list[dict]:
    template = resource.get("spec", {}).get("template")
    return [template] if template else []


def render(directory: Path = K8S) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "configMapGenerator",
        "generatorOptions",
        "images",
    }
    assert set(kustomization) <= known, f"the test's renderer does not know {set(kustomization) - known}"
    assert kustomization["generatorOptions"] == {"disableNameSuffixHash": True}
    resources = []
    for name in kustomization["resources"]:
        resources += [doc for doc in yaml.safe_load_all((directory / name).read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        assert set(generator) <= {"name", "envs"}, generator
        data = {}
        for env in generator["envs"]:
            data.update(_env_file(directory / env))
        resources.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    resources = copy.deepcopy(resources)
    for resource in resources:
        if resource["kind"] not in CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = kustomization["namespace"]
        for entry in kustomization.get("labels", []):
            assert set(entry) <= {"pairs", "includeSelectors", "includeTemplates"}, entry
            assert not entry.get("includeSelectors"), "selector labels are immutable: keep them out"
            resource["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeTemplates"):
                for template in _pod_templates(resource):
                    template["metadata"].setdefault("labels", {}).update(entry["pairs"])
        for template in _pod_templates(resource):
            for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
                for image in kustomization.get("images", []):
                    if container["image"] == image["name"]:
                        container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return resources


RESOURCES = render()


def find(kind: str, name: str) -> dict:
    matches = [r for r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(kind: str, name: str) -> dict:
    return find(kind, name)["spec"]["template"]["spec"]["containers"][0]


def exec_probe(probe: dict) -> list[str]:
    return probe["exec"]["command"]
