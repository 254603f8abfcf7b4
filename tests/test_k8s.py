"""deploy/k8s (kustomize), checked without a cluster: rendered here, validated against the Kubernetes
schemas that the kubernetes-validate package vendors (strict: unknown fields fail), and held to the
topology of docs/deploy.md and to what docker-compose.yml runs.

The renderer (tests/k8s_render.py) does what `kustomize build` does for the fields
kustomization.yaml uses (namespace, labels, resources, configMapGenerator without hash suffixes,
images); a field it does not know fails the test instead of being ignored.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from foodcal.settings import Settings
from tests.deploy_helpers import healthcheck_argv, python_modules, services
from tests.k8s_render import (
    KUBERNETES_VERSION,
    RESOURCES,
    SECRET_KEYS_NOT_SETTINGS,
    _pod_templates,
    container,
    exec_probe,
    find,
)

# -- valid Kubernetes objects --------------------------------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_every_object_is_valid_against_the_kubernetes_schema(resource):
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_object():
    broken = copy.deepcopy(find("Deployment", "gateway"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(find("Service", "gateway"))
    broken["spec"]["ports"][0]["port"] = "50051"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_names_are_unique_and_every_reference_resolves():
    keys = [(r["kind"], r["metadata"]["name"]) for r in RESOURCES]
    assert len(keys) == len(set(keys))
    for resource in RESOURCES:
        for template in _pod_templates(resource):
            labels = template["metadata"]["labels"]
            assert resource["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for volume in template["spec"].get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    find("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            for c in template["spec"]["containers"]:
                for source in c.get("envFrom", []):
                    if "configMapRef" in source:
                        find("ConfigMap", source["configMapRef"]["name"])
                    else:
                        find("Secret", source["secretRef"]["name"])
                mounts = {m["name"] for m in c.get("volumeMounts", [])}
                assert mounts <= {v["name"] for v in template["spec"].get("volumes", [])} | {
                    t["metadata"]["name"] for t in resource["spec"].get("volumeClaimTemplates", [])
                }
    for service in (r for r in RESOURCES if r["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        pods = [
            r
            for r in RESOURCES
            if any(selector <= t["metadata"]["labels"].items() for t in _pod_templates(r))
        ]
        assert len(pods) == 1, service["metadata"]["name"]
        port_names = {
            p["name"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)


# -- the topology of docs/deploy.md ---------------------------------------------------------------------


def test_only_the_gateway_is_reachable_from_outside():
    services_ = [r for r in RESOURCES if r["kind"] == "Service"]
    exposed = {s["metadata"]["name"] for s in services_ if s["spec"].get("type", "ClusterIP") != "ClusterIP"}
    assert exposed == {"gateway"}
    assert not any(r["kind"] == "Ingress" for r in RESOURCES)


def test_torchserve_is_a_statefulset_whose_pods_are_all_listed():
    statefulset = find("StatefulSet", "torchserve")
    service = find("Service", "torchserve")
    assert service["spec"]["clusterIP"] == "None" and statefulset["spec"]["serviceName"] == "torchserve"
    replicas = statefulset["spec"]["replicas"]
    assert replicas >= 2
    config = find("ConfigMap", "foodcal-config")["data"]
    pods = [f"torchserve-{i}.torchserve" for i in range(replicas)]
    assert config["TORCHSERVE_ENDPOINTS"].split(",") == [f"{pod}:7070" for pod in pods]
    assert config["TORCHSERVE_MANAGEMENT"].split(",") == [f"{pod}:7071" for pod in pods]
    ts = container("StatefulSet", "torchserve")
    assert exec_probe(ts["readinessProbe"]) == ["python", "-m", "model_store.readiness", "127.0.0.1:7070"]
    startup = ts["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60  # a first start's download


def test_the_trainer_stays_single_and_is_recreated_not_rolled():
    trainer = find("Deployment", "trainer")
    assert trainer["spec"]["replicas"] == 1 and trainer["spec"]["strategy"] == {"type": "Recreate"}


def test_gateways_scale_on_postgresql_and_the_object_store():
    assert find("Deployment", "gateway")["spec"]["replicas"] >= 2
    config = find("ConfigMap", "foodcal-config")["data"]
    assert config["IMAGE_STORE_URL"].startswith("s3://")
    secrets = find("Secret", "foodcal-secrets")["stringData"]
    assert secrets["DATABASE_URL"].startswith("postgresql://")
    assert "DATABASE_URL" not in config and "API_TOKENS" not in config
    gateway = container("Deployment", "gateway")
    assert exec_probe(gateway["readinessProbe"])[-2:] == ["--service", "foodcal.v1.GatewayService"]
    assert "volumeMounts" not in gateway  # nothing local: photos in S3, samples in PostgreSQL


def test_the_model_store_is_one_readwritemany_volume_at_model_store_dir():
    assert find("PersistentVolumeClaim", "model-store")["spec"]["accessModes"] == ["ReadWriteMany"]
    store_dir = find("ConfigMap", "foodcal-config")["data"]["MODEL_STORE_DIR"]
    for kind, name in (("StatefulSet", "torchserve"), ("Deployment", "trainer")):
        mounts = {m["mountPath"]: m["name"] for m in container(kind, name)["volumeMounts"]}
        volumes = {v["name"]: v for v in find(kind, name)["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mounts[store_dir]]["persistentVolumeClaim"]["claimName"] == "model-store", name


def test_torchserve_is_reachable_only_from_the_gateway_and_the_trainer():
    policy = find("NetworkPolicy", "torchserve")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "torchserve"}
    (rule,) = policy["ingress"]
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]}
    assert allowed == {"gateway", "trainer"}


# -- the same image, commands, probes and settings as compose ----------------------------------------


def test_the_same_commands_and_probes_as_docker_compose():
    workloads = {
        "torchserve": container("StatefulSet", "torchserve"),
        "gateway": container("Deployment", "gateway"),
        "labeler": container("Deployment", "labeler"),
        "trainer": container("Deployment", "trainer"),
    }
    for name, c in workloads.items():
        composed = services()[name]
        assert c["command"] == composed["command"], name
        assert c["image"].rsplit(":", 1)[0].endswith("/foodcal"), name
        assert exec_probe(c["readinessProbe"])[:4] == healthcheck_argv(composed)[:4], name
        assert python_modules(c["command"])


def test_torchserve_pods_build_the_models_first_in_the_models_image_as_compose_does():
    pod = find("StatefulSet", "torchserve")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    torchserve = container("StatefulSet", "torchserve")
    assert init["command"] == services()["models"]["command"]
    assert init["image"].rsplit(":", 1)[0].endswith("/foodcal-models")
    assert init["envFrom"] == torchserve["envFrom"], "the build checks the store for the same settings"
    assert init["volumeMounts"] == torchserve["volumeMounts"], "it builds the store TorchServe serves"


def test_pods_run_as_the_image_user_without_privileges():
    for resource in RESOURCES:
        for template in _pod_templates(resource):
            if resource["metadata"]["name"] == "postgres":
                continue  # the official image starts as root and drops to its own user
            pod = template["spec"]["securityContext"]
            assert pod["runAsNonRoot"] and pod["runAsUser"] == 10001, resource["metadata"]["name"]
            for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_config_and_secret_hold_only_real_settings():
    fields = {name.upper() for name in Settings.model_fields}
    config = find("ConfigMap", "foodcal-config")["data"]
    assert set(config) <= fields, set(config) - fields
    secrets = find("Secret", "foodcal-secrets")["stringData"]
    assert set(secrets) - SECRET_KEYS_NOT_SETTINGS <= fields
    assert config["BIND_HOST"] == "0.0.0.0" and config["TORCHSERVE_BIND_HOST"] == "0.0.0.0"
    assert config["LABELER_ADDRESS"] == "labeler:50052" and config["TRAINER_ADDRESS"] == "trainer:50053"
