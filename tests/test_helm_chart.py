"""The Helm chart (helm/pixelmesh): lint, render, validate, and check what it promises.

Helm is built from source by deploy/local/helm.sh (cached in .cache/bin). Every rendered
object is validated offline against Kubernetes' own OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail) for the oldest and newest Kubernetes the chart supports; the
KEDA ScaledObject, a CRD those schemas lack, against a schema of its fields below. Then
the behaviour: one worker per provider, KEDA per provider, gRPC probes, non-root
read-only containers, NetworkPolicies that allow exactly the calls of docs/architecture.md, secrets
only through Secrets, and environment variables the services really read.
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from svckit.server import LIVENESS_SERVICE
from svckit.settings import env_name

# The first test builds Helm from source when .cache has none (minutes on a busy 2-core box).
pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "pixelmesh"
CI_VALUES = CHART / "ci" / "all-providers-values.yaml"
NAMESPACE = "pixelmesh"
RELEASE = "pm"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
PROVIDERS = {"local", "openai", "bfl", "stability", "ideogram", "midjourney", "replicate", "fal", "google",
             "comfyui", "openai_compatible", "sdapi", "kling", "vertex"}
SELF_HOSTED = {"comfyui": 8188, "openai_compatible": 8000, "sdapi": 7860}  # their in-cluster ports in the CI values
SERVICES = ("edge", "routing", "pricing", "storage", "status")
# The gRPC calls of docs/architecture.md, by component; workers are added per provider. Status calls
# storage for the presigned image URLs of webhook bodies and routing for cancels; routing calls
# status to read and watch the generation it cancels.
DESIGN_CALLS = {("edge", "routing"), ("edge", "pricing"), ("edge", "status"), ("edge", "storage"), ("routing", "pricing"),
                ("status", "storage"), ("status", "routing"), ("routing", "status")}
SECRET_ENV = re.compile(r"(_API_KEY|_TOKEN|^FAL_KEY|_SECRET_KEY|_ACCESS_KEY|_SIGNING_KEY|DATABASE_URL|PASSWORD)$")
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]

# KEDA's ScaledObject is a CRD that Kubernetes' schemas lack: a schema of the fields KEDA documents.
SCALED_OBJECT_SCHEMA = json.loads((ROOT / "helm/schemas/keda-scaledobject.schema.json").read_text())


# ---- rendering ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helm() -> list[str]:
    subprocess.run(["bash", str(ROOT / "deploy/local/helm.sh"), "install"], check=True, timeout=1700)
    return [str(ROOT / ".cache/bin/helm")]


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm-home")
    return {**os.environ, **{f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}


def run_helm(helm: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*helm, *args], env=env, capture_output=True, text=True, timeout=120)


def render(helm, env, *args: str, kube: str = KUBE_VERSIONS[-1], chart: Path = CHART) -> list[dict]:
    r = run_helm(helm, env, "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", kube, *args)
    assert r.returncode == 0, r.stderr
    return [doc for doc in yaml.safe_load_all(r.stdout) if doc]


@pytest.fixture(scope="module")
def default_objects(helm, helm_env) -> list[dict]:
    return render(helm, helm_env)


@pytest.fixture(scope="module")
def all_objects(helm, helm_env) -> list[dict]:
    return render(helm, helm_env, "-f", str(CI_VALUES))


@pytest.fixture(scope="module")
def ci_values() -> dict:
    return yaml.safe_load(CI_VALUES.read_text())


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def by_name(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in of_kind(objects, kind)}


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(deployment)["env"]}


# ---- lint and schemas -----------------------------------------------------------------
@pytest.mark.parametrize("values", [[], ["-f", str(CI_VALUES)]], ids=["defaults", "all-providers"])
def test_helm_lint_strict(helm, helm_env, values) -> None:
    r = run_helm(helm, helm_env, "lint", "--strict", str(CHART), *values)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [[], ["-f", str(CI_VALUES)]], ids=["defaults", "all-providers"])
def test_every_object_is_valid_kubernetes(helm, helm_env, values, kube) -> None:
    objects = render(helm, helm_env, *values, kube=kube)
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(obj, SCALED_OBJECT_SCHEMA)
        else:
            kubernetes_validate.validate(obj, kube, strict=True)
        checked += 1
    assert checked == len(objects) >= 25


def test_the_validators_reject_what_kubernetes_would(all_objects) -> None:
    """The validation above is not a rubber stamp: a typo'd field or a bad trigger fails."""
    deployment = copy.deepcopy(of_kind(all_objects, "Deployment")[0])
    container(deployment)["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)
    scaled = copy.deepcopy(of_kind(all_objects, "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "providers.openai.apikey=sk-x"], "/providers/openai/apikey"),  # typo, caught by the schema
        (["--set", "kafka.bootstrapServers=http://kafka"], "/kafka/bootstrapServers"),
        (["--set", "s3.endpoint=http://minio:9000"], "/s3/endpoint"),
        (["--set", "providers.openai.enabled=true"], "providers.openai: enabled without an API key"),
        (["--set", "providers.midjourney.enabled=true"], "providers.midjourney: enabled without a baseUrl"),
        (["--set", "webhookSigningKey.value=too-short"], "/webhookSigningKey/value"),
        (["--set", "components.pricing.replicas=2"], "more than one replica needs a shared database"),
        (["--set", "components.routing.autoscaling.enabled=true"], "components.routing: more than one replica needs a shared database"),
        (["--set", "providers.local.enabled=false"], "no provider is enabled"),
        (["--set", "keda.enabled=true"], "kafka.bootstrapServers is required"),
        (["--set", "worker.shutdownGraceSeconds=100"], "must be below terminationGracePeriodSeconds"),
    ],
    ids=["schema-typo", "kafka-scheme", "s3-scheme", "key-missing", "mj-base-url", "short-signing-key", "pricing-sqlite", "routing-sqlite",
         "no-provider", "keda-kafka", "grace"],
)
def test_bad_values_are_refused_with_a_message(helm, helm_env, args, message) -> None:
    r = run_helm(helm, helm_env, "template", RELEASE, str(CHART), *args)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


# ---- workers and scaling ----------------------------------------------------------------
def test_all_providers_have_exactly_one_worker_each(all_objects) -> None:
    workers = [d for d in of_kind(all_objects, "Deployment") if d["metadata"]["labels"]["pixelmesh.dev/service"] == "worker"]
    providers = [d["metadata"]["labels"]["pixelmesh.dev/provider"] for d in workers]
    assert sorted(providers) == sorted(PROVIDERS)
    images = set()
    for d in workers:
        provider = d["metadata"]["labels"]["pixelmesh.dev/provider"]
        env = env_of(d)
        assert env["WORKER_PROVIDER"]["value"] == provider
        images.add(container(d)["image"])
    assert images == {"registry.example.com/pixelmesh/worker:2026.11.0"}  # one image, many pools


def test_default_render_runs_only_the_local_worker_without_keda(default_objects) -> None:
    workers = [component(d) for d in of_kind(default_objects, "Deployment") if component(d).startswith("worker-")]
    assert workers == ["worker-local"]
    assert of_kind(default_objects, "ScaledObject") == []
    assert "OPENAI_API_KEY" not in env_of(by_name(default_objects, "Deployment")["pm-pixelmesh-worker-local"])


def test_one_scaled_object_per_provider_on_its_consumer_lag(all_objects) -> None:
    deployments = by_name(all_objects, "Deployment")
    scaled = of_kind(all_objects, "ScaledObject")
    assert len(scaled) == len(PROVIDERS)
    seen = set()
    for so in scaled:
        provider = so["metadata"]["labels"]["pixelmesh.dev/provider"]
        seen.add(provider)
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        assert env_of(target)["WORKER_PROVIDER"]["value"] == provider
        assert "replicas" not in target["spec"]  # KEDA owns the replica count
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == f"pixelmesh-worker-{provider}"
        assert trigger["metadata"]["topic"] == f"pixelmesh.generation.requests.{provider}"
        assert trigger["metadata"]["bootstrapServers"] == env_of(target)["KAFKA_BOOTSTRAP_SERVERS"]["value"]
        assert trigger["authenticationRef"] == {"name": "kafka-sasl"}
    assert seen == PROVIDERS
    by_provider = {so["metadata"]["labels"]["pixelmesh.dev/provider"]: so["spec"] for so in scaled}
    assert (by_provider["local"]["minReplicaCount"], by_provider["local"]["maxReplicaCount"]) == (0, 2)
    assert by_provider["openai"]["triggers"][0]["metadata"]["lagThreshold"] == "5"


@pytest.mark.parametrize(
    ("objects_fixture", "expected"),
    [("default_objects", {"edge", "status", "storage"}), ("all_objects", {"edge", "routing", "status", "storage", "pricing"})],
)
def test_stateless_services_have_an_hpa(request, objects_fixture, expected) -> None:
    """Pricing and routing keep state in the database (the ledger, idempotency keys): with a
    shared one (all_objects) they scale too; with their built-in SQLite they stay at one pod."""
    objects = request.getfixturevalue(objects_fixture)
    deployments = by_name(objects, "Deployment")
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert {component(h) for h in hpas} == expected
    for hpa in hpas:
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"]
        assert container(target)["resources"]["requests"]["cpu"]  # utilization needs a request
    for stateful in {"pricing", "routing"} - expected:  # its built-in SQLite lives in one pod
        assert deployments[f"pm-pixelmesh-{stateful}"]["spec"]["replicas"] == 1


def test_overrides_replace_keys_and_merge_blocks_one_level(all_objects) -> None:
    """components.edge.autoscaling {maxReplicas: 20} keeps the other autoscaling settings;
    providers.google.resources replaces the worker's resources whole."""
    edge_hpa = by_name(all_objects, "HorizontalPodAutoscaler")["pm-pixelmesh-edge"]["spec"]
    assert (edge_hpa["minReplicas"], edge_hpa["maxReplicas"]) == (2, 20)
    google = container(by_name(all_objects, "Deployment")["pm-pixelmesh-worker-google"])["resources"]
    assert google == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    openai = by_name(all_objects, "Deployment")["pm-pixelmesh-worker-openai"]
    assert container(openai)["resources"]["limits"] == {"memory": "768Mi"}  # the worker's, not defaults'
    assert openai["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90
    assert env_of(openai)["SHUTDOWN_GRACE_SECONDS"]["value"] == "60"


# ---- pods -------------------------------------------------------------------------------
@pytest.mark.parametrize("objects_fixture", ["default_objects", "all_objects"])
def test_every_pod_is_probed_over_grpc_health(request, objects_fixture) -> None:
    for d in of_kind(request.getfixturevalue(objects_fixture), "Deployment"):
        c = container(d)
        grpc_port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
        assert env_of(d)["GRPC_PORT"]["value"] == str(grpc_port)
        # Readiness asks the whole server (SERVING only while its dependencies answer);
        # startup and liveness ask svckit's "liveness", SERVING while the process runs, so a
        # dependency outage takes pods out of the Service without restarting them.
        assert c["readinessProbe"]["grpc"] == {"port": grpc_port}, component(d)
        for probe in ("startupProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": grpc_port, "service": LIVENESS_SERVICE}, (component(d), probe)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert set(c[probe]) - {"grpc"} <= {"periodSeconds", "failureThreshold", "timeoutSeconds", "initialDelaySeconds"}


@pytest.mark.parametrize("objects_fixture", ["default_objects", "all_objects"])
def test_every_container_is_non_root_with_a_read_only_root(request, objects_fixture) -> None:
    for d in of_kind(request.getfixturevalue(objects_fixture), "Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = container(d)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
        assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
        assert d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_every_component_has_a_pod_disruption_budget(all_objects) -> None:
    deployments = of_kind(all_objects, "Deployment")
    pdbs = {component(p): p for p in of_kind(all_objects, "PodDisruptionBudget")}
    for d in deployments:
        assert pdbs[component(d)]["spec"]["selector"] == d["spec"]["selector"]


# ---- network policies -------------------------------------------------------------------
def _selects(selector: dict | None, labels: dict) -> bool:
    selector = selector or {}
    assert not selector.get("matchExpressions"), "the chart uses matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict, pod_labels: dict) -> bool:
    """Does a NetworkPolicyPeer match a pod of the release (namespace NAMESPACE)?"""
    if "ipBlock" in peer:
        return False  # the chart's ipBlocks are the internet minus private ranges
    if "namespaceSelector" in peer and not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": NAMESPACE}):
        return False
    return _selects(peer.get("podSelector"), pod_labels)


def _rule_allows(rule: dict, peers_key: str, labels: dict, port: int) -> bool:
    peers_ok = peers_key not in rule or any(_peer_matches(p, labels) for p in rule[peers_key])
    ports_ok = "ports" not in rule or any(p["port"] == port for p in rule["ports"])
    return peers_ok and ports_ok


def allowed_grpc_calls(objects: list[dict]) -> set[tuple[str, str]]:
    """Every (caller, callee) component pair whose policies let caller reach callee's gRPC port."""
    pods = {component(d): d["spec"]["template"]["metadata"]["labels"] for d in of_kind(objects, "Deployment")}
    grpc = {component(d): {p["name"]: p["containerPort"] for p in container(d)["ports"]}["grpc"] for d in of_kind(objects, "Deployment")}
    policies = {}
    for np in of_kind(objects, "NetworkPolicy"):
        (selected,) = [name for name, labels in pods.items() if _selects(np["spec"]["podSelector"], labels)]
        assert selected not in policies, f"two policies select {selected}"
        assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
        policies[selected] = np["spec"]
    assert set(policies) == set(pods), "every component has its NetworkPolicy"
    calls = set()
    for src in pods:
        for dst in pods:
            out = any(_rule_allows(r, "to", pods[dst], grpc[dst]) for r in policies[src]["egress"])
            into = any(_rule_allows(r, "from", pods[src], grpc[dst]) for r in policies[dst]["ingress"])
            if out and into:
                calls.add((src, dst))
    return calls


@pytest.mark.parametrize("objects_fixture", ["default_objects", "all_objects"])
def test_network_policies_allow_exactly_the_designed_calls(request, objects_fixture) -> None:
    objects = request.getfixturevalue(objects_fixture)
    workers = {component(d) for d in of_kind(objects, "Deployment") if component(d).startswith("worker-")}
    # workers store images, read inputs' parents, and report failed attempts to routing
    expected = DESIGN_CALLS | {(w, dst) for w in workers for dst in ("storage", "status", "routing")}
    assert allowed_grpc_calls(objects) == expected


def test_network_policies_open_only_the_designed_ways_out(all_objects) -> None:
    def egress_ports(name: str) -> set[int]:
        spec = by_name(all_objects, "NetworkPolicy")[f"pm-pixelmesh-{name}"]["spec"]
        return {p["port"] for r in spec["egress"] if "to" not in r or not any("podSelector" in t and "namespaceSelector" not in t for t in r["to"]) for p in r.get("ports", [])}

    dns_kafka_otlp = {53, 9092, 4318}
    assert egress_ports("edge") == {53, 4318}
    assert egress_ports("routing") == dns_kafka_otlp | {5432}  # its idempotency keys in the database
    assert egress_ports("status") == dns_kafka_otlp | {443, 80}  # webhook receivers
    status_out = by_name(all_objects, "NetworkPolicy")["pm-pixelmesh-status"]["spec"]["egress"]
    (webhooks,) = [r for r in status_out if {p["port"] for p in r["ports"]} == {443, 80}]
    assert webhooks["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}]  # not into the cluster
    assert egress_ports("storage") == {53, 4318, 9000, 443}
    assert egress_ports("pricing") == dns_kafka_otlp | {5432}
    assert egress_ports("worker-openai") == dns_kafka_otlp | {443}
    assert egress_ports("worker-local") == dns_kafka_otlp  # the local renderer calls no upstream
    edge_http = [r for r in by_name(all_objects, "NetworkPolicy")["pm-pixelmesh-edge"]["spec"]["ingress"] if r["ports"][0]["port"] == 8080]
    assert edge_http and edge_http[0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}


# ---- configuration: secrets and environment ---------------------------------------------
def test_secrets_only_through_secret_refs(all_objects, ci_values) -> None:
    inline = [p["apiKey"] for p in ci_values["providers"].values() if p.get("apiKey")]
    inline += [ci_values["database"]["url"], ci_values["devApiKey"]["value"], ci_values["adminToken"]["value"]]
    rendered = yaml.safe_dump_all(all_objects)
    for value in inline:
        assert value not in rendered, "a secret in plain text"
    (secret,) = of_kind(all_objects, "Secret")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(stored.values()) == sorted(inline)  # existingSecret ones are not copied
    existing = {ci_values["s3"]["existingSecret"], ci_values["webhookSigningKey"]["existingSecret"]}
    existing |= {p["existingSecret"] for p in ci_values["providers"].values() if p.get("existingSecret")}
    secret_vars = 0
    for d in of_kind(all_objects, "Deployment"):
        for name, entry in env_of(d).items():
            if SECRET_ENV.search(name):
                secret_vars += 1
                assert "value" not in entry, (component(d), name)
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] in existing or (ref["name"] == secret["metadata"]["name"] and ref["key"] in stored), ref
    # the 8 upstream APIs' provider keys, kling's pair and sdapi's --api-auth login, storage's
    # S3 pair, pricing's dev key, database URL and admin token, status's webhook signing key
    # and admin token, routing's database URL
    assert secret_vars == 8 + 2 + 1 + 2 + 3 + 2 + 1


def _adapter_settings(provider: str) -> type | None:
    """The settings class of a provider's adapter (None: no settings, or no adapter on this branch)."""
    from worker.providers import PROVIDERS
    from worker.providers.settings import UpstreamSettings

    if provider not in PROVIDERS:
        return None
    module = importlib.import_module(PROVIDERS[provider].partition(":")[0])
    classes = [v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, UpstreamSettings) and v.__module__ == module.__name__]
    assert len(classes) <= 1, (provider, classes)
    return classes[0] if classes else None


def _aliases(cls: type) -> dict[str, str]:
    """Field name -> the variable an adapter's settings read it from."""
    return {name: info.validation_alias for name, info in cls.model_fields.items()}


def test_provider_workers_get_their_key_and_base_url(all_objects) -> None:
    deployments = by_name(all_objects, "Deployment")
    expected = {"openai": "OPENAI_API_KEY", "bfl": "BFL_API_KEY", "stability": "STABILITY_API_KEY", "ideogram": "IDEOGRAM_API_KEY",
                "midjourney": "MIDJOURNEY_API_KEY", "replicate": "REPLICATE_API_TOKEN", "fal": "FAL_KEY", "google": "GOOGLE_API_KEY"}
    for provider, key_env in expected.items():
        env = env_of(deployments[f"pm-pixelmesh-worker-{provider}"])
        assert [n for n in env if SECRET_ENV.search(n)] == [key_env]  # its own key, no other provider's
        if cls := _adapter_settings(provider):  # the adapter reads exactly these names
            aliases = _aliases(cls)
            assert key_env == aliases.get("api_key", aliases.get("api_token")), provider
            assert aliases["base_url"] == f"{provider.upper()}_BASE_URL", provider
    assert env_of(deployments["pm-pixelmesh-worker-midjourney"])["MIDJOURNEY_BASE_URL"]["value"] == "http://midjourney-proxy.midjourney:8080"
    assert env_of(deployments["pm-pixelmesh-worker-bfl"])["BFL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "provider-keys", "key": "bfl"}
    assert env_of(deployments["pm-pixelmesh-worker-ideogram"])["IDEOGRAM_MAX_IN_FLIGHT"]["value"] == "5"  # providers.<name>.env
    # Kling signs its JWT from two keys: both from the Secret, under their own keys.
    kling = env_of(deployments["pm-pixelmesh-worker-kling"])
    assert [n for n in kling if SECRET_ENV.search(n)] == ["KLING_SECRET_KEY", "KLING_ACCESS_KEY"]
    assert kling["KLING_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "provider-keys", "key": "kling-secret"}
    assert kling["KLING_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "provider-keys", "key": "kling-access"}
    aliases = _aliases(_adapter_settings("kling"))
    assert (aliases["secret_key"], aliases["access_key"], aliases["base_url"]) == (
        "KLING_SECRET_KEY", "KLING_ACCESS_KEY", "KLING_BASE_URL")


def test_kling_needs_both_keys_and_keeps_inline_ones_in_the_secret(helm, helm_env) -> None:
    objects = render(helm, helm_env, "--set", "providers.kling.enabled=true", "--set", "providers.kling.apiKey=sk-inline-1",
                     "--set", "providers.kling.accessKey=ak-inline-2")
    env = env_of(by_name(objects, "Deployment")["pm-pixelmesh-worker-kling"])
    (secret,) = of_kind(objects, "Secret")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert (stored["kling-api-key"], stored["kling-access-key"]) == ("sk-inline-1", "ak-inline-2")
    assert env["KLING_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "kling-access-key"}
    r = run_helm(helm, helm_env, "template", RELEASE, str(CHART), "--set", "providers.kling.enabled=true",
                 "--set", "providers.kling.apiKey=sk-inline-1")
    assert r.returncode != 0 and "providers.kling: enabled without an access key" in r.stderr


def test_vertex_mounts_its_service_account_key_and_needs_a_project(all_objects, helm, helm_env) -> None:
    deployment = by_name(all_objects, "Deployment")["pm-pixelmesh-worker-vertex"]
    env = env_of(deployment)
    aliases = _aliases(_adapter_settings("vertex"))
    assert env[aliases["service_account_file"]]["value"] == "/etc/pixelmesh/credentials/service-account.json"
    assert (env[aliases["project"]]["value"], env[aliases["location"]]["value"]) == ("ci-placeholder-project", "europe-west4")
    assert aliases["access_token"] not in env  # the key file, not a short-lived token
    pod = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert volume["secret"]["secretName"] == "vertex-service-account" and volume["secret"]["defaultMode"] == 0o400
    [mount] = [m for m in container(deployment)["volumeMounts"] if m["name"] == "credentials"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/pixelmesh/credentials", True)
    for extra, message in (
        (["--set", "providers.vertex.env.VERTEX_PROJECT=p"], "providers.vertex: enabled without a credential"),
        (["--set", "providers.vertex.credentialsFile.secret=sa"], "providers.vertex: enabled without VERTEX_PROJECT"),
    ):
        r = run_helm(helm, helm_env, "template", RELEASE, str(CHART), "--set", "providers.vertex.enabled=true", *extra)
        assert r.returncode != 0 and message in r.stderr, r.stderr


def test_self_hosted_pools_get_their_url_their_egress_and_no_key(all_objects, ci_values) -> None:
    deployments, policies = by_name(all_objects, "Deployment"), by_name(all_objects, "NetworkPolicy")
    for provider, port in SELF_HOSTED.items():
        name = f"pm-pixelmesh-worker-{provider.replace('_', '-')}"  # Kubernetes names take no underscores
        env = env_of(deployments[name])
        aliases = _aliases(_adapter_settings(provider))
        assert env[aliases["base_url"]]["value"] == ci_values["providers"][provider]["baseUrl"], provider
        assert env["WORKER_PROVIDER"]["value"] == provider  # the topic and group keep the pool's name
        keys = [n for n in env if SECRET_ENV.search(n)]
        assert keys == (["SDAPI_API_KEY"] if provider == "sdapi" else []) and aliases["api_key"] == f"{provider.upper()}_API_KEY"
        egress = policies[name]["spec"]["egress"]
        upstream = [rule for rule in egress if any(p["port"] == port for p in rule.get("ports", []))]
        assert upstream and all(rule["to"] for rule in upstream), provider  # only to the gpu namespace
        assert not any(p["port"] == 443 for rule in egress for p in rule.get("ports", [])), provider


def test_the_operator_files_are_mounted_and_pass_the_services_checks(all_objects, tmp_path) -> None:
    """The selfHosted ConfigMap reaches routing, pricing and the comfyui worker under the
    variables they read, and its files pass the checks each service makes at start-up."""
    from pricing.prices import PriceTable
    from routing.catalog import Catalog
    from worker.providers.comfyui_templates import load_templates

    (config,) = [c for c in of_kind(all_objects, "ConfigMap") if c["metadata"]["name"] == "pm-pixelmesh-self-hosted"]
    deployments = by_name(all_objects, "Deployment")
    wanted = {"pm-pixelmesh-routing": ("ROUTING_EXTRA_CATALOGS", {"catalog.yaml"}),
              "pm-pixelmesh-pricing": ("PRICING_EXTRA_PRICE_TABLES", {"prices.yaml"}),
              "pm-pixelmesh-worker-comfyui": ("COMFYUI_WORKFLOWS", {"comfyui-sdxl-selfhosted.json"})}
    files = {}
    for name, (variable, keys) in wanted.items():
        spec = deployments[name]["spec"]["template"]["spec"]
        (volume,) = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == "pm-pixelmesh-self-hosted"]
        (mount,) = [m for m in container(deployments[name])["volumeMounts"] if m["name"] == volume["name"]]
        assert {i["key"] for i in volume["configMap"]["items"]} == keys and mount["readOnly"]
        assert env_of(deployments[name])[variable]["value"].startswith(mount["mountPath"])
        for item in volume["configMap"]["items"]:
            files[item["path"]] = config["data"][item["key"]]
    for path, text in files.items():
        (tmp_path / path).write_text(text)
    enabled = {"comfyui", "openai_compatible", "sdapi"}
    catalog = Catalog.load(enabled, extra=(tmp_path / "catalog.yaml",))
    prices = PriceTable.load(extra=(tmp_path / "prices.yaml",))
    for entry in catalog.available():
        if entry.owned_by == "self-hosted":
            assert prices.quote(entry.id, entry.default_size, entry.quality_default, 1).total_tokens >= 1
    (tmp_path / "catalog.yaml").unlink()
    (tmp_path / "prices.yaml").unlink()
    assert set(load_templates(tmp_path)) == {"sdxl-selfhosted"}


def test_comfyui_without_workflow_templates_fails_the_render(helm, helm_env) -> None:
    r = run_helm(helm, helm_env, "template", RELEASE, str(CHART), "--set", "providers.comfyui.enabled=true",
                 "--set", "providers.comfyui.baseUrl=http://comfyui:8188")
    assert r.returncode != 0 and "selfHosted.comfyuiWorkflows" in r.stderr


def test_midjourney_proxy_key_is_optional(helm, helm_env) -> None:
    """A Midjourney proxy without auth: its URL is required, its key is not."""
    objects = render(helm, helm_env, "--set", "providers.midjourney.enabled=true",
                     "--set", "providers.midjourney.baseUrl=http://mj-proxy:8080")
    env = env_of(by_name(objects, "Deployment")["pm-pixelmesh-worker-midjourney"])
    assert env["MIDJOURNEY_BASE_URL"]["value"] == "http://mj-proxy:8080"
    assert "MIDJOURNEY_API_KEY" not in env


def _settings_classes() -> dict:
    from edge.settings import EdgeSettings
    from pricing.settings import PricingSettings
    from routing.settings import RoutingSettings
    from status.settings import StatusSettings
    from storage.settings import StorageSettings
    from worker.settings import WorkerSettings

    return {"edge": EdgeSettings, "routing": RoutingSettings, "pricing": PricingSettings,
            "storage": StorageSettings, "status": StatusSettings, "worker": WorkerSettings}


NOT_SETTINGS = re.compile(r"^(OTEL_.*|POD_NAME|POD_NAMESPACE|PYTHONUNBUFFERED)$")


def _provider_env(provider: str) -> tuple[set[str], set[str], re.Pattern | None]:
    """(known, required) variables of a provider's adapter; for an adapter not on this branch
    yet, only its own key and base URL are accepted (the pattern)."""
    from worker.providers.settings import UpstreamSettings

    shared = set(_aliases(UpstreamSettings).values())
    cls = _adapter_settings(provider)
    if cls is not None:
        required = {info.validation_alias for info in cls.model_fields.values() if info.is_required()}
        return shared | set(_aliases(cls).values()), required, None
    from worker.providers import PROVIDERS

    if provider in PROVIDERS:  # an adapter without settings of its own (local)
        return shared, set(), None
    prefix = provider.upper()
    return shared, set(), re.compile(rf"^({prefix}_API_KEY|{prefix}_API_TOKEN|{prefix}_KEY|{prefix}_BASE_URL)$")


@pytest.mark.parametrize("objects_fixture", ["default_objects", "all_objects"])
def test_environment_matches_the_services_settings(request, objects_fixture) -> None:
    """Every required setting is set, and every variable set is one the service (and a
    worker's adapter) reads."""
    classes = _settings_classes()
    for d in of_kind(request.getfixturevalue(objects_fixture), "Deployment"):
        service = d["metadata"]["labels"]["pixelmesh.dev/service"]
        cls = classes[service]
        known = {env_name(cls, f) for f in cls.model_fields}
        required = {env_name(cls, f) for f, info in cls.model_fields.items() if info.is_required()}
        names = set(env_of(d))
        if objects_fixture == "default_objects":  # NOTES names what the defaults leave to the operator
            required -= {"KAFKA_BOOTSTRAP_SERVERS", "STORAGE_ENDPOINT", "STORAGE_PUBLIC_ENDPOINT",
                         "STORAGE_ACCESS_KEY", "STORAGE_SECRET_KEY"}
        pending = None
        if service == "worker":
            provider_known, provider_required, pending = _provider_env(d["metadata"]["labels"]["pixelmesh.dev/provider"])
            known |= provider_known
            required |= provider_required
        assert required <= names, (component(d), required - names)
        unknown = {n for n in names - known if not NOT_SETTINGS.match(n) and not (pending and pending.match(n))}
        assert not unknown, (component(d), unknown)


@pytest.mark.parametrize("service", ["pricing", "routing"])
def test_pricing_sqlite_is_writable_on_a_read_only_root(default_objects, all_objects, service) -> None:
    """Without a database, pricing's (and routing's) SQLite file lives on an emptyDir (one
    replica, as the chart insists); with one, the URL comes from the Secret and no such
    volume exists."""
    variable = f"{service.upper()}_DATABASE_URL"
    pricing = by_name(default_objects, "Deployment")[f"pm-pixelmesh-{service}"]
    url = env_of(pricing)[variable]["value"]
    assert url.startswith("sqlite+aiosqlite:////") and url.endswith(f"/{service}.db")
    directory = str(Path(url.removeprefix("sqlite+aiosqlite:///")).parent)
    pod = pricing["spec"]["template"]["spec"]
    (mount,) = [m for m in container(pricing)["volumeMounts"] if m["mountPath"] == directory]
    assert "readOnly" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    assert pricing["spec"]["replicas"] == 1
    shared = by_name(all_objects, "Deployment")[f"pm-pixelmesh-{service}"]
    assert "valueFrom" in env_of(shared)[variable]
    # no SQLite volume: /tmp, and the operator's self-hosted files (read-only) of the CI values
    mounts = container(shared)["volumeMounts"]
    assert [m["mountPath"] for m in mounts if m["name"] != "self-hosted"] == ["/tmp"]
    assert all(m["readOnly"] for m in mounts if m["name"] == "self-hosted")


def test_generated_secrets_are_long_and_referenced(default_objects) -> None:
    """The dev API key and webhook signing key are generated when not given (and kept across
    upgrades by looking up the release's Secret, which `helm template` cannot show)."""
    (secret,) = of_kind(default_objects, "Secret")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(stored) == {"dev-api-key", "webhook-signing-key"}  # no admin token: admin RPCs off
    assert len(stored["webhook-signing-key"]) >= 16 and len(stored["dev-api-key"]) >= 16
    deployments = by_name(default_objects, "Deployment")
    status = env_of(deployments["pm-pixelmesh-status"])
    assert status["WEBHOOK_SIGNING_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "webhook-signing-key"}
    assert "PRICING_ADMIN_TOKEN" not in env_of(deployments["pm-pixelmesh-pricing"])


def test_the_operator_token_reaches_pricing_and_status_alone(all_objects) -> None:
    """Pricing's admin RPCs and status's reads of every account's generations check one token."""
    deployments = by_name(all_objects, "Deployment")
    given = {name: env_of(d)["PRICING_ADMIN_TOKEN"] for name, d in deployments.items() if "PRICING_ADMIN_TOKEN" in env_of(d)}
    assert set(given) == {"pm-pixelmesh-pricing", "pm-pixelmesh-status"}
    assert given["pm-pixelmesh-pricing"] == given["pm-pixelmesh-status"]


def test_addresses_and_providers_point_at_real_services(all_objects) -> None:
    services = by_name(all_objects, "Service")
    for d in of_kind(all_objects, "Deployment"):
        for name, entry in env_of(d).items():
            if name.endswith("_ADDR"):
                host, port = entry["value"].split(":")
                assert int(port) in {p["port"] for p in services[host]["spec"]["ports"] if p["name"] == "grpc"}, entry
                target = by_name(all_objects, "Deployment")[host]
                assert target["metadata"]["labels"]["pixelmesh.dev/service"] == name.removesuffix("_ADDR").lower()
    routing = env_of(by_name(all_objects, "Deployment")["pm-pixelmesh-routing"])
    assert routing["ROUTING_PROVIDERS"]["value"] == ",".join(sorted(PROVIDERS))
    (ingress,) = of_kind(all_objects, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["port"]["number"] in {p["port"] for p in services[backend["name"]]["spec"]["ports"] if p["name"] == "http"}


def test_notes_tell_what_is_missing(helm, helm_env, tmp_path) -> None:
    """NOTES.txt renders (as a ConfigMap in a copy of the chart) and names unset essentials."""
    chart = tmp_path / "pixelmesh"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes_under_test.tpl").write_text('{{- define "notes-under-test" -}}\n' + notes + "\n{{- end -}}\n")
    (chart / "templates" / "notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include "notes-under-test" . | toJson }}\n'
    )
    text = render(helm, helm_env, "--show-only", "templates/notes.yaml", chart=chart)[0]["data"]["notes"]
    assert "WARNING" in text and "kafka.bootstrapServers" in text and "s3.endpoint" in text
    assert "kubectl -n pixelmesh port-forward svc/pm-pixelmesh-edge 8080:8080" in text
    configured = render(helm, helm_env, "--show-only", "templates/notes.yaml", "-f", str(CI_VALUES), chart=chart)[0]["data"]["notes"]
    assert "WARNING" not in configured and "https://images-api.example.com/" in configured
