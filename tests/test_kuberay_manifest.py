"""k8s/rayservice.yaml and the cluster's Serve config, checked offline, each layer against
the schema that owns it:

- Kubernetes' own (kubernetes-validate, strict: an unknown field is an error): the
  ConfigMap, and each pod template inside the RayService, validated as a PodTemplate;
- Ray's own (ray.serve.schema, with ray_serving/serve_config.py's walk for the keys that
  schema silently drops): serveConfigV2 and ray_serving/serve-cluster.yaml;
- KubeRay's RayService and RayCluster fields: no package on PyPI ships KubeRay's CRD, so
  the fields are listed here from KubeRay's v1 Go types (ray-operator/apis/ray/v1) and the
  manifest must use no others. Weaker than the CRD: no CEL rules, no defaults.

Then what the project's files must agree on: the image, Ray's version, the application,
the model's URI, the Ray switches docker-compose.ray.yml sets, and probes, resources and a
Secret for the credentials on every pod.
"""

import copy
import importlib
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ray_serving.cluster import head_command
from ray_serving.ingress import PROXY_CALLBACK, PROXY_CALLBACK_ENV, ray_environment
from ray_serving.serve_config import ServeConfigError, check_serve_config, read_serve_config
from serving_common.strategy import discover_strategies

from conftest import ROOT

MANIFEST = ROOT / "k8s" / "rayservice.yaml"
SERVE_CONFIG = ROOT / "ray_serving" / "serve-cluster.yaml"
COMPOSE = ROOT / "docker-compose.ray.yml"
STRATEGY = discover_strategies([ROOT])["ray_serving"]
# The Kubernetes version the manifest is checked against (kubernetes-validate ships 1.25-1.37).
KUBERNETES = "1.35"

# KubeRay's v1 fields (rayservice_types.go, raycluster_types.go): a mapping is a struct, a
# one-item list a list of it, POD a corev1.PodTemplateSpec (checked by Kubernetes' schema),
# STRINGS a map[string]string; any other value is the Python type of a leaf.
POD, STRINGS = "PodTemplateSpec", "map[string]string"
WORKER_GROUP = {
    "groupName": str,
    "replicas": int,
    "minReplicas": int,
    "maxReplicas": int,
    "idleTimeoutSeconds": int,
    "rayStartParams": STRINGS,
    "template": POD,
    "scaleStrategy": dict,
    "numOfHosts": int,
    "suspend": bool,
}
RAY_CLUSTER_SPEC = {
    "rayVersion": str,
    "enableInTreeAutoscaling": bool,
    "autoscalerOptions": {
        "resources": dict,
        "image": str,
        "imagePullPolicy": str,
        "securityContext": dict,
        "idleTimeoutSeconds": int,
        "upscalingMode": str,
        "version": str,
        "env": list,
        "envFrom": list,
        "volumeMounts": list,
    },
    "headGroupSpec": {
        "template": POD,
        "headService": dict,
        "enableIngress": bool,
        "rayStartParams": STRINGS,
        "serviceType": str,
    },
    "workerGroupSpecs": [WORKER_GROUP],
    "headServiceAnnotations": STRINGS,
    "gcsFaultToleranceOptions": dict,
    "managedBy": str,
    "suspend": bool,
}
RAY_SERVICE = {
    "apiVersion": str,
    "kind": str,
    "metadata": dict,
    "spec": {
        "serveConfigV2": str,
        "rayClusterConfig": RAY_CLUSTER_SPEC,
        "serveService": dict,
        "upgradeStrategy": dict,
        "excludeHeadPodFromServeSvc": bool,
    },
}
# Required by KubeRay (no `omitempty` in its Go types).
REQUIRED = {
    "spec.rayClusterConfig.headGroupSpec": {"template"},
    "spec.rayClusterConfig.workerGroupSpecs[]": {"groupName", "template"},
}
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}


def kuberay_problems(spec: Any, data: Any, path: str = "") -> list[str]:
    """Where `data` leaves KubeRay's fields (`spec`, above): unknown keys, wrong types,
    missing required keys."""
    if spec == POD:
        return [] if isinstance(data, dict) else [f"{path}: a pod template is a mapping"]
    if spec == STRINGS:
        if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            return []
        return [f"{path}: every value must be a string"]
    if isinstance(spec, list):
        if not isinstance(data, list):
            return [f"{path}: a list"]
        return [p for item in data for p in kuberay_problems(spec[0], item, f"{path}[]")]
    if isinstance(spec, dict):
        if not isinstance(data, dict):
            return [f"{path}: a mapping"]
        problems = [
            f"{path}: missing {key}" for key in REQUIRED.get(path, set()) if key not in data
        ]
        for key, value in data.items():
            where = f"{path}.{key}" if path else key
            if key not in spec:
                problems.append(f"{where}: not a KubeRay field")
            else:
                problems += kuberay_problems(spec[key], value, where)
        return problems
    # int for bool is a YAML mistake too (bool is an int subclass in Python).
    if not isinstance(data, spec) or (spec is int and isinstance(data, bool)):
        return [f"{path}: expected {spec.__name__}, got {data!r}"]
    return []


def documents() -> dict[str, dict[str, Any]]:
    """The manifest's objects by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


def cluster_spec(service: dict[str, Any]) -> dict[str, Any]:
    return service["spec"]["rayClusterConfig"]  # type: ignore[no-any-return]


def pod_templates(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each pod template of the RayService, by where it is."""
    spec = cluster_spec(service)
    templates = {"headGroupSpec": spec["headGroupSpec"]["template"]}
    for group in spec["workerGroupSpecs"]:
        templates[f"workerGroupSpecs[{group['groupName']}]"] = group["template"]
    return templates


def validate_pod_template(template: dict[str, Any]) -> None:
    """Kubernetes' strict schema for a PodTemplateSpec: as the template of a PodTemplate
    object, the one core kind that is just that."""
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
    kubernetes_validate.validate({**wrapper, "template": template}, KUBERNETES, strict=True)


def containers(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for t in pod_templates(service).values() for c in t["spec"]["containers"]]


def serve_config_v2(service: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(service["spec"]["serveConfigV2"])  # type: ignore[no-any-return]


def compose_ray_env() -> dict[str, str]:
    """docker-compose.ray.yml's environment of every Ray node."""
    return yaml.safe_load(COMPOSE.read_text())["x-ray-env"]  # type: ignore[no-any-return]


# Kubernetes' schemas


def test_the_manifest_holds_a_configmap_and_a_rayservice():
    assert set(documents()) == {"ConfigMap", "RayService"}
    # Credentials never in the file: the Secret is created from a key file (its header).
    assert "kind: Secret" not in MANIFEST.read_text()


def test_the_configmap_passes_kubernetes_strict_schema():
    kubernetes_validate.validate(documents()["ConfigMap"], KUBERNETES, strict=True)


@pytest.mark.parametrize("where", ["headGroupSpec", "workerGroupSpecs[cpu]"])
def test_each_pod_template_passes_kubernetes_strict_schema(where):
    validate_pod_template(pod_templates(documents()["RayService"])[where])


def test_kubernetes_strict_schema_refuses_an_unknown_container_field():
    template = copy.deepcopy(pod_templates(documents()["RayService"])["headGroupSpec"])
    template["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod_template(template)


def test_kubernetes_validate_has_no_schema_for_a_rayservice():
    """Why the RayService is not passed to it whole: a custom resource has no schema
    there (its command line only warns, and exits 0)."""
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(documents()["RayService"], KUBERNETES, strict=True)


# KubeRay's fields


def test_the_rayservice_uses_only_kuberay_fields():
    service = documents()["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    assert kuberay_problems(RAY_SERVICE, service) == []
    options = cluster_spec(service)["autoscalerOptions"]
    assert options["upscalingMode"] in UPSCALING_MODES


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["spec"].update(serveConfig="x"), "spec.serveConfig: not a KubeRay field"),
        (
            lambda s: cluster_spec(s)["workerGroupSpecs"][0]["rayStartParams"].update(
                {"num-cpus": 2}
            ),
            "spec.rayClusterConfig.workerGroupSpecs[].rayStartParams: every value must be",
        ),
        (
            lambda s: cluster_spec(s)["headGroupSpec"].pop("template"),
            "spec.rayClusterConfig.headGroupSpec: missing template",
        ),
        (
            lambda s: cluster_spec(s).update(enableInTreeAutoscaling="true"),
            "spec.rayClusterConfig.enableInTreeAutoscaling: expected bool",
        ),
    ],
)
def test_the_kuberay_check_finds_a_wrong_field(change, problem):
    service = copy.deepcopy(documents()["RayService"])
    change(service)
    problems = kuberay_problems(RAY_SERVICE, service)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


# Ray's Serve schema


def test_serve_config_v2_passes_rays_schema_with_no_key_ignored():
    config = check_serve_config(serve_config_v2(documents()["RayService"]))
    assert config.applications[0].import_path == "ray_serving.app:build_app"


def test_the_compose_clusters_serve_config_passes_rays_schema_with_no_key_ignored():
    config = read_serve_config(SERVE_CONFIG)
    assert config.proxy_location.value == "HeadOnly"


def test_a_key_rays_schema_would_ignore_is_refused():
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["applications"][0]["deployments"][0]["autoscaling_config"]["upscale_delay"] = 1
    with pytest.raises(ServeConfigError, match=r"deployments\[0\]\.autoscaling_config\.upscale"):
        check_serve_config(config)


def test_a_value_rays_schema_refuses_is_one_line(tmp_path):
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"] = 0
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ServeConfigError) as refused:
        read_serve_config(path)
    assert str(refused.value).startswith(f"{path}: applications.0.deployments.0")
    assert "\n" not in str(refused.value)


# What the project's files agree on


def test_kubernetes_runs_the_same_application_as_compose():
    """The applications are one; only where the ingress runs differs (one published port
    in Compose, KubeRay's serve Service over every pod with a replica)."""
    compose = yaml.safe_load(SERVE_CONFIG.read_text())
    kubernetes = serve_config_v2(documents()["RayService"])
    assert kubernetes["applications"] == compose["applications"]
    assert kubernetes["http_options"] == compose["http_options"]
    assert (compose["proxy_location"], kubernetes["proxy_location"]) == ("HeadOnly", "EveryNode")


def test_the_application_is_importable_by_its_path():
    module, _, name = serve_config_v2(documents()["RayService"])["applications"][0][
        "import_path"
    ].partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_every_pod_runs_the_strategys_image_and_rays_version():
    assert STRATEGY.docker is not None
    service = documents()["RayService"]
    for container in containers(service):
        assert container["image"].rsplit(":", 1)[0] == STRATEGY.docker.image, container["name"]
    assert cluster_spec(service)["rayVersion"] == version("ray")


def test_the_model_and_settings_come_from_the_configmap():
    settings = documents()["ConfigMap"]
    uri = settings["data"]["MODEL_URI"]
    assert uri == f"gs://models/weather/{STRATEGY.model_file}"
    for container in containers(documents()["RayService"]):
        assert {"configMapRef": {"name": settings["metadata"]["name"]}} in container["envFrom"]
        assert "MODEL_URI" not in {env["name"] for env in container.get("env", [])}


def test_the_workers_read_credentials_from_a_secret_volume():
    for where, template in pod_templates(documents()["RayService"]).items():
        if not where.startswith("workerGroupSpecs"):
            continue
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (container,) = template["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        (mount,) = [m for m in container["volumeMounts"] if "secret" in volumes[m["name"]]]
        assert mount["readOnly"] is True
        assert Path(env["GOOGLE_APPLICATION_CREDENTIALS"]).parent == Path(mount["mountPath"])


def test_every_container_has_probes_resources_and_runs_unprivileged():
    service = documents()["RayService"]
    for template in pod_templates(service).values():
        assert template["spec"]["securityContext"]["runAsUser"] == 65532
    for container in containers(service):
        # KubeRay's default probes run wget, which the image has not: ours are HTTP GETs.
        for probe in ("readinessProbe", "livenessProbe"):
            assert "httpGet" in container[probe], (container["name"], probe)
        assert set(container["resources"]) == {"requests", "limits"}, container["name"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_head_offers_no_cpu_so_replicas_run_on_workers():
    spec = cluster_spec(documents()["RayService"])
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    assert compose["ray-head"]["command"] == ["python3", "-m", "ray_serving.cluster"]
    assert "--num-cpus=0" in head_command(6379)


def test_the_ray_switches_agree_with_compose_and_the_single_node_launcher():
    """The switches of ingress.ray_environment() that are not per-launch paths or ports:
    the same on every node in Compose and on Kubernetes."""
    launcher = ray_environment(Path("/unused"))
    shared = {
        name: value
        for name, value in launcher.items()
        if not re.search(r"SOCKET_PATH|FILE_LOC|_PORT$|SERVER_STATE|LOG_TARGET|DRAINING", name)
    }
    shared["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    assert shared[PROXY_CALLBACK_ENV] == PROXY_CALLBACK
    kubernetes = documents()["ConfigMap"]["data"]
    compose = compose_ray_env()
    for name, value in shared.items():
        assert kubernetes.get(name) == value, name
        assert compose.get(name) == value, name
    for name in ("RAY_SERVE_HAPROXY_TIMEOUT_CONNECT_S", "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"):
        assert kubernetes[name] == compose_default(compose[name]), name


def compose_default(value: str) -> str:
    """`${VAR:-default}` -> default; a plain value as it is."""
    match = re.fullmatch(r"\$\{\w+:-(.+)\}", value)
    return match.group(1) if match else value


def test_the_compose_cluster_publishes_only_the_heads_ingress_on_loopback():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert STRATEGY.docker is not None
    nodes = {name: s for name, s in services.items() if name.startswith("ray-")}
    assert set(nodes) == {"ray-head", "ray-worker-1", "ray-worker-2"}
    for name, node in nodes.items():
        assert node["image"] == STRATEGY.docker.image, name
        assert node["networks"] == ["ray"] and "cpus" in node, name
        assert node["restart"] == "unless-stopped", name
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published == {"ray-head": ["127.0.0.1:${RAY_CLUSTER_PORT:-8086}:8000"]}
    assert {"gcs", "model"} <= set(services)
    assert all(s.get("networks") == ["ray"] for s in services.values())
