"""The page at / in headless Chromium (Debian's, driven by Playwright): draw a digit, fill a trip.

Needs /usr/bin/chromium (`make test` installs Debian's package when it can) and the playwright
package; without them these tests skip with the reason. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import imagesets
from service import SCRIPT, call, serving

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("RAYLINE_CHROMIUM", "/usr/bin/chromium"))
# Flags for a closed network and a root user (see the machine notes): no sandbox, no background calls.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as play:
        launched = play.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield launched
        launched.close()


def trained_env(root: Path) -> dict[str, str]:
    env = {**os.environ, "RAYLINE_HOME": str(root / "home")}
    env.pop("RAY_ADDRESS", None)
    return env


def train(spec_args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([str(SCRIPT), "train", *spec_args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return re.search(r"run ([0-9a-f]{32})", done.stdout).group(1)  # type: ignore[union-attr]


def test_draw_a_digit_and_see_the_prediction(browser: Any, tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=40, classes=[1, 7])
    env = trained_env(tmp_path)
    spec = [str(EXAMPLES / "mnist.yaml"), "--set", f"data.source={source}", "--set", "model.epochs=2"]
    run_id = train(spec, env)
    with serving([*spec, "--model", run_id], env) as (url, _):
        page = browser.new_page()
        page.goto(f"{url}/")
        assert run_id in page.content()
        box = page.locator("#pad").bounding_box()
        # a tall vertical stroke: a "1"
        x = box["x"] + box["width"] / 2
        page.mouse.move(x, box["y"] + 40)
        page.mouse.down()
        for step in range(1, 21):
            page.mouse.move(x, box["y"] + 40 + step * 10)
        page.mouse.up()
        page.click("#predict")
        page.wait_for_function("document.getElementById('result').textContent.startsWith('label')", timeout=30_000)
        result = page.locator("#result").text_content()
        assert re.match(r"label: [17]  \(probability [01]\.\d{3}\)", result or ""), result
        assert page.locator("#probs tr").count() == 2
        # /explain's saliency map is drawn beside the canvas: bright where the stroke sways the answer
        page.wait_for_selector("#saliency:not([hidden])", timeout=30_000)
        lit = page.evaluate(
            """() => { const c = document.getElementById('saliency');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 40) n++; return n / (d.length / 4); }"""
        )
        assert 0 < lit < 1, lit
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-digit.png"))
        page.close()


@pytest.fixture(scope="module")
def taxi_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = trained_env(tmp_path_factory.mktemp("taxi"))
    spec = [str(EXAMPLES / "taxi.yaml"), "--set", "data.rows=3000", "--set", "model.num_boost_round=10"]
    run_id = train(spec, env)
    # A service that scales to zero: the page is served by the replica the first visit wakes.
    idle = ["--set", "serve.num_replicas=null", "--set", "serve.autoscaling.min_replicas=0"]
    with serving([*spec, "--model", run_id, *idle, "--set", "serve.autoscaling.max_replicas=1"], env, idle=True) as (
        url,
        _,
    ):
        yield url


def test_fill_a_taxi_trip_and_see_the_tip_probability(browser: Any, taxi_service: str) -> None:
    url = taxi_service
    trip = {"passenger_count": "1", "trip_distance": "2.5", "fare_amount": "12", "trip_duration": "600"}
    page = browser.new_page()
    page.goto(f"{url}/")
    for name, value in {**trip, "hour": "18", "day_of_week": "3"}.items():
        page.fill(f"#{name}", value)
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('result').textContent.startsWith('label')", timeout=30_000)
    result = page.locator("#result").text_content() or ""
    assert re.match(r"label: (true|false)  \(probability 0\.\d{3}\)", result), result
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-taxi.png"))
    # an empty field is a missing value, which a tree model takes (docs/reliability.md)
    page.evaluate("document.getElementById('result').textContent = ''")
    page.fill("#hour", "")
    page.evaluate("document.getElementById('hour').removeAttribute('required')")
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('result').textContent.startsWith('label')", timeout=30_000)
    # a value the service refuses shows its error, naming the field, not a crash
    bad = {**{name: float(value) for name, value in trip.items()}, "hour": "evening", "day_of_week": 3}
    page.evaluate("record => send([record])", bad)
    page.wait_for_function("document.getElementById('result').textContent.startsWith('error')", timeout=30_000)
    assert "hour" in (page.locator("#result").text_content() or "")
    page.close()


def test_a_predicted_trip_shows_its_contributions(browser: Any, taxi_service: str) -> None:
    """After the prediction, the page asks /explain about the run that answered and shows one row
    per feature: the value typed, the signed contribution, largest first."""
    page = browser.new_page()
    page.goto(f"{taxi_service}/")
    trip = {"passenger_count": "2", "trip_distance": "7.5", "fare_amount": "30", "trip_duration": "1500"}
    for name, value in {**trip, "hour": "8", "day_of_week": "2"}.items():
        page.fill(f"#{name}", value)
    page.click("button[type=submit]")
    page.wait_for_selector("#explain tr.feature", timeout=60_000)
    rows = page.locator("#explain tr.feature")
    assert rows.count() == 6
    cells = [rows.nth(i).locator("td").all_text_contents() for i in range(rows.count())]
    assert {c[0] for c in cells} == {*trip, "hour", "day_of_week"}
    assert {c[0]: c[1] for c in cells}["trip_distance"] == "7.5"
    contributions = [float(c[2].strip()) for c in cells]
    assert [abs(c) for c in contributions] == sorted((abs(c) for c in contributions), reverse=True)
    assert any(c != 0 for c in contributions)
    # each bar's colour is its sign's
    for i, value in enumerate(contributions):
        bar = rows.nth(i).locator("span.bar").get_attribute("class") or ""
        assert ("pos" if value >= 0 else "neg") in bar
    caption = page.locator("#explain caption").text_content() or ""
    margin = float(re.search(r"margin (-?\d+\.\d+)", caption).group(1))  # type: ignore[union-attr]
    bias = float(re.search(r"bias (-?\d+\.\d+)", caption).group(1))  # type: ignore[union-attr]
    assert bias + sum(contributions) == pytest.approx(margin, abs=5e-3)  # four decimals each, shown
    # the probability shown is the margin's
    shown = page.locator("#result").text_content() or ""
    probability = float(re.search(r"probability (0\.\d{3})", shown).group(1))  # type: ignore[union-attr]
    assert 1 / (1 + math.exp(-margin)) == pytest.approx(probability, abs=1e-3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-taxi-explain.png"), full_page=True)
    page.close()


def test_a_slow_answer_says_the_model_is_waking(browser: Any, taxi_service: str) -> None:
    """The service scales to zero: an answer that takes over a second says why while it waits
    (held back here by the test, as a cold replica would hold it)."""
    page = browser.new_page()
    page.goto(f"{taxi_service}/")
    page.evaluate(
        """() => { window.seen = [];
        new MutationObserver(() => window.seen.push(document.getElementById('result').textContent))
          .observe(document.getElementById('result'), {childList: true, characterData: true, subtree: true}); }"""
    )
    trip = {"passenger_count": "1", "trip_distance": "2.5", "fare_amount": "12", "trip_duration": "600"}
    for name, value in {**trip, "hour": "18", "day_of_week": "3"}.items():
        page.fill(f"#{name}", value)
    page.route("**/predict", lambda route: (time.sleep(2), route.continue_()))
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('result').textContent.startsWith('label')", timeout=30_000)
    seen = page.evaluate("window.seen")
    assert any(text.startswith("waking the model") for text in seen), seen
    page.close()


def test_docs_render_with_the_network_cut_off(browser: Any, taxi_service: str) -> None:
    """Swagger UI at /docs draws the API from the service's own assets: nothing leaves the machine."""
    url = taxi_service
    context = browser.new_context()
    outside: list[str] = []

    def only_the_service(route: Any) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_service)
    page = context.new_page()
    page.goto(f"{url}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    operations = page.locator(".swagger-ui .opblock-summary-path").all_text_contents()
    assert {"/predict", "/healthz"} <= {op.strip() for op in operations}, operations
    assert not outside, outside
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-docs.png"), full_page=True)
    context.close()


def test_the_page_says_when_inputs_drift(browser: Any, taxi_service: str) -> None:
    """After a prediction the page shows the replica's live drift: trips far longer than the
    training trips name trip_distance."""
    from rayline.datasets.taxi import generate_taxi

    features = ["passenger_count", "trip_distance", "fare_amount", "trip_duration", "hour", "day_of_week"]
    longer = generate_taxi(3000, seed=21, trip_scale=1.8).to_pandas()[features]
    rows = json.loads(longer.to_json(orient="records"))
    status, body = call(f"{taxi_service}/predict", json.dumps(rows).encode(), {"Content-Type": "application/json"})
    assert status == 200 and len(body["predictions"]) == 3000, body
    page = browser.new_page()
    page.goto(f"{taxi_service}/")
    for name, value in rows[0].items():
        page.fill(f"#{name}", str(value))
    page.click("button[type=submit]")
    page.wait_for_function("!document.getElementById('drift').hidden", timeout=60_000)
    line = page.locator("#drift").text_content() or ""
    assert line.startswith("input drift: ") and "trip_distance (PSI " in line, line
    assert "drift" in (page.locator("#drift").get_attribute("class") or "")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-taxi-drift.png"), full_page=True)
    page.close()
