"""The console in a real browser: Debian's Chromium, driven by Playwright, against gunicorn on loopback.

Screenshots of the main pages are saved under test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import skimage.data
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.servers import ROOT, Server, cli, environment, free_port

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
PHOTOS = Path(skimage.data.__file__).parent
# What Chromium needs on this offline machine (root, no sandbox, no network beyond loopback).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "browser test password"
# How far a page reaches past the screen's edge (on a phone, window.innerWidth grows with the page).
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
JOB_TIMEOUT = 60_000  # ms: a job takes LOCAL_LATENCY seconds, on a machine shared with other test runs

# Records every value a job panel's progress bar shows, across the live updates of one page.
RECORD_PROGRESS = """
window.__progress = [];
new MutationObserver((records) => {
  for (const record of records) {
    const nodes = record.type === "attributes" ? [record.target]
      : [...record.addedNodes].filter((node) => node.querySelectorAll)
          .flatMap((node) => [node, ...node.querySelectorAll("[aria-valuenow]")]);
    for (const node of nodes) {
      if (node.closest && node.closest(".job-panel") && node.hasAttribute("aria-valuenow")) {
        window.__progress.push(Number(node.getAttribute("aria-valuenow")));
      }
    }
  }
}).observe(document, {
  subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"],
});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The service under gunicorn, with jobs that take a few seconds so progress can be watched."""
    data = tmp_path_factory.mktemp("console-browser")
    port = free_port()
    env = environment(data, port, APIFRAME_LOCAL_LATENCY="3", APIFRAME_PUBLIC_URL=f"http://127.0.0.1:{port}")
    running = Server(env, data / "gunicorn.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make test` (or `make browser`) installs Debian's chromium package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) that may use the clipboard."""
    fresh = browser.new_context(
        viewport={"width": 1360, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    fresh.set_default_timeout(15_000)
    yield fresh
    fresh.close()


@pytest.fixture
def page(context) -> Page:
    return context.new_page()


def screenshot(page: Page, name: str, full_page: bool = True) -> None:
    """Keep a picture of the page as a test artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def account_with_password(server: Server, email: str, plan: str = "hobby") -> str:
    """An account made by the admin CLI, with a console password; returns its API key."""
    output = cli(
        server.env, "users", "create", email, "--name", "Robin", "--plan", plan, "--password", PASSWORD
    )
    return output.strip().splitlines()[-1]


def go(page: Page, link: str) -> None:
    """Follow a link of the console's navigation."""
    page.get_by_role("navigation", name="Console").get_by_role("link", name=link).click()


def log_in(page: Page, server: Server, email: str) -> None:
    page.goto(f"{server.url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/console/")
    page.wait_for_load_state()  # its stylesheet too: a page is measured as it is drawn


def expect_finished_with_image(page: Page) -> None:
    """The job panel reaches 100 % and shows its image, loaded."""
    panel = page.locator(".job-panel")
    expect(panel.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=JOB_TIMEOUT)
    expect(panel.locator(".status").first).to_have_text("succeeded")
    image = panel.locator("img[data-result-image]")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())


def test_signup_imagine_upscale_and_revoke(server, page):
    """Sign up, copy the key, imagine in the playground, watch it finish, press U2, revoke the key."""
    page.add_init_script(RECORD_PROGRESS)
    page.goto(f"{server.url}/signup")
    screenshot(page, "signup", full_page=False)
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()

    expect(page.get_by_role("heading", name="Your new API key")).to_be_visible()
    expect(page.get_by_text("Welcome, Ada Lovelace! Your account has 50 free credits.")).to_be_visible()
    callout = page.locator(".new-key")
    callout.get_by_role("button", name="Copy").click()
    expect(callout.get_by_role("button", name="Copied")).to_be_visible()
    key = page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(r"ak_live_[A-Za-z0-9_-]{43}", key)
    assert key == page.locator("[data-new-key]").inner_text()
    screenshot(page, "dashboard-new-key")
    account = requests.get(f"{server.url}/v1/account", headers={"X-API-Key": key}, timeout=10).json()
    assert account["account"]["credits"] == {"remaining": 50, "total": 50}

    go(page, "Playground")
    page.get_by_label("Prompt").fill("a lighthouse on a cliff at dusk, dramatic clouds")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Quality").select_option("0.25")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.get_by_role("button", name="Imagine", exact=True).click()
    expect(page.get_by_text("Imagine job accepted: 16 credits.")).to_be_visible()
    expect_finished_with_image(page)
    seen = page.evaluate("window.__progress")
    assert any(0 < value < 100 for value in seen), f"the progress bar never moved: {seen}"
    assert seen[-1] == 100
    # Progress came over the page's event stream: the page asked for fresh HTML only when the status changed.
    assert len([url for url in requested if "/console/jobs/events?" in url]) == 1, requested
    assert len([url for url in requested if "/console/jobs/live?" in url]) <= 4, requested
    assert page.url.startswith(f"{server.url}/console/playground?tab=imagine&job=")  # no reload on the way
    expect(page.locator(".job-panel .tile")).to_have_count(4)
    screenshot(page, "playground-result")

    page.get_by_role("button", name="U2", exact=True).click()
    expect(page.get_by_role("heading", name="Upscale job")).to_be_visible()
    expect(page.get_by_text("U2: upscale of image 2 started.")).to_be_visible()
    expect_finished_with_image(page)
    width = page.locator(".job-panel img[data-result-image]").evaluate("img => img.naturalWidth")
    assert width == 1024  # a 512 px tile at quality 0.25, upscaled 2x
    expect(page.get_by_role("link", name="From image 2 of its grid")).to_be_visible()
    screenshot(page, "job-upscale")

    go(page, "API keys")
    row = page.locator(f'tr[data-key="{key[:16]}"]')
    expect(row.get_by_text("live", exact=True)).to_be_visible()
    screenshot(page, "keys")
    row.locator("summary", has_text="Revoke").click()
    row.get_by_role("button", name="Yes, revoke").click()
    expect(page.get_by_text(f"Key {key[:16]}… revoked.")).to_be_visible()
    expect(page.locator(f'tr[data-key="{key[:16]}"]').get_by_text("revoked", exact=True)).to_be_visible()

    denied = requests.get(f"{server.url}/v1/account", headers={"X-API-Key": key}, timeout=10)
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "UNAUTHORIZED"


def test_gallery_updates_live_and_filters(server, page):
    """A running job's card shows its progress, then its image, without a reload; filters narrow the list."""
    key = account_with_password(server, "gallery@example.com")
    log_in(page, server, "gallery@example.com")
    job = requests.post(
        f"{server.url}/v1/imagine",
        json={"prompt": "a red fox in a snowy forest", "quality": 0.25, "aspectRatio": "16:9"},
        headers={"X-API-Key": key},
        timeout=10,
    ).json()["job"]
    page.goto(f"{server.url}/console/jobs")
    page.evaluate("window.__stayed = true")
    card = page.locator(f'.job-card[data-job="{job["id"]}"]')
    expect(card.locator(".status")).to_have_text(re.compile("pending|queued|processing"))
    expect(card.locator(".job-media img")).to_be_visible(timeout=JOB_TIMEOUT)
    expect(card.locator(".status")).to_have_text("succeeded")
    assert page.evaluate("window.__stayed") is True
    thumbnail = card.locator(".job-media img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    shown = thumbnail.evaluate(
        "img => ({ratio: img.naturalWidth / img.naturalHeight, fit: getComputedStyle(img).objectFit})"
    )
    assert abs(shown["ratio"] - 16 / 9) < 0.02 and shown["fit"] == "contain"  # the whole 16:9 grid, uncropped
    media = card.locator(".job-media")
    media.focus()
    ring = media.evaluate(
        "link => { const style = getComputedStyle(link);"
        " return [style.outlineStyle, parseFloat(style.outlineWidth) + parseFloat(style.outlineOffset)]; }"
    )
    assert ring[0] == "solid" and ring[1] <= 0, (
        f"the focus ring is drawn outside the link, where the card clips it: {ring}"
    )
    screenshot(page, "jobs")

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("heading", name="No jobs match")).to_be_visible()
    assert "status=failed" in page.url
    page.get_by_label("Type").select_option("imagine")
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".job-card")).to_have_count(1)

    card = page.locator(".job-card").first
    card.locator(".job-media").click()
    expect(page.get_by_role("heading", name="Imagine job")).to_be_visible()
    copy_id = page.get_by_role("button", name="Copy job ID")  # an icon alone, named for screen readers
    copy_id.click()
    expect(page.locator('[data-copy="#job-id"]')).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == page.locator("#job-id").inner_text()
    tile = page.locator(".job-panel .tile").nth(2).get_attribute("href")
    go(page, "Playground")
    page.get_by_role("link", name="Describe").click()
    page.get_by_label("Image URL").fill(f"{server.url}{tile}")
    page.get_by_role("button", name="Describe", exact=True).click()
    descriptions = page.locator(".job-panel [data-descriptions] li")
    expect(descriptions).to_have_count(4, timeout=JOB_TIMEOUT)
    expect(descriptions.first).not_to_be_empty()
    described = page.locator(".job-panel img[data-described-image]")
    expect(described).to_have_attribute("src", f"{server.url}{tile}")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=described.element_handle())
    screenshot(page, "playground-describe")


def test_gallery_filters_wait_for_the_filter_button(server, page):
    """Arrowing through the Status select's options only chooses one (a keyboard user passes the others on
    the way): the gallery is filtered when the Filter button is pressed."""
    account_with_password(server, "arrows@example.com")
    log_in(page, server, "arrows@example.com")
    page.goto(f"{server.url}/console/jobs")
    page.evaluate("window.__stayed = true")
    status = page.get_by_label("Status")
    status.focus()
    chosen = status.input_value()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert status.input_value() != chosen  # the keys moved through the options
    page.wait_for_timeout(500)  # time enough for a submission to start
    assert page.evaluate("window.__stayed") is True and page.url == f"{server.url}/console/jobs"
    chosen = status.input_value()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Filter")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"status={chosen}"))


def test_a_skip_link_leads_past_the_navigation(server, page):
    """The first Tab on a console page shows a "Skip to content" link; following it, the next Tab reaches
    the page's own content, not the navigation."""
    account_with_password(server, "skipper@example.com")
    log_in(page, server, "skipper@example.com")
    page.goto(f"{server.url}/console/keys")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.querySelector('main').contains(document.activeElement)")


def test_dashboard_usage_plans_docs_and_errors(server, page, context):
    """The remaining pages render, plans switch, and a stranger's job is a friendly 404."""
    key = account_with_password(server, "tour@example.com", plan="free")
    stranger_key = account_with_password(server, "stranger@example.com")
    stranger_job = requests.post(
        f"{server.url}/v1/imagine",
        json={"prompt": "not yours"},
        headers={"X-API-Key": stranger_key},
        timeout=10,
    ).json()["job"]
    for _ in range(2):  # creates count against the plan's rate (refused ones too); reads do not
        requests.post(f"{server.url}/v1/imagine", json={}, headers={"X-API-Key": key}, timeout=10)
    requests.get(f"{server.url}/v1/account", headers={"X-API-Key": key}, timeout=10)
    page.goto(f"{server.url}/login")
    screenshot(page, "login", full_page=False)
    log_in(page, server, "tour@example.com")
    expect(page.locator("[data-rate]")).to_have_text("2 / 10")
    expect(page.get_by_role("heading", name="No jobs yet")).to_be_visible()
    screenshot(page, "dashboard-empty")

    go(page, "Plans")
    page.set_viewport_size({"width": 1280, "height": 900})
    overflowing = page.locator(".plan .btn").evaluate_all(
        "buttons => buttons.filter(b => b.scrollWidth > b.clientWidth || b.scrollHeight > b.clientHeight + 1)"
        ".map(b => b.textContent)"
    )
    assert overflowing == [], f"plan buttons whose labels overflow at 1280 px: {overflowing}"
    screenshot(page, "plans-1280")
    page.set_viewport_size({"width": 1360, "height": 900})
    page.get_by_role("button", name="Switch to Growth").click()
    expect(
        page.get_by_text("You are now on the Growth plan: your balance was topped up to 1,500")
    ).to_be_visible()
    expect(page.locator('[data-plan-card="growth"]').get_by_text("current")).to_be_visible()
    screenshot(page, "plans")
    go(page, "Usage")
    expect(page.get_by_text("Growth plan credits")).to_be_visible()
    screenshot(page, "usage")

    go(page, "Webhooks")
    page.get_by_text("Reveal").click()
    secret = page.locator("[data-secret]").inner_text()
    assert secret.startswith("whsec_")
    screenshot(page, "webhooks")
    page.locator("summary", has_text="Rotate").click()
    page.get_by_role("button", name="Yes, rotate it").click()
    expect(page.get_by_text("New signing secret made")).to_be_visible()
    page.get_by_text("Reveal").click()
    expect(page.locator("[data-secret]")).not_to_have_text(secret)

    response = page.goto(f"{server.url}/console/jobs/{stranger_job['id']}")
    assert response.status == 404
    expect(page.get_by_text("There is nothing here")).to_be_visible()
    screenshot(page, "error-404", full_page=False)

    page.goto(f"{server.url}/docs")
    expect(page.get_by_role("heading", name="APIFrame API")).to_be_visible()
    expect(page.locator("[data-base-url]")).to_have_text(server.url)
    screenshot(page, "docs", full_page=False)

    phone = context.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        small = phone.new_page()
        log_in(small, server, "tour@example.com")
        overflow = small.evaluate(SIDEWAYS)
        assert overflow <= 0, "the dashboard scrolls sideways on a phone"
        screenshot(small, "mobile-dashboard")
    finally:
        phone.close()


def api_job(server: Server, key: str, path: str, body: dict) -> dict:
    """Submit a job through the API and wait for it to succeed."""
    headers = {"X-API-Key": key}
    job = requests.post(f"{server.url}{path}", json=body, headers=headers, timeout=10).json()["job"]
    deadline = time.monotonic() + JOB_TIMEOUT / 1000
    while job["status"] not in ("succeeded", "failed", "timed_out", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = requests.get(f"{server.url}/v1/jobs/{job['id']}", headers=headers, timeout=10).json()["job"]
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture
def slow(tmp_path) -> Iterator[Server]:
    """The service under gunicorn, with jobs that stay running until they are cancelled."""
    port = free_port()
    env = environment(
        tmp_path, port, APIFRAME_LOCAL_LATENCY="120", APIFRAME_PUBLIC_URL=f"http://127.0.0.1:{port}"
    )
    running = Server(env, tmp_path / "gunicorn.log").start()
    yield running
    running.stop()


def test_a_job_cancelled_elsewhere_updates_the_balance_and_details_without_a_reload(browser, slow):
    """The job page follows a job ended through the API: its panel, the Details card (refunded, Ended) and
    the sidebar's credits, which the refund changes."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        key = account_with_password(slow, "refund@example.com")
        page = context.new_page()
        log_in(page, slow, "refund@example.com")
        balance = page.locator("[data-balance]")
        before = balance.inner_text()
        headers = {"X-API-Key": key}
        job = requests.post(f"{slow.url}/v1/imagine", json={"prompt": "a fox"}, headers=headers, timeout=10)
        job = job.json()["job"]
        page.goto(f"{slow.url}/console/jobs/{job['id']}")
        page.evaluate("window.__stayed = true")
        expect(balance).not_to_have_text(before)  # spent on the job
        details = page.locator(".job-side .card").first
        expect(details).not_to_contain_text("refunded")
        cancelled = requests.post(f"{slow.url}/v1/jobs/{job['id']}/cancel", headers=headers, timeout=10)
        assert cancelled.status_code == 200, cancelled.text
        expect(page.locator(".job-panel .status").first).to_have_text("cancelled")
        expect(balance).to_have_text(before)  # refunded
        expect(details).to_contain_text("refunded")
        expect(details.locator("dt", has_text="Ended")).to_be_visible()
        assert page.evaluate("window.__stayed") is True  # no reload
        screenshot(page, "job-cancelled-live")
    finally:
        context.close()


def test_a_live_panel_keeps_the_focus_and_says_the_new_status(server, page):
    """When a running job's panel is replaced, focus that was in it stays in it (not thrown to the page's
    start), and the page's polite live region says the job's new status for screen readers."""
    key = account_with_password(server, "listener@example.com")
    log_in(page, server, "listener@example.com")
    job = requests.post(
        f"{server.url}/v1/imagine",
        json={"prompt": "a fox", "quality": 0.25},
        headers={"X-API-Key": key},
        timeout=10,
    ).json()["job"]
    page.goto(f"{server.url}/console/jobs/{job['id']}")
    cancel = page.get_by_role("button", name="Cancel job")
    cancel.focus()
    expect(page.locator(".job-panel .status").first).to_have_text("succeeded", timeout=JOB_TIMEOUT)
    announcer = page.get_by_role("status").filter(has_text=re.compile("^Job"))
    expect(announcer).to_have_text("Job \u201ca fox\u201d succeeded")  # which job: a gallery follows several
    # The Cancel button is gone with the job's end: its panel's heading has the focus.
    expect(page.locator(".job-panel h2")).to_be_focused()


def test_a_job_page_goes_to_the_login_page_when_its_session_is_logged_out_elsewhere(browser, slow, context):
    """Logging out on another device ends every session of the account: a job page that follows its job
    live leaves for the login page by itself, without the user doing anything."""
    key = account_with_password(slow, "elsewhere@example.com")
    job = requests.post(
        f"{slow.url}/v1/imagine", json={"prompt": "a fox"}, headers={"X-API-Key": key}, timeout=10
    ).json()["job"]
    page = context.new_page()
    log_in(page, slow, "elsewhere@example.com")
    page.goto(f"{slow.url}/console/jobs/{job['id']}")
    expect(page.locator(".job-panel .status").first).to_have_text(re.compile("queued|processing"))
    other = browser.new_context()  # another device
    try:
        phone = other.new_page()
        log_in(phone, slow, "elsewhere@example.com")
        phone.get_by_role("button", name="Log out").click()
        expect(phone).to_have_url(re.compile("/login$"))
    finally:
        other.close()
    expect(page).to_have_url(re.compile("/login"), timeout=10_000)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def serious_violations(page: Page) -> list[str]:
    """What axe-core finds on the page with an impact of "serious" or "critical": rule, element and why."""
    results = Axe().run(page).response
    return [
        f"{violation['id']}: {', '.join(node['target'])}: {node['failureSummary']}"
        for violation in results["violations"]
        if violation["impact"] in ("serious", "critical")
        for node in violation["nodes"]
    ]


def test_console_pages_have_no_serious_accessibility_violations(server, page):
    """axe-core finds nothing serious or critical on the console's pages, with jobs, a revoked key and a
    webhook secret on them (quiet text in its colours, a shortened prompt's faded words)."""
    found = {}
    page.goto(f"{server.url}/login")
    found["login"] = serious_violations(page)
    key = account_with_password(server, "axe@example.com", plan="scale")
    grid = api_job(server, key, "/v1/imagine", {"prompt": "a lighthouse on a cliff", "quality": 0.25})
    upscaled = api_job(server, key, "/v1/upscale", {"jobId": grid["id"], "index": 1})
    shortened = api_job(
        server, key, "/v1/shorten", {"prompt": "a very beautiful oil painting of a lighthouse"}
    )
    log_in(page, server, "axe@example.com")
    page.goto(f"{server.url}/console/keys")
    page.get_by_role("button", name="Create key").click()
    row = page.locator(f'tr[data-key="{key[:16]}"]')
    row.locator("summary", has_text="Revoke").click()
    row.get_by_role("button", name="Yes, revoke").click()
    expect(page.locator(f'tr[data-key="{key[:16]}"]').get_by_text("revoked", exact=True)).to_be_visible()
    found["keys"] = serious_violations(page)
    for name, path in {
        "dashboard": "/console/",
        "jobs": "/console/jobs",
        "upscale": f"/console/jobs/{upscaled['id']}",
        "shorten": f"/console/jobs/{shortened['id']}",
        "playground": "/console/playground",
        "usage": "/console/usage",
        "webhooks": "/console/webhooks",
    }.items():
        page.goto(server.url + path)
        page.wait_for_load_state()
        found[name] = serious_violations(page)
    failing = "\n".join(
        f"{name}: {violation}" for name, violations in found.items() for violation in violations
    )
    assert not failing, failing


# Which focusable elements of the page are (partly) covered by something else where they are drawn.
COVERED = """
() => {
  const focused = document.activeElement, box = focused.getBoundingClientRect();
  const x = box.left + box.width / 2;
  const covered = [box.top + 2, box.top + box.height / 2].some((y) => {
    const hit = document.elementFromPoint(x, y);
    return hit && !focused.contains(hit);
  });
  return covered ? focused.outerHTML.slice(0, 120) : null;
}
"""


def test_the_focused_control_is_never_under_the_top_bar_when_zoomed_in(server, browser):
    """At 200 % zoom (a 680 px wide window) the navigation bar sits above the page: walking back up through
    the playground's form with Shift+Tab, each focused control is in sight, not under the bar."""
    account_with_password(server, "zoomed@example.com")
    zoomed = browser.new_context(viewport={"width": 680, "height": 450})
    try:
        small = zoomed.new_page()
        log_in(small, server, "zoomed@example.com")
        small.goto(f"{server.url}/console/playground")
        small.get_by_role("button", name="Imagine", exact=True).focus()
        covered = []
        for _ in range(12):
            small.keyboard.press("Shift+Tab")
            if hidden := small.evaluate(COVERED):
                covered.append(hidden)
        assert covered == [], f"focused controls under something else: {covered}"
    finally:
        zoomed.close()


PHONE_PAGES = [
    "/console/",
    "/console/jobs",
    "/console/jobs/{job}",
    "/console/playground",
    "/console/playground?tab=blend",
    "/console/keys",
    "/console/usage",
    "/console/plans",
    "/console/webhooks",
    "/console/password",
]


def test_every_console_page_fits_a_phone(server, browser):
    """At 390 px no console page scrolls sideways (a job page's curl command, the keys table's header)."""
    key = account_with_password(server, "phone@example.com", plan="scale")  # a balance of five digits
    job = api_job(server, key, "/v1/imagine", {"prompt": "a lighthouse on a cliff", "quality": 0.25})
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        small = phone.new_page()
        log_in(small, server, "phone@example.com")
        wide = {}
        for path in PHONE_PAGES:
            small.goto(server.url + path.format(job=job["id"]))
            overflow = small.evaluate(SIDEWAYS)
            if overflow > 0:
                wide[path] = overflow
        assert wide == {}, f"pages that scroll sideways on a phone (px too wide): {wide}"
        brand, credits = small.locator(".brand").bounding_box(), small.locator(".balance").bounding_box()
        assert brand["x"] + brand["width"] <= credits["x"], "the credits badge covers the brand"
        expect(small.get_by_role("link", name="APIFrame")).to_be_visible()
        small.goto(f"{server.url}/console/jobs/{job['id']}")
        expect_finished_with_image(small)
        screenshot(small, "mobile-job")
        small.goto(f"{server.url}/console/keys")
        screenshot(small, "mobile-keys")
    finally:
        phone.close()


def tab_to(page: Page, target, presses: int = 15) -> None:
    """Press Tab until the target has the focus."""
    for _ in range(presses):
        if target.evaluate("element => element === document.activeElement"):
            return
        page.keyboard.press("Tab")
    expect(target).to_be_focused()


def open_an_upscale(server: Server, page: Page, email: str) -> tuple[str, dict, dict]:
    """A new account's upscaled image, its job page open; the account's key, the grid and the upscale."""
    key = account_with_password(server, email, plan="scale")
    grid = api_job(server, key, "/v1/imagine", {"prompt": "a lighthouse on a cliff", "quality": 0.25})
    upscaled = api_job(server, key, "/v1/upscale", {"jobId": grid["id"], "index": 1})
    log_in(page, server, email)
    page.goto(f"{server.url}/console/jobs/{upscaled['id']}")
    expect_finished_with_image(page)
    return key, grid, upscaled


def test_vary_region_by_keyboard_alone(server, page):
    """Without a pointer: Vary Region takes the focus into its editor, a region button marks the region
    (in place of the one marked before), and "Vary this region" makes the job; Cancel gives the focus back
    to Vary Region."""
    key, _, upscaled = open_an_upscale(server, page, "keyboard@example.com")
    vary = page.get_by_role("button", name="Vary Region", exact=True)
    vary.focus()
    page.keyboard.press("Enter")
    top = page.get_by_role("button", name="Top half")
    expect(top).to_be_focused()
    submit = page.get_by_role("button", name="Vary this region")
    expect(submit).to_be_disabled()
    assert submit.evaluate("button => getComputedStyle(button).opacity") != "1"  # it looks disabled, too
    tab_to(page, page.get_by_role("button", name="Cancel", exact=True))
    page.keyboard.press("Enter")
    expect(page.locator("[data-mask-editor]")).to_be_hidden()
    expect(vary).to_be_focused()

    page.keyboard.press("Enter")
    expect(top).to_be_focused()
    page.keyboard.press("Enter")  # the top half, then instead (not as well: the mask would be all white)...
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Bottom half")).to_be_focused()
    page.keyboard.press("Enter")  # ...the bottom half
    expect(submit).to_be_enabled()
    tab_to(page, submit)
    page.keyboard.press("Enter")
    expect(page.get_by_text("Vary region started.")).to_be_visible()
    inpaint_id = page.url.rsplit("/", 1)[-1]
    job = requests.get(f"{server.url}/v1/jobs/{inpaint_id}", headers={"X-API-Key": key}, timeout=10).json()
    assert job["job"]["type"] == "inpaint" and job["job"]["parentJobId"] == upscaled["id"]


def test_pan_zoom_and_vary_region_with_a_painted_mask_then_shorten_and_face_swap(server, page, files):
    """On an upscaled image: pan left, then paint a region and vary it; the playground shortens and swaps."""
    key, grid, upscaled = open_an_upscale(server, page, "painter@example.com")
    for direction, arrow in (("left", "⬅"), ("right", "➡"), ("up", "⬆"), ("down", "⬇")):
        button = page.get_by_role("button", name=f"Pan {direction}", exact=True)  # not named by the arrow
        expect(button).to_be_visible()
        expect(button).to_contain_text(arrow)
    for text in ("Zoom Out 1.5×", "Zoom Out 2×", "Make Square", "Vary Region"):
        expect(page.get_by_role("button", name=text, exact=True)).to_be_visible()
    screenshot(page, "job-upscale-actions")

    page.get_by_role("button", name="Pan left", exact=True).click()
    expect(page.get_by_text("Pan started.")).to_be_visible()
    expect_finished_with_image(page)
    width = page.locator(".job-panel img[data-result-image]").evaluate("img => img.naturalWidth")
    assert width == 2 * 1536  # the grid of four 1536x1024 images: half as wide again
    screenshot(page, "job-pan")

    page.goto(f"{server.url}/console/jobs/{upscaled['id']}")
    expect_finished_with_image(page)
    page.get_by_role("button", name="Vary Region", exact=True).click()
    canvas = page.locator("canvas[data-mask-canvas]")
    expect(canvas).to_be_visible()
    expect(page.get_by_role("button", name="Vary this region")).to_be_disabled()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    page.mouse.down()
    for step in range(1, 11):
        x, y = box["x"] + box["width"] * (0.3 + 0.04 * step), box["y"] + box["height"] * 0.5
        page.mouse.move(x, y, steps=2)
    page.mouse.up()
    screenshot(page, "vary-region-mask", full_page=False)
    page.get_by_role("button", name="Vary this region").click()
    expect(page.get_by_text("Vary region started.")).to_be_visible()
    expect_finished_with_image(page)
    inpaint_id = page.url.rsplit("/", 1)[-1]
    job = requests.get(f"{server.url}/v1/jobs/{inpaint_id}", headers={"X-API-Key": key}, timeout=10).json()
    assert job["job"]["type"] == "inpaint" and job["job"]["parentJobId"] == upscaled["id"]
    screenshot(page, "job-vary-region")

    go(page, "Playground")
    page.get_by_role("link", name="Shorten").click()
    page.get_by_label("Prompt").fill("a very beautiful and highly detailed oil painting of a lighthouse")
    page.get_by_role("button", name="Shorten", exact=True).click()
    expect(page.locator("[data-descriptions] li")).to_have_count(5, timeout=JOB_TIMEOUT)
    expect(page.locator("[data-tokens] .token", has_text="lighthouse")).to_be_visible()
    screenshot(page, "playground-shorten")

    page.get_by_role("link", name="Blend").click()
    page.get_by_label("Image URLs").fill(f"{grid['imageUrls'][0]}\n{upscaled['imageUrl']}")
    page.get_by_label("Dimension").select_option("landscape")
    page.get_by_role("button", name="Blend", exact=True).click()
    expect_finished_with_image(page)
    width, height = page.locator(".job-panel img[data-result-image]").evaluate(
        "img => [img.naturalWidth, img.naturalHeight]"
    )
    assert abs(width / height - 3 / 2) < 0.02  # the landscape grid of four 3:2 blends
    screenshot(page, "playground-blend")

    face = files.add("/astronaut.png", (PHOTOS / "astronaut.png").read_bytes())
    page.get_by_role("link", name="Faceswap").click()
    page.get_by_label("Target image URL").fill(face)
    page.get_by_label("Face image URL").fill(face)
    page.get_by_role("button", name="Faceswap", exact=True).click()
    expect_finished_with_image(page)
    screenshot(page, "playground-faceswap")
