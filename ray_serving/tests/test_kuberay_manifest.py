"""k8s/rayservice.yaml and the cluster's Serve config, checked offline, each layer against
the schema that owns it:

- Kubernetes' own (kubernetes-validate, strict: an unknown field is an error): the
  ConfigMap, and each pod template inside the RayService, validated as a PodTemplate;
- Ray's own (ray.serve.schema, with ray_serving/serve_config.py's walk for the keys that
  schema silently drops): serveConfigV2 and ray_serving/serve-cluster.yaml;
- KubeRay's own (its CRDs, as Rust types: k8s/check, run here as a binary): the whole
  RayService, pod templates included, with every key the types do not know refused.
  Weaker than the API server: no CEL rules, no defaults, no minimums or patterns.

Then what the project's files must agree on: the image, Ray's version, the application,
the model's URI, the Ray switches docker-compose.cluster.yml sets, and probes, resources and a
Secret for the credentials on every pod.
"""

import copy
import importlib
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ray_serving.cluster import head_command
from ray_serving.compose_cluster import ClusterFiles
from ray_serving.ingress import PROXY_CALLBACK, PROXY_CALLBACK_ENV, ray_environment
from ray_serving.serve_config import ServeConfigError, check_serve_config, read_serve_config
from serving_common.strategy import load_strategy

FOLDER = Path(__file__).resolve().parents[1]
MANIFEST = FOLDER / "k8s" / "rayservice.yaml"
STRATEGY = load_strategy(FOLDER)
# The cluster's files, as strategy.toml's [scenarios.cluster] names them.
FILES = ClusterFiles.of(STRATEGY)
SERVE_CONFIG, COMPOSE = FILES.serve_config, FILES.compose
# The Kubernetes version the manifest is checked against (kubernetes-validate ships 1.25-1.37).
KUBERNETES = "1.35"
# KubeRay's types (kcr_ray_io, from KubeRay's CRDs) in a binary: `kuberay-check MANIFEST`
# prints "ok: RayService <name>" or one line per problem, each starting with its path.
KUBERAY_CHECK = FOLDER / "k8s" / "check"
WORKER = "spec.rayClusterConfig.workerGroupSpecs[0]"


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
    """docker-compose.cluster.yml's environment of every Ray node."""
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


# KubeRay's types


@pytest.fixture(scope="session")
def kuberay_check() -> Path:
    """k8s/check's binary, built here and nowhere else (not by `make setup`), in the dev
    profile (its Cargo.toml says why): about 3 minutes of CPU when cold, hence the timeouts
    below; incremental, a few seconds, once built."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo not found: the KubeRay layer is k8s/check, a Rust program (rustup.rs)")
    manifest = KUBERAY_CHECK / "Cargo.toml"
    build = ["cargo", "build", "--locked", "--quiet", "--manifest-path", str(manifest)]
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(build)} failed:\n{built.stderr[-3000:]}"
    return KUBERAY_CHECK / "target" / "debug" / "kuberay-check"


def run_kuberay_check(binary: Path, manifest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, manifest], capture_output=True, text=True, timeout=60)


def rename_key(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def head_container(service: dict[str, Any]) -> dict[str, Any]:
    template = cluster_spec(service)["headGroupSpec"]["template"]
    return template["spec"]["containers"][0]  # type: ignore[no-any-return]


def worker_group(service: dict[str, Any]) -> dict[str, Any]:
    return cluster_spec(service)["workerGroupSpecs"][0]  # type: ignore[no-any-return]


@pytest.mark.timeout(1800)
def test_the_rayservice_passes_kuberays_types(kuberay_check):
    checked = run_kuberay_check(kuberay_check, MANIFEST)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == "ok: RayService ray-serving\n"


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda s: rename_key(
                cluster_spec(s)["headGroupSpec"], "rayStartParams", "rayStartParms"
            ),
            "spec.rayClusterConfig.headGroupSpec.rayStartParms: unknown field",
        ),
        (
            lambda s: rename_key(
                head_container(s)["securityContext"],
                "allowPrivilegeEscalation",
                "allowPrivilegeEscalaton",
            ),
            "spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].securityContext"
            ".allowPrivilegeEscalaton: unknown field",
        ),
        (lambda s: s["spec"].update(serveConfig="x"), "spec.serveConfig: unknown field"),
        (
            lambda s: worker_group(s).update(replicas="two"),
            f'{WORKER}.replicas: invalid type: string "two", expected i32',
        ),
        # Unquoted, 2 is a number to the API server too: the CRD wants a string.
        (
            lambda s: worker_group(s)["rayStartParams"].update({"num-cpus": 2}),
            f"{WORKER}.rayStartParams.num-cpus: invalid type: integer `2`, expected a string",
        ),
        (
            lambda s: cluster_spec(s).update(enableInTreeAutoscaling="true"),
            "spec.rayClusterConfig.enableInTreeAutoscaling: invalid type: string",
        ),
        (
            lambda s: cluster_spec(s)["autoscalerOptions"].update(upscalingMode="Fast"),
            "spec.rayClusterConfig.autoscalerOptions.upscalingMode: unknown variant `Fast`",
        ),
        (
            lambda s: worker_group(s).pop("template"),
            f"{WORKER}: missing field `template`",
        ),
        (
            lambda s: s.update(apiVersion="ray.io/v1alpha1"),
            'apiVersion: "ray.io/v1alpha1", KubeRay\'s types are "ray.io/v1"',
        ),
    ],
)
def test_kuberays_types_refuse_a_wrong_field_naming_its_path(
    kuberay_check, tmp_path, change, problem
):
    """A copy of the manifest, the ConfigMap included, with one mistake in the RayService."""
    ours = documents()
    service = copy.deepcopy(ours["RayService"])
    change(service)
    manifest = tmp_path / "rayservice.yaml"
    manifest.write_text(yaml.safe_dump_all([ours["ConfigMap"], service]))
    checked = run_kuberay_check(kuberay_check, manifest)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[0].startswith(problem), checked.stdout
    assert len(checked.stdout.splitlines()) == 1, checked.stdout


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
