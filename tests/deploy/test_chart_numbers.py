"""Large numbers from a values file reach the pods whole: 10000000, never Go's 1e+07."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy import settings_check
from tests.deploy.chart import helm_template, literal_env, of_kind, one
from tests.support.tools import CHART

# A values file (not --set, which helm parses into int64): YAML numbers reach the templates as float64.
BIG_VALUES = """
kafka: {partitions: 1200000, replicationFactor: 3}
extraEnv: {TAGSTREAM_REDIS__HISTORY_LIMIT: 5000000}
ingest:
  settings: {max_body_bytes: 10000000, producer_buffer_bytes: 268435456, send_timeout_s: 0.25}
  resources: {requests: {cpu: 250m, memory: 10000000000}, limits: {memory: 10000000000}}
tagger:
  replicas: 3
  standbyReplicas: 1000000
  terminationGracePeriodSeconds: 10000000
  settings: {stream_buffer: 1000000, batch_within_s: 0.005, projector: false}
  probes: {startupFailureThreshold: 1000000}
notifier:
  terminationGracePeriodSeconds: 1000000
  settings: {keep_decisions_days: 1000000, lease_s: 1500000.5}
seed: {enabled: true, backoffLimit: 1000000}
"""


def test_numbers_of_a_million_and_more_in_a_values_file_render_as_whole_numbers(tmp_path: Path) -> None:
    values = tmp_path / "big-values.yaml"
    values.write_text(BIG_VALUES, encoding="utf-8")
    code, out, err = helm_template("-f", str(CHART / "ci" / "production-values.yaml"), "-f", str(values))
    assert code == 0, err
    assert "e+" not in out, [line for line in out.splitlines() if "e+" in line]
    manifests = tuple(document for document in yaml.safe_load_all(out) if document)

    ingest = one(manifests, "Deployment", "ingest")["spec"]["template"]["spec"]
    env = literal_env(ingest["containers"][0])
    assert env["TAGSTREAM_INGEST__MAX_BODY_BYTES"] == "10000000"
    assert env["TAGSTREAM_INGEST__PRODUCER_BUFFER_BYTES"] == "268435456"
    assert env["TAGSTREAM_INGEST__SEND_TIMEOUT_S"] == "0.25"
    assert env["TAGSTREAM_KAFKA__PARTITIONS"] == "1200000"
    assert env["TAGSTREAM_REDIS__HISTORY_LIMIT"] == "5000000"
    assert ingest["containers"][0]["resources"]["limits"]["memory"] == 10000000000
    settings = settings_check.load(env)
    assert settings.ingest.max_body_bytes == 10_000_000
    assert settings.kafka.partitions == 1_200_000

    tagger = one(manifests, "StatefulSet", "tagger")["spec"]["template"]["spec"]
    env = literal_env(tagger["containers"][0])
    assert env["TAGSTREAM_TAGGER__STREAM_BUFFER"] == "1000000"
    assert env["TAGSTREAM_TAGGER__BATCH_WITHIN_S"] == "0.005"
    assert env["TAGSTREAM_TAGGER__PROJECTOR"] == "false"
    assert env["TAGSTREAM_TAGGER__STANDBY_REPLICAS"] == "1000000"
    assert tagger["terminationGracePeriodSeconds"] == 10_000_000
    assert tagger["containers"][0]["startupProbe"]["failureThreshold"] == 1_000_000
    assert settings_check.load(env).tagger.stream_buffer == 1_000_000

    notifier = one(manifests, "Deployment", "notifier")["spec"]["template"]["spec"]
    env = literal_env(notifier["containers"][0])
    assert env["TAGSTREAM_NOTIFIER__KEEP_DECISIONS_DAYS"] == "1000000"
    assert env["TAGSTREAM_NOTIFIER__LEASE_S"] == "1500000.5"
    assert notifier["terminationGracePeriodSeconds"] == 1_000_000

    (seed,) = of_kind(manifests, "Job")
    assert seed["spec"]["backoffLimit"] == 1_000_000
