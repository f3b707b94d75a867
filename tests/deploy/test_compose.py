"""docker-compose.yml is a valid Compose project that wires the stack as documented.

There is no Docker engine here: validity is checked with compose-go, the loader `docker compose config`
uses (scripts/compose.sh), and nothing is pulled, built or started.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import settings_check
from tests.support.tools import CHART_FILES, REPO_ROOT, run, run_ok, tool

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "compose" / "prometheus.yml"
SERVICES = {"tagger": 6066, "ingest": 8080, "notifier": 8081}
# Mounted files another branch adds (the notifier's example playbooks); listed so nothing else may be missing.
PENDING_FILES: set[Path] = set()


# What a developer puts in .env; the publish address is reset so that the developer's own shell cannot change it.
DOT_ENV = {"TAGSTREAM_REDIS_PASSWORD": "a-local-redis-password", "TAGSTREAM_PUBLISH_ADDRESS": ""}


def compose_config(path: Path = COMPOSE_FILE, env: Mapping[str, str] = DOT_ENV) -> dict[str, Any]:
    validator = tool("compose.sh")
    model: dict[str, Any] = yaml.safe_load(run_ok(validator, path, cwd=path.parent, env=env))
    return model


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return compose_config()


def test_the_validator_rejects_what_docker_compose_config_rejects(tmp_path):
    broken = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    broken["services"]["tagger"]["depends_on"] = {"zookeeper": {"condition": "service_healthy"}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = run(tool("compose.sh"), tmp_path / "docker-compose.yml", cwd=tmp_path, env=DOT_ENV)
    assert done.returncode == 1
    assert 'depends on undefined service "zookeeper"' in done.stderr

    broken = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    broken["services"]["redis"]["healthcheck"]["interval"] = "often"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = run(tool("compose.sh"), tmp_path / "docker-compose.yml", cwd=tmp_path, env=DOT_ENV)
    assert done.returncode == 1
    assert "services[redis].healthcheck.interval" in done.stderr


def test_the_stack_is_kafka_redis_prometheus_grafana_and_the_three_services_from_the_dockerfile(project):
    services = project["services"]
    assert set(services) == {"kafka", "redis", "prometheus", "grafana", "tags-apply", *SERVICES}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in [*SERVICES, "tags-apply"]:
        service = services[name]
        assert service["build"]["context"] == str(REPO_ROOT)
        assert Path(service["build"]["dockerfile"]).resolve() == REPO_ROOT / "Dockerfile"
        assert service["user"] == "10001:10001"
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
    for name in SERVICES:
        assert services[name]["command"] == [name]
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
        assert f":{SERVICES[name]}/" in " ".join(services[name]["healthcheck"]["test"])
    assert services["tags-apply"]["command"] == ["tags", "apply", "-f", "/seed/groups.yaml"]


def test_prometheus_and_grafana_mount_the_charts_own_alerts_and_dashboard(project):
    mounts = {
        (name, volume["target"]): Path(volume["source"])
        for name, service in project["services"].items()
        for volume in service.get("volumes", [])
        if volume["type"] == "bind"
    }
    assert mounts["prometheus", "/etc/prometheus/rules/tagstream.yaml"] == CHART_FILES / "alerts.yaml"
    assert mounts["grafana", "/var/lib/grafana/dashboards/tagstream.json"] == CHART_FILES / "dashboard.json"
    assert mounts["prometheus", "/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    missing = {source for source in mounts.values() if not source.exists()} - PENDING_FILES
    assert missing == set()


def test_prometheus_scrapes_every_service_where_it_listens_and_loads_the_rules(project):
    run_ok(tool("promtool.sh"), "check", "config", "--syntax-only", PROMETHEUS_CONFIG)
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        if "static_configs" in job
        for target in job["static_configs"][0]["targets"]
    }
    for name, port in SERVICES.items():
        assert targets[f"tagstream-{name}"] == f"{name}:{port}"
        assert {"target": port, "published": str(port), "protocol": "tcp", "mode": "ingress"}.items() <= (
            project["services"][name]["ports"][0].items()
        )
    assert "/etc/prometheus/rules/*.yaml" in config["rule_files"]


def test_every_service_environment_names_real_settings_and_loads(project):
    for name in [*SERVICES, "tags-apply"]:
        env = project["services"][name]["environment"]
        assert settings_check.unknown_settings(env) == [], name
        settings = settings_check.load(env)
        assert settings.kafka.bootstrap_servers == "kafka:9092"
        assert settings.redis.url == "redis://redis:6379/0"


def test_every_port_is_published_on_loopback_unless_the_publish_address_is_set(project):
    published = {
        (name, port["target"]): port.get("host_ip")
        for name, service in project["services"].items()
        for port in service.get("ports", [])
    }
    assert {name for name, _ in published} >= {"kafka", "redis", *SERVICES}
    assert set(published.values()) == {"127.0.0.1"}
    everywhere = compose_config(env={**DOT_ENV, "TAGSTREAM_PUBLISH_ADDRESS": "0.0.0.0"})
    assert {port["host_ip"] for port in everywhere["services"]["ingest"]["ports"]} == {"0.0.0.0"}


def test_the_services_listen_on_every_interface_of_their_container(project):
    env = {name: project["services"][name]["environment"] for name in SERVICES}
    assert env["ingest"]["TAGSTREAM_INGEST__HOST"] == "0.0.0.0"
    assert env["tagger"]["TAGSTREAM_TAGGER__WEB_HOST"] == "0.0.0.0"
    assert env["notifier"]["TAGSTREAM_NOTIFIER__WEB_HOST"] == "0.0.0.0"


def test_redis_requires_the_password_from_dot_env_and_every_service_uses_it(project):
    redis = project["services"]["redis"]
    assert redis["command"][-2:] == ["--requirepass", DOT_ENV["TAGSTREAM_REDIS_PASSWORD"]]
    assert redis["environment"]["REDISCLI_AUTH"] == DOT_ENV["TAGSTREAM_REDIS_PASSWORD"]  # the healthcheck's ping
    for name in [*SERVICES, "tags-apply"]:
        settings = settings_check.load(project["services"][name]["environment"])
        assert settings.redis.password is not None
        assert settings.redis.password.get_secret_value() == DOT_ENV["TAGSTREAM_REDIS_PASSWORD"]


def test_without_a_redis_password_the_project_does_not_load_and_says_what_to_set(tmp_path):
    alone = tmp_path / "docker-compose.yml"  # away from a developer's own .env
    alone.write_text(COMPOSE_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    done = run(tool("compose.sh"), alone, cwd=tmp_path, env={"TAGSTREAM_REDIS_PASSWORD": ""})
    assert done.returncode == 1
    assert "set TAGSTREAM_REDIS_PASSWORD in .env" in done.stderr


def test_every_service_gets_the_shop_time_zone_from_the_host_environment_or_utc():
    for zone, expected in (("", "UTC"), ("Asia/Shanghai", "Asia/Shanghai")):
        project = compose_config(env={**DOT_ENV, "TAGSTREAM_SHOP__TIMEZONE": zone})  # interpolated like compose
        for name in [*SERVICES, "tags-apply"]:
            assert project["services"][name]["environment"]["TAGSTREAM_SHOP__TIMEZONE"] == expected, name


def test_the_sync_sink_runs_only_with_its_profile_and_is_scraped_only_while_it_runs(project):
    assert "sync" not in project["services"]
    with_sync = compose_config(env={**DOT_ENV, "COMPOSE_PROFILES": "sync", "TAGSTREAM_SYNC__ADAPTER": "wecom"})
    sync = with_sync["services"]["sync"]
    assert sync["command"] == ["sync"]
    assert sync["read_only"] is True
    assert "/readyz" in " ".join(sync["healthcheck"]["test"])
    assert ":8082/" in " ".join(sync["healthcheck"]["test"])
    env = {name: value for name, value in sync["environment"].items() if value is not None}
    assert settings_check.unknown_settings(sync["environment"]) == []
    settings = settings_check.load(env)
    assert (settings.sync.adapter, settings.sync.web_host) == ("wecom", "0.0.0.0")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "tagstream-sync"]
    assert job["dns_sd_configs"] == [{"names": ["sync"], "type": "A", "port": 8082}]
