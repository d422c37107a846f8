"""The web service on a real broker with the real fleet: two `ridestream serve` replicas, the
three services, rides requested and driven over HTTP, predictions followed over SSE."""

from __future__ import annotations

import os
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from confluent_kafka import TopicPartition

from shared.contract.topics import create_topics
from shared.kafka.clients import make_admin, make_consumer
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model
from tests.integration.fleet import Fleet, fleet_env, read_all, values
from tests.integration.web import (
    SseReader,
    read_sse,
    start_server,
    stop_server,
    wait_ready,
)

RIDE = {"pickup_zone": 161, "dropoff_zone": 236, "trip_distance_mi": 2.4, "passenger_count": 1,
        "payment_type": 1, "service": "yellow"}


@pytest.fixture(scope="module")
def web(kafka_bootstrap):
    """The fleet (duration, tip, cost) and two web replicas, A and B, on one namespace."""
    settings = Settings(bootstrap_servers=kafka_bootstrap, namespace=f"t{uuid.uuid4().hex[:10]}.",
                        events_partitions=3, predictions_partitions=3, retention_hours=0, _env_file=None)
    create_topics(make_admin(settings), settings.topic_specs())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDESTREAM_")}
    env = fleet_env({**env, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, "RIDESTREAM_NAMESPACE": settings.namespace,
                     "RIDESTREAM_RETENTION_HOURS": "0", "RIDESTREAM_WEB_DRIVER_SPEEDUP": "600"})
    fleet = Fleet(env)
    logs = Path(tempfile.mkdtemp(prefix="ridestream-web-"))
    servers = []
    try:
        for service in ("duration", "tip", "cost"):
            fleet.start(service)
        servers = [start_server(env, logs), start_server(env, logs)]
        for s in servers:
            wait_ready(s)
        yield settings, servers[0].url, servers[1].url, fleet, servers
    finally:
        for s in servers:
            stop_server(s)
        fleet.close()


def request_ride(url: str, body: dict | None = None, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(f"{url}/v1/rides", json=body or RIDE, headers=headers, timeout=30)


def events_end(settings: Settings) -> int:
    topic = settings.topics.events
    c = make_consumer(settings, f"{settings.namespace}ends")
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


def ride_predictions(settings: Settings, ride_id: str) -> list[dict]:
    return [p for s in ("duration", "tip", "cost")
            for p in values(read_all(settings, settings.topics.predictions(s))) if p["ride_id"] == ride_id]


def test_ride_requested_over_http_gets_its_estimate_then_every_prediction_over_sse(web):
    settings, a, b, fleet, _ = web
    created = request_ride(a)
    assert created.status_code == 201, created.text
    ride = created.json()
    assert ride["model_version"] == load_model("initial_duration").version and ride["initial_duration_min"] > 0
    ride_id = ride["ride_id"]
    reader = SseReader(f"{b}/v1/rides/{ride_id}/events").start()  # the other replica follows it
    try:
        def has(preds: list[dict], service: str, **where) -> bool:
            return any(p["service"] == service and all(p.get(k) == v for k, v in where.items()) for p in preds)

        assert reader.wait(lambda p: has(p, "tip") and has(p, "cost") and has(p, "duration", initial=True)), \
            (reader.predictions(), fleet.output())
        assert httpx.post(f"{a}/v1/rides/{ride_id}/start", timeout=30).status_code == 200
        progress = {"elapsed_min": 3.0, "distance_done_mi": 0.8, "distance_left_mi": 1.6}
        assert httpx.post(f"{b}/v1/rides/{ride_id}/progress", json=progress, timeout=30).status_code == 200
        assert reader.wait(lambda p: any(x["service"] == "duration" and x["event_id"] == f"{ride_id}-2" for x in p)), \
            (reader.predictions(), fleet.output())
    finally:
        reader.close()
    preds = reader.predictions()
    initial = next(p for p in preds if p.get("initial"))
    assert initial["value"] == ride["initial_duration_min"] and initial["event_id"] == f"{ride_id}-0"
    corrected = next(p for p in preds if p["service"] == "duration" and p["event_id"] == f"{ride_id}-2")
    assert corrected["value"] >= progress["elapsed_min"] and corrected["remaining_min"] >= 0
    assert {p["model_version"] for p in preds if p["service"] == "tip"} == {load_model("tip").version}
    # what the stream gave is what the topics hold for this ride, each once
    assert sorted(p["prediction_id"] for p in preds) == sorted(p["prediction_id"] for p in ride_predictions(settings, ride_id))
    state = httpx.get(f"{a}/v1/rides/{ride_id}", timeout=30).json()
    assert state["stage"] == "in_progress"
    assert set(state["predictions"]) == {"initial", "duration", "tip", "cost"}
    assert state["predictions"]["duration"]["remaining_min"] == corrected["remaining_min"]


@pytest.mark.parametrize("change, field", [
    ({"pickup_zone": 999}, "pickup_zone"), ({"trip_distance_mi": -1.0}, "trip_distance_mi"),
    ({"payment_type": 9}, "payment_type"), ({"service": "blue"}, "service"), ({"pickup_zone": "161"}, "pickup_zone"),
    ({"dropoff_zone": None}, "dropoff_zone"),
])
def test_bad_requests_are_422_with_the_field_and_nothing_is_published(web, change, field):
    settings, a, *_ = web
    before = events_end(settings)
    body = {k: v for k, v in {**RIDE, **change}.items() if v is not None}
    r = request_ride(a, body)
    assert r.status_code == 422, r.text
    assert r.json()["fields"][0]["field"] == field and r.json()["fields"][0]["reason"]
    assert events_end(settings) == before


def test_a_retried_request_is_one_ride_on_any_replica(web):
    settings, a, b, *_ = web
    key = uuid.uuid4().hex
    with ThreadPoolExecutor(4) as pool:  # the same request to both replicas at once, twice each
        answers = list(pool.map(lambda url: request_ride(url, key=key), [a, b, a, b]))
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    ride_ids = {r.json()["ride_id"] for r in answers}
    assert len(ride_ids) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 3
    later = request_ride(b, key=key)
    assert later.json() == answers[0].json()
    assert request_ride(a, {**RIDE, "trip_distance_mi": 9.0}, key=key).status_code == 422  # the key, another body
    requested = [e for e in values(read_all(settings, settings.topics.events))
                 if e["event_type"] == "ride_requested" and e["ride_id"] in ride_ids]
    assert len(requested) == 1


def test_sse_resumes_on_another_replica_with_nothing_missed(web):
    settings, a, b, fleet, _ = web
    ride_id = request_ride(a).json()["ride_id"]
    first = read_sse(f"{a}/v1/rides/{ride_id}/events", until=lambda p: len(p) >= 2)  # then it disconnects
    last_id = [e.id for e in first if e.event == "prediction"][-1]
    # while it is away, the ride goes on
    assert httpx.post(f"{b}/v1/rides/{ride_id}/start", timeout=30).status_code == 200
    for i in (1, 2):
        body = {"elapsed_min": 2.0 * i, "distance_done_mi": 0.6 * i, "distance_left_mi": 2.4 - 0.6 * i}
        assert httpx.post(f"{a}/v1/rides/{ride_id}/progress", json=body, timeout=30).status_code == 200
    # request: initial, duration, tip, cost; start: duration; two progress: duration each
    assert fleet and _wait_count(settings, ride_id, 7)
    expected = sorted(p["prediction_id"] for p in ride_predictions(settings, ride_id))
    got_first = [e.data["prediction_id"] for e in first if e.event == "prediction"]
    second = read_sse(f"{b}/v1/rides/{ride_id}/events", headers={"Last-Event-ID": last_id},
                      until=lambda p: len(got_first) + len(p) >= len(expected))
    got_second = [e.data["prediction_id"] for e in second if e.event == "prediction"]
    assert sorted(got_first + got_second) == expected  # everything, each once


def _wait_count(settings: Settings, ride_id: str, n: int) -> bool:
    from tests.integration.fleet import wait_for
    return wait_for(lambda: len(ride_predictions(settings, ride_id)) >= n, timeout=90, every=1.0)


def test_unknown_rides_are_404_and_events_out_of_order_409(web):
    _, a, b, *_ = web
    assert httpx.post(f"{a}/v1/rides/no-such-ride/start", timeout=30).status_code == 404
    assert httpx.get(f"{b}/v1/rides/no-such-ride", timeout=30).status_code == 404
    assert httpx.get(f"{b}/v1/rides/no-such-ride/events", timeout=30).status_code == 404
    ride_id = request_ride(a).json()["ride_id"]
    progress = {"elapsed_min": 1.0, "distance_done_mi": 0.2, "distance_left_mi": 2.2}
    early = httpx.post(f"{b}/v1/rides/{ride_id}/progress", json=progress, timeout=30)  # before start, the other replica
    assert early.status_code == 409 and "requested" in early.json()["error"]
    assert httpx.post(f"{b}/v1/rides/{ride_id}/start", timeout=30).status_code == 200
    assert httpx.post(f"{a}/v1/rides/{ride_id}/start", timeout=30).status_code == 409  # twice, across replicas
    done = {"duration_min": 9.5, "fare_amount": 11.0, "tip_amount": 2.0, "total_amount": 16.3}
    assert httpx.post(f"{a}/v1/rides/{ride_id}/complete", json=done, timeout=30).status_code == 200
    after = httpx.post(f"{b}/v1/rides/{ride_id}/progress", json=progress, timeout=30)
    assert after.status_code == 409 and "completed" in after.json()["error"]
    assert httpx.get(f"{b}/v1/rides/{ride_id}", timeout=30).json()["stage"] == "completed"


TEST_OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture
def chrome():
    """A real headless Chromium driven by Debian's chromedriver (make test installs both where root)."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        pytest.skip("chromium or chromium-driver is not installed (make test installs them where it is root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='ridestream-chromium-')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_rider_page_requests_a_ride_and_shows_it_live(web, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    _, a, *_ = web
    TEST_OUTPUT.mkdir(exist_ok=True)
    chrome.get(a + "/")
    wait = WebDriverWait(chrome, 90, poll_frequency=0.3)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "pickup")).options) > 200)  # zones by name
    Select(chrome.find_element(By.ID, "pickup")).select_by_visible_text("JFK Airport")
    Select(chrome.find_element(By.ID, "dropoff")).select_by_visible_text("Times Sq/Theatre District")
    chrome.find_element(By.ID, "distance").clear()
    chrome.find_element(By.ID, "distance").send_keys("17.5")
    chrome.find_element(By.ID, "request").click()
    wait.until(lambda d: d.find_element(By.ID, "initial").text not in ("", "–"))  # the estimate, from the response
    initial = float(chrome.find_element(By.ID, "initial").text)
    ride_id = chrome.find_element(By.ID, "ride-id").text
    assert ride_id.startswith("web-") and initial > 0
    chrome.save_screenshot(str(TEST_OUTPUT / "web-rider-requested.png"))
    # the fleet's answers arrive, then the simulated driver starts and reports progress: values change
    wait.until(lambda d: d.find_element(By.ID, "tip").text not in ("", "–") and d.find_element(By.ID, "cost").text not in ("", "–"))
    wait.until(lambda d: d.find_element(By.ID, "remaining").text not in ("", "–"))
    first_left = chrome.find_element(By.ID, "remaining").text
    wait.until(lambda d: d.find_element(By.ID, "remaining").text != first_left)
    assert chrome.find_element(By.ID, "stage").text in ("started", "in progress", "completed")
    chrome.save_screenshot(str(TEST_OUTPUT / "web-rider-live.png"))
    state = httpx.get(f"{a}/v1/rides/{ride_id}", timeout=30).json()
    assert state["request"]["pickup_zone"] == 132 and state["request"]["dropoff_zone"] == 230
    # the operator page shows the fleet and the versions serving
    chrome.get(a + "/ops")
    wait.until(lambda d: "v" in d.find_element(By.ID, "fleet").text and d.find_element(By.ID, "dlq").text != "–")
    assert load_model("tip").version in chrome.find_element(By.ID, "fleet").text
    chrome.save_screenshot(str(TEST_OUTPUT / "web-operator.png"))
