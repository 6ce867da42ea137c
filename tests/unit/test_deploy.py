"""The deployment files say what the code does: restarts, health, drains, public links.

Docker and Kubernetes cannot run here; the files are parsed and held to the settings.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from services.core.settings import Settings, load_settings
from services.worker.worker import HAND_BACK_SECONDS
from tests.conftest import ROOT

COMPOSE = ROOT / "deploy" / "compose.yaml"
K8S = ROOT / "deploy" / "k8s" / "ferry.yaml"
ONE_SHOT = {"migrate", "minio-bucket"}  # run to completion; the others keep running
CHECK = ["ferry", "worker", "--check"]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def k8s() -> dict[tuple[str, str], Any]:
    docs = [d for d in yaml.safe_load_all(K8S.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def seconds(text: str) -> float:
    assert text.endswith("s"), text
    return float(text[:-1])


def test_every_compose_service_restarts_and_every_lasting_one_reports_its_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "on-failure", name
            assert "healthcheck" not in service, name
        else:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"][0] == "CMD", name
    assert services["worker"]["healthcheck"]["test"][1:] == CHECK


def test_a_compose_worker_is_given_its_drain_before_it_is_killed() -> None:
    doc = compose()
    settings = load_settings(doc["x-ferry-env"])
    grace = seconds(doc["services"]["worker"]["stop_grace_period"])
    assert grace > settings.worker_drain_seconds + HAND_BACK_SECONDS


def test_compose_download_links_point_where_the_host_reaches_minio() -> None:
    doc = compose()
    settings = load_settings(doc["x-ferry-env"])
    public = urlsplit(settings.s3_public_url)
    assert public.hostname == "localhost"
    published = {p.rsplit(":", 1)[-1]: p for p in doc["services"]["minio"]["ports"]}
    assert published[str(public.port)].startswith("127.0.0.1:")
    assert urlsplit(settings.s3_endpoint_url).hostname == "minio"  # what the containers use


def test_the_k8s_worker_drains_within_its_grace_period_and_is_probed_alive() -> None:
    pod = k8s()[("Deployment", "ferry-worker")]["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    env = {e["name"]: e["value"] for e in worker.get("env", [])}
    drain = load_settings(env).worker_drain_seconds
    assert drain == Settings().worker_drain_seconds
    assert pod["terminationGracePeriodSeconds"] > drain + HAND_BACK_SECONDS
    assert worker["livenessProbe"]["exec"]["command"] == CHECK


def test_k8s_pods_of_a_release_start_on_migrated_schema_with_nothing_named_per_release() -> None:
    docs = k8s()
    assert not [key for key in docs if key[0] == "Job"]  # a fixed-name Job blocks upgrades
    for name in ("ferry-api", "ferry-worker"):
        pod = docs[("Deployment", name)]["spec"]["template"]["spec"]
        assert [c["command"] for c in pod["initContainers"]] == [["ferry", "migrate"]]
