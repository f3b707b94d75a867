"""The Helm chart: lint, Kubernetes schema validity of every scenario, and what the manifests promise."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest
import yaml

from tests.deploy import settings_check
from tests.deploy.chart import (
    SCENARIOS,
    containers,
    helm_template,
    literal_env,
    of_kind,
    one,
    render,
    selects,
    workloads,
)
from tests.support.tools import CHART, CHART_FILES, run, tool

# Validated against the oldest Kubernetes the chart supports and the newest the schemas cover.
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
CRD_GROUPS = {"monitoring.coreos.com/v1"}


def test_there_are_scenarios_for_the_default_a_minimal_and_a_production_install():
    assert {"default-values.yaml", "minimal-values.yaml", "production-values.yaml"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_passes_in_strict_mode(scenario):
    done = run(tool("helm.sh"), "lint", "--strict", CHART, "-f", CHART / "ci" / scenario)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(scenario, kube_version):
    manifests = render(scenario)
    checked = 0
    for manifest in manifests:
        if manifest["apiVersion"] in CRD_GROUPS:
            continue  # no schemas for CRDs in kubernetes-validate: see test_the_prometheus_operator_resources_...
        kubernetes_validate.validate(manifest, kube_version, strict=True)
        checked += 1
    assert checked >= 4


def test_the_kubernetes_schema_check_rejects_a_broken_manifest():
    statefulset = copy.deepcopy(one(render("default-values.yaml"), "StatefulSet", "tagger"))
    statefulset["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="three"):
        kubernetes_validate.validate(statefulset, KUBE_VERSIONS[-1], strict=True)
    statefulset["spec"]["replicas"] = 3
    statefulset["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        kubernetes_validate.validate(statefulset, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("tagger.standbyReplicas=-1", "standbyReplicas"),
        ("tagger.store=leveldb", "store"),
        ("ingest.replica=3", "replica"),
        ("kafka.bootstrapServers=kafka", "bootstrapServers"),
        ("redis.url=http://redis:6379", "url"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("shop.timezone=Shanghai time", "timezone"),
    ],
)
def test_the_values_schema_rejects_a_bad_value_naming_it(override, named):
    code, _, err = helm_template("-f", str(CHART / "ci" / "default-values.yaml"), "--set", override)
    assert code != 0
    assert "values don't meet the specifications of the schema" in err
    assert named in err


def test_kafka_and_redis_addresses_are_required():
    code, _, err = helm_template()
    assert code != 0
    assert "bootstrapServers" in err
    assert "url" in err


def test_the_three_services_have_their_workloads_services_and_disruption_budgets():
    manifests = render("default-values.yaml")
    assert one(manifests, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]["args"] == ["ingest"]
    assert one(manifests, "StatefulSet", "tagger")["spec"]["template"]["spec"]["containers"][0]["args"] == ["tagger"]
    assert one(manifests, "Deployment", "notifier")["spec"]["template"]["spec"]["containers"][0]["args"] == ["notifier"]
    hpa = one(manifests, "HorizontalPodAutoscaler", "ingest")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(manifests, "Deployment", "ingest")["metadata"]["name"]
    assert "replicas" not in one(manifests, "Deployment", "ingest")["spec"]  # the HPA owns it
    assert {
        pdb["metadata"]["labels"]["app.kubernetes.io/component"] for pdb in of_kind(manifests, "PodDisruptionBudget")
    } == {
        "ingest",
        "tagger",
        "notifier",
    }
    assert of_kind(manifests, "ServiceAccount")[0]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_service_and_disruption_budget_selects_the_pods_of_exactly_one_workload(scenario):
    manifests = render(scenario)
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(manifests) if w["kind"] != "Job"]
    for service in of_kind(manifests, "Service"):
        assert sum(selects(service["spec"]["selector"], labels) for labels in pods) == 1, service["metadata"]["name"]
    for pdb in of_kind(manifests, "PodDisruptionBudget"):
        assert sum(selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in pods) == 1
    for workload in workloads(manifests):
        if workload["kind"] != "Job":
            assert selects(
                workload["spec"]["selector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"]
            )


def test_the_tagger_keeps_rocksdb_on_a_volume_per_replica_behind_a_headless_service():
    manifests = render("default-values.yaml")
    tagger = one(manifests, "StatefulSet", "tagger")
    headless = [s for s in of_kind(manifests, "Service") if s["metadata"]["name"] == tagger["spec"]["serviceName"]]
    assert headless
    assert headless[0]["spec"]["clusterIP"] == "None"
    claims = tagger["spec"]["volumeClaimTemplates"]
    assert [claim["metadata"]["name"] for claim in claims] == ["data"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    container = tagger["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "data", "mountPath": "/var/lib/tagstream"} in container["volumeMounts"]
    env = literal_env(container)
    assert env["TAGSTREAM_TAGGER__STORE"] == "rocksdb"
    assert env["TAGSTREAM_TAGGER__DATADIR"] == "/var/lib/tagstream"
    assert env["TAGSTREAM_TAGGER__STANDBY_REPLICAS"] == "1"


def test_standby_replicas_are_configurable_and_the_memory_store_needs_no_volume():
    manifests = render("minimal-values.yaml", "tagger.standbyReplicas=2")
    tagger = one(manifests, "StatefulSet", "tagger")
    assert literal_env(tagger["spec"]["template"]["spec"]["containers"][0])["TAGSTREAM_TAGGER__STANDBY_REPLICAS"] == "2"
    assert "volumeClaimTemplates" not in tagger["spec"]
    assert {"name": "data", "emptyDir": {}} in tagger["spec"]["template"]["spec"]["volumes"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_as_non_root_with_a_read_only_root_filesystem_and_no_capabilities(scenario):
    manifests = render(scenario)
    for workload, container in containers(manifests):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_service_container_probes_healthz_and_readyz_on_its_http_port(scenario):
    for workload, container in containers(render(scenario)):
        if workload["kind"] == "Job":
            continue
        assert [port["name"] for port in container["ports"]] == ["http"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_environment_names_real_settings_and_loads(scenario):
    for workload, container in containers(render(scenario)):
        env = literal_env(container)
        assert settings_check.unknown_settings(env) == [], workload["metadata"]["name"]
        settings = settings_check.load(env)
        assert settings.kafka.bootstrap_servers == env["TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS"]


@pytest.mark.parametrize(("sets", "zone"), [((), "UTC"), (("shop.timezone=Asia/Shanghai",), "Asia/Shanghai")])
def test_every_workload_gets_the_shop_time_zone(sets, zone):
    manifests = render("production-values.yaml", *sets)  # with the seed Job
    kinds = set()
    for workload, container in containers(manifests):
        kinds.add(workload["kind"])
        env = literal_env(container)
        assert env["TAGSTREAM_SHOP__TIMEZONE"] == zone, workload["metadata"]["name"]
        assert settings_check.load(env).shop.timezone == zone
    assert {"Deployment", "StatefulSet", "Job"} <= kinds


def test_each_tagger_pod_joins_the_consumer_group_as_a_static_member_named_after_itself():
    tagger = one(render("production-values.yaml"), "StatefulSet", "tagger")
    [container] = tagger["spec"]["template"]["spec"]["containers"]
    [instance] = [
        variable for variable in container["env"] if variable["name"] == "TAGSTREAM_TAGGER__GROUP_INSTANCE_ID"
    ]
    assert instance["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_credentials_come_only_from_the_existing_secret():
    manifests = render("production-values.yaml")
    assert of_kind(manifests, "Secret") == []
    ingest = one(manifests, "Deployment", "ingest")
    for _, container in containers(manifests):
        for variable in container["env"]:
            if "secretKeyRef" in variable.get("valueFrom", {}):
                assert variable["valueFrom"]["secretKeyRef"]["name"] == "tagstream-credentials"
            elif "valueFrom" in variable:  # only the pod's own name (static group membership)
                assert variable["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            assert "password" not in variable.get("value", "").lower()
        names = {variable["name"] for variable in container["env"]}
        assert {"TAGSTREAM_KAFKA__SASL_PASSWORD", "TAGSTREAM_REDIS__PASSWORD"} <= names
    keys_volume = next(v for v in ingest["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys")
    assert keys_volume["secret"]["secretName"] == "tagstream-credentials"
    env = literal_env(ingest["spec"]["template"]["spec"]["containers"][0])
    assert env["TAGSTREAM_INGEST__API_KEYS_FILE"] == "/etc/tagstream/api-keys/ingest-api-keys.json"


def test_notifier_secret_settings_are_read_from_the_existing_secret():
    manifests = render("production-values.yaml")
    container = one(manifests, "Deployment", "notifier")["spec"]["template"]["spec"]["containers"][0]
    variable = next(v for v in container["env"] if v["name"] == "TAGSTREAM_NOTIFIER__PUSH_AUTH")
    assert variable["valueFrom"]["secretKeyRef"] == {"name": "tagstream-credentials", "key": "push-auth"}


def test_the_webhook_signing_secret_and_provider_ca_are_mounted_from_the_existing_secret():
    manifests = render("production-values.yaml", "notifier.providerCaKey=provider-ca.pem")
    pod = one(manifests, "Deployment", "notifier")["spec"]["template"]["spec"]
    env = literal_env(pod["containers"][0])
    assert env["TAGSTREAM_NOTIFIER__SIGNING_SECRET_FILE"] == "/etc/tagstream/provider/notifier-signing-secret"
    assert env["TAGSTREAM_NOTIFIER__PROVIDER_CA_FILE"] == "/etc/tagstream/provider/provider-ca.pem"
    assert {"name": "provider", "mountPath": "/etc/tagstream/provider", "readOnly": True} in pod["containers"][0][
        "volumeMounts"
    ]
    volume = next(v for v in pod["volumes"] if v["name"] == "provider")
    assert volume["secret"]["secretName"] == "tagstream-credentials"
    assert [item["key"] for item in volume["secret"]["items"]] == ["notifier-signing-secret", "provider-ca.pem"]


def test_a_playbooks_change_rolls_the_notifier_and_the_seed_groups_reach_a_post_install_job():
    before = render("production-values.yaml")
    after = render("production-values.yaml", "notifier.playbooks=playbooks: []")
    checksum = [
        one(m, "Deployment", "notifier")["spec"]["template"]["metadata"]["annotations"]["checksum/playbooks"]
        for m in (before, after)
    ]
    assert checksum[0] != checksum[1]
    playbooks = one(after, "ConfigMap", "notifier")
    assert playbooks["data"]["playbooks.yaml"].strip() == "playbooks: []"

    job = one(before, "Job", "seed")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["tags", "apply", "-f", "/seed/groups.yaml"]
    groups = one(before, "ConfigMap", "seed")
    assert yaml.safe_load(groups["data"]["groups.yaml"])["groups"][0]["id"] == "value"
    reseeded = render("production-values.yaml", "seed.groups=groups: []")
    assert (
        one(reseeded, "Job", "seed")["spec"]["template"]["metadata"]["annotations"]["checksum/groups"]
        != job["spec"]["template"]["metadata"]["annotations"]["checksum/groups"]
    )


def _policies(manifests):
    return {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in of_kind(manifests, "NetworkPolicy")}


def _egress_ports(policy) -> set[int]:
    return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def test_network_policies_admit_only_the_http_port_and_the_configured_peers():
    policies = _policies(render("production-values.yaml"))
    assert set(policies) == {"ingest", "tagger", "projector", "notifier", "sync", "seed"}
    ingest_from = policies["ingest"]["spec"]["ingress"][0]["from"]
    names = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in ingest_from]
    assert names == ["shop", "monitoring"]
    assert ingest_from[0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "storefront"}}
    tagger_from = policies["tagger"]["spec"]["ingress"][0]["from"]
    assert [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in tagger_from] == [
        "monitoring"
    ]
    assert policies["seed"]["spec"]["ingress"] == []


@pytest.mark.parametrize("scenario", ["default-values.yaml", "production-values.yaml"])
def test_every_egress_rule_names_its_destinations_and_each_component_reaches_only_what_it_uses(scenario):
    policies = _policies(render(scenario))
    for policy in policies.values():
        for rule in policy["spec"]["egress"]:
            assert rule.get("to"), f"{policy['metadata']['name']}: an egress rule open to every destination"
        dns = policy["spec"]["egress"][0]
        assert {"port": 53, "protocol": "UDP"} in dns["ports"]
        assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    kafka, redis = (9092, 6379) if scenario == "default-values.yaml" else (9096, 6380)
    if "seed" in policies:  # the seed Job is on in the production scenario
        assert _egress_ports(policies["seed"]) == {53, kafka}  # tags apply publishes straight to Kafka
    assert _egress_ports(policies["tagger"]) == _egress_ports(policies["ingest"]) == {53, kafka, redis}
    providers = {53, kafka, redis} | ({443} if scenario == "production-values.yaml" else set())
    assert _egress_ports(policies["notifier"]) == providers  # no provider peers configured: no way out to them
    if "sync" in policies:  # on in the production scenario, towards WeCom through its proxy's addresses
        assert _egress_ports(policies["sync"]) == {53, kafka, redis, 443}
        assert policies["sync"]["spec"]["egress"][-1]["to"] == [{"ipBlock": {"cidr": "198.51.100.0/24"}}]


def test_the_ingest_api_admits_only_labelled_clients_by_default():
    policies = _policies(render("default-values.yaml"))
    assert policies["ingest"]["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"tagstream.io/ingest-client": "true"}}}
    ]
    assert "from" not in policies["tagger"]["spec"]["ingress"][0]  # health and metrics only: metricsFrom is []
    kafka = policies["tagger"]["spec"]["egress"][1]
    assert kafka["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "data"}


def test_a_network_policy_without_kafka_or_redis_peers_is_refused_with_what_to_set():
    code, _, err = helm_template(
        "--set", "kafka.bootstrapServers=kafka:9092", "--set", "redis.url=redis://redis:6379/0"
    )
    assert code != 0
    assert "networkPolicy.kafka.to is required" in err
    code, _, err = helm_template(
        "-f", str(CHART / "ci" / "default-values.yaml"), "--set-json", "networkPolicy.redis.to=[]"
    )
    assert code != 0
    assert "networkPolicy.redis.to is required" in err


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("networkPolicy.kafka.to[0].ipBlock.cidr=10.0.0.1", "cidr"),
        ("networkPolicy.providers.ports[0]=70000", "ports"),
        ("networkPolicy.egress[0].ports[0].port=9092", "egress"),
        ("networkPolicy.ingestFrom[0].podSelectr.x=y", "podSelectr"),
    ],
)
def test_the_values_schema_rejects_a_bad_network_policy_value_naming_it(override, named):
    code, _, err = helm_template("-f", str(CHART / "ci" / "default-values.yaml"), "--set", override)
    assert code != 0
    assert "values don't meet the specifications of the schema" in err
    assert named in err


def test_the_services_listen_on_every_interface_of_their_pod():
    manifests = render("default-values.yaml")
    hosts = {
        "ingest": "TAGSTREAM_INGEST__HOST",
        "tagger": "TAGSTREAM_TAGGER__WEB_HOST",
        "notifier": "TAGSTREAM_NOTIFIER__WEB_HOST",
    }
    for workload, container in containers(manifests):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in hosts:
            assert literal_env(container)[hosts[component]] == "0.0.0.0"


def test_the_prometheus_operator_resources_are_well_formed_and_read_the_charts_files():
    manifests = render("production-values.yaml")
    [monitor] = of_kind(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]
    [expression] = selector["matchExpressions"]
    scraped = [
        service
        for service in of_kind(manifests, "Service")
        if selects(selector["matchLabels"], service["metadata"]["labels"])
        and service["metadata"]["labels"][expression["key"]] in expression["values"]
    ]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped) == [
        "ingest",
        "notifier",
        "projector",
        "sync",
        "tagger",
    ]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for service in scraped:
        assert endpoint["port"] in [port["name"] for port in service["spec"]["ports"]]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["crm"]}

    [rule] = of_kind(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load((CHART_FILES / "alerts.yaml").read_text(encoding="utf-8"))
    for group in rule["spec"]["groups"]:
        assert group["name"]
        assert group["rules"]
        for alert in group["rules"]:
            assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
            assert alert["expr"]

    dashboard = one(manifests, "ConfigMap", "metrics")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["tagstream.json"]) == json.loads((CHART_FILES / "dashboard.json").read_text())


def test_monitoring_resources_are_off_unless_asked_for():
    manifests = render("default-values.yaml")
    assert of_kind(manifests, "ServiceMonitor") == of_kind(manifests, "PrometheusRule") == []
    assert [m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")] == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("kafka.securityProtocol=SASL_SSL", "/kafka/saslMechanism"),
        ("kafka.securityProtocol=SASL_SSL,kafka.saslMechanism=PLAIN,kafka.saslUsername=u", "set existingSecret"),
        ("redis.auth=true", "redis.auth is true"),
        ("notifier.settings.sms_url=https://sms.example.cn/send", "set notifier.signingSecretKey"),
        ("sync.enabled=true,sync.settings.webhook_url=https://crm.example.cn/tags", "set sync.signingSecretKey"),
        ("sync.enabled=true,sync.signingSecretKey=s", "needs sync.settings.webhook_url"),
        ("sync.enabled=true,sync.adapter=wecom,sync.settings.wecom_corp_id=ww1", "set sync.wecomSecretKey"),
    ],
)
def test_credentials_that_would_be_missing_at_start_are_refused_at_install(overrides, message):
    code, _, err = helm_template("-f", str(CHART / "ci" / "default-values.yaml"), "--set", overrides)
    assert code != 0
    assert message in err


def test_the_sync_sink_is_off_by_default_and_runs_as_its_own_deployment_when_enabled():
    assert [w for w in workloads(render("default-values.yaml")) if w["metadata"]["name"].endswith("-sync")] == []
    manifests = render("production-values.yaml")
    pod = one(manifests, "Deployment", "sync")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["sync"]
    env = literal_env(container)
    assert env["TAGSTREAM_SYNC__ADAPTER"] == "wecom"
    assert env["TAGSTREAM_SYNC__WEB_HOST"] == "0.0.0.0"
    assert env["TAGSTREAM_SYNC__WECOM_CORP_ID"] == "ww0123456789abcdef"
    assert env["TAGSTREAM_SYNC__WECOM_SECRET_FILE"] == "/etc/tagstream/sync/wecom-customer-contact-secret"
    [volume] = [v for v in pod["volumes"] if v["name"] == "sync-secrets"]
    assert volume["secret"]["secretName"] == "tagstream-credentials"
    assert [item["key"] for item in volume["secret"]["items"]] == ["wecom-customer-contact-secret"]


def test_the_projector_runs_in_the_workers_by_default_and_as_its_own_deployment_when_enabled():
    default = render("default-values.yaml")
    assert [w for w in workloads(default) if w["metadata"]["name"].endswith("-projector")] == []
    [worker] = one(default, "StatefulSet", "tagger")["spec"]["template"]["spec"]["containers"]
    assert "TAGSTREAM_TAGGER__PROJECTOR" not in literal_env(worker)  # the setting's default: they project
    manifests = render("production-values.yaml")
    deployment = one(manifests, "Deployment", "projector")
    assert deployment["spec"]["replicas"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["projector"]
    env = literal_env(container)
    assert env["TAGSTREAM_TAGGER__WEB_HOST"] == "0.0.0.0"
    assert env["TAGSTREAM_TAGGER__PROJECTOR_WEB_PORT"] == "8083"
    assert container["ports"] == [{"name": "http", "containerPort": 8083, "protocol": "TCP"}]
    [worker] = one(manifests, "StatefulSet", "tagger")["spec"]["template"]["spec"]["containers"]
    assert literal_env(worker)["TAGSTREAM_TAGGER__PROJECTOR"] == "false"
    # the workers' settings too: the same app id is the same consumer group as the workers' own projection
    renamed = render("production-values.yaml", "tagger.settings.app_id=shop-a")
    [container] = one(renamed, "Deployment", "projector")["spec"]["template"]["spec"]["containers"]
    assert literal_env(container)["TAGSTREAM_TAGGER__APP_ID"] == "shop-a"
