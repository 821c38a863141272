"""The web console through its forms: signup, login, keys, plans, jobs, playground, errors and CSRF."""

from __future__ import annotations

import html
import io
import re
import threading
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

import operations
import storage
from conftest import image_bytes
from console.filters import job_title
from console.login import end_sessions
from models import ApiKey, Job, LedgerEntry
from operations import GRID

TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
PASSWORD = "correct horse battery"


class Console:
    """A browser-like test client: it reads the CSRF token from a page before posting a form."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def token(self, page: str | None = None) -> str:
        """The CSRF token from ``page`` (by default the console, or the login page when signed out)."""
        for candidate in [page] if page else ["/console/", "/login"]:
            match = TOKEN.search(self.client.get(candidate).get_data(as_text=True))
            if match:
                return match.group(1)
        raise AssertionError(f"no CSRF token on {page or 'the console or the login page'}")

    def get(self, path: str, **kwargs: Any):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, page: str | None = None, **kwargs: Any):
        return self.client.post(path, data={"csrf_token": self.token(page), **(data or {})}, **kwargs)

    def signup(self, email: str = "jane@example.com", name: str = "Jane Doe", password: str = PASSWORD):
        return self.post("/signup", {"name": name, "email": email, "password": password}, page="/signup")

    def login(self, email: str, password: str = PASSWORD, next_page: str = ""):
        return self.post("/login", {"email": email, "password": password, "next": next_page})


def text(response) -> str:
    """The response body as a page reads (entities decoded)."""
    return html.unescape(response.get_data(as_text=True))


def shown_key(response) -> str:
    match = re.search(r"data-new-key>(ak_live_[A-Za-z0-9_-]+)<", response.get_data(as_text=True))
    assert match, "no new key on the page"
    return match.group(1)


@pytest.fixture
def console(client) -> Console:
    return Console(client)


@pytest.fixture
def closed(settings) -> None:
    """Ask for this before ``client``: signup is closed and plans are the operator's business."""
    settings.update(ALLOW_SIGNUP=False, ALLOW_SELF_UPGRADE=False)


@pytest.fixture
def slow(settings) -> None:
    """Ask for this before ``client``: jobs take 30 seconds."""
    settings["LOCAL_LATENCY"] = 30


def api_post(console: Console, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the API with a key; the job it answers with."""
    response = console.client.post(path, json=body, headers={"X-API-Key": key})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job"]


@pytest.fixture
def member(console, make_account) -> tuple[Console, Any, str]:
    """A console signed in as an account on the hobby plan; also its API key."""
    account, key = make_account("hobby", email="member@example.com", password=PASSWORD)
    assert console.login("member@example.com").status_code == 302
    return console, account, key


def wait_for(app, job_id: str, timeout: float = 20) -> Job:
    """The job once it has ended."""
    deadline = time.monotonic() + timeout
    with app.app_context():
        while True:
            job = Job.get_by_id(job_id)
            if job.status in ("succeeded", "failed", "timed_out", "cancelled"):
                return job
            assert time.monotonic() < deadline, f"job still {job.status}"
            time.sleep(0.05)


# ---- signup, login, logout --------------------------------------------------------------------


def test_signup_grants_free_credits_and_shows_the_first_key_once(console, client):
    response = console.signup()
    assert response.status_code == 302 and response.headers["Location"] == "/console/"
    dashboard = client.get("/console/")
    key = shown_key(dashboard)
    page = text(dashboard)
    assert "Welcome, Jane Doe! Your account has 50 free credits." in page
    assert "Free" in page and "50 / 50" in page.replace("<span>", "").replace("</span>", "")
    assert key not in text(client.get("/console/"))  # shown once
    account = client.get("/v1/account", headers={"X-API-Key": key}).get_json()["account"]
    assert account == {
        "name": "Jane Doe",
        "email": "jane@example.com",
        "plan": "free",
        "credits": {"remaining": 50, "total": 50},
    }


def test_signup_without_csrf_token_is_refused(client, app):
    response = client.post("/signup", data={"name": "Eve", "email": "eve@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "This form expired or did not come from this site" in text(response)
    with app.app_context():
        import accounts

        assert accounts.find_by_email("eve@example.com") is None


def test_a_forged_csrf_token_is_refused(console, member):
    member_console, _, _ = member
    response = member_console.client.post("/console/keys", data={"csrf_token": "forged", "name": "x"})
    assert response.status_code == 400 and "form expired" in text(response)


def test_signup_with_a_taken_email_says_so_beside_the_field(console):
    assert console.signup(email="taken@example.com").status_code == 302
    console.client.post("/logout", data={"csrf_token": console.token("/console/")})
    response = console.signup(email="Taken@Example.com")
    assert response.status_code == 400
    assert "An account with this email already exists. Log in instead?" in text(response)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "Tell us your name."),
        ({"email": "not-an-email"}, "Enter an email address like jane@example.com."),
        ({"password": "short"}, "Use at least 8 characters."),
    ],
)
def test_signup_bad_input_is_shown_inline(console, fields, message):
    data = {"name": "Jane", "email": "jane@example.com", "password": PASSWORD, **fields}
    response = console.post("/signup", data, page="/signup")
    assert response.status_code == 400
    assert 'class="field-error"' in response.get_data(as_text=True)
    assert message in text(response)


def test_signup_can_be_closed(closed, console, app):
    page = console.get("/signup")
    assert page.status_code == 403 and "Signup is closed" in text(page)
    refused = console.post("/signup", {"name": "A", "email": "a@example.com", "password": PASSWORD})
    assert refused.status_code == 403 and "Signup is closed" in text(refused)
    assert "Create an account" not in text(console.get("/login"))
    with app.app_context():
        import accounts

        assert accounts.find_by_email("a@example.com") is None


def test_login_with_a_wrong_password_fails(console, make_account):
    make_account(email="jo@example.com", password=PASSWORD)
    response = console.login("jo@example.com", "wrong password")
    assert response.status_code == 400
    assert "Wrong email or password." in text(response)
    assert console.get("/console/").status_code == 302


def test_login_of_an_unknown_email_fails_the_same_way(console):
    response = console.login("nobody@example.com", "whatever1")
    assert response.status_code == 400 and "Wrong email or password." in text(response)


def test_an_account_without_a_password_cannot_log_in(console, make_account):
    make_account(email="cli@example.com")  # created by the CLI without --password
    assert console.login("cli@example.com", "").status_code == 400
    assert console.login("cli@example.com", "anything1").status_code == 400


def test_console_pages_need_login_and_come_back_after_it(console, make_account):
    response = console.get("/console/usage?page=2")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/console/usage?page%3D2"
    make_account(email="back@example.com", password=PASSWORD)
    response = console.login("back@example.com", next_page="/console/usage?page=2")
    assert response.headers["Location"] == "/console/usage?page=2"


@pytest.mark.parametrize(
    ("referrer", "location"),
    [
        ("http://localhost/console/jobs?status=failed", "/login?next=/console/jobs?status%3Dfailed"),
        ("https://evil.example/console/jobs", "/login"),
        (None, "/login"),
    ],
)
def test_a_form_sent_after_the_session_ended_comes_back_to_its_page(member, app, referrer, location):
    console, account, _ = member
    token = console.token("/console/keys")
    with app.app_context():
        end_sessions(account.id)
    headers = {"Referer": referrer} if referrer else {}
    response = console.client.post("/console/keys", data={"csrf_token": token, "name": "x"}, headers=headers)
    assert response.status_code == 302 and response.headers["Location"] == location  # never the POST address


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x", "/console/\r\nX: y"],
)
def test_login_never_redirects_off_site(console, make_account, target):
    make_account(email="safe@example.com", password=PASSWORD)
    response = console.login("safe@example.com", next_page=target)
    assert response.headers["Location"] == "/console/"


def test_console_pages_refuse_to_be_framed(member):
    console, _, _ = member
    for page in ("/login", "/console/", "/console/keys"):
        response = console.get(page)
        assert response.headers["X-Frame-Options"] == "DENY", page
        assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'", page


def test_console_pages_are_never_stored(member):
    console, _, _ = member
    console.post("/console/keys", {"name": "once"}, page="/console/keys")
    shown = console.get("/console/keys")  # the page that shows the new key, once
    assert shown_key(shown) and shown.headers["Cache-Control"] == "no-store"
    missing = "/console/jobs/00000000-0000-0000-0000-000000000000"  # the console's own 404 page
    for page in ("/login", "/console/", "/console/webhooks", "/console/jobs/live", missing):
        response = console.get(page)
        assert response.headers["Cache-Control"] == "no-store", page
        assert response.headers["X-Content-Type-Options"] == "nosniff", page
    assert "no-store" not in console.get("/static/console.css").headers.get("Cache-Control", "")


def test_session_cookie_is_httponly_and_samesite(console, make_account):
    make_account(email="cookie@example.com", password=PASSWORD)
    response = console.login("cookie@example.com")
    cookies = response.headers.getlist("Set-Cookie")
    cookie = next(value for value in cookies if value.startswith("apiframe_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # PUBLIC_URL is http in tests


def test_logout_ends_the_session(member):
    console, _, _ = member
    response = console.post("/logout", page="/console/")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "You are logged out." in text(console.get("/login"))
    assert console.get("/console/").status_code == 302


def test_logging_in_with_an_ended_sessions_cookie_works_the_first_time(member, app):
    console, account, _ = member
    with app.app_context():
        end_sessions(account.id)  # as a logout or a password change elsewhere does
    form = {"email": "member@example.com", "password": PASSWORD}
    response = console.post("/login", form, page="/login")  # the page the ended session's cookie opened
    assert response.status_code == 302 and response.headers["Location"] == "/console/"
    assert console.get("/console/").status_code == 200


def test_the_log_out_button_works_after_the_session_ended_elsewhere(member, app):
    console, account, _ = member
    token = console.token("/console/")  # the page was open before the session ended
    with app.app_context():
        end_sessions(account.id)
    response = console.client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/login"


def test_a_refused_login_below_the_limit_has_no_retry_after(console, make_account):
    make_account(email="ra@example.com", password=PASSWORD)
    response = console.login("ra@example.com", "wrong password")
    assert response.status_code == 400 and "X-RateLimit-Limit" in response.headers
    assert "Retry-After" not in response.headers  # Flask-Limiter's, meaningless below the limit


def test_csrf_protection_hooks_into_the_console_only(app):
    # Every form is on the console's blueprints; on other requests the hook was only a cost.
    protect = [hook for hook in app.before_request_funcs["console"] if "csrf" in hook.__qualname__]
    assert protect and protect == [hook for hook in app.before_request_funcs["signin"] if hook in protect]
    assert not set(protect) & set(app.before_request_funcs[None])


def test_login_is_rate_limited_per_address_with_a_friendly_page(console, make_account):
    make_account(email="rl@example.com", password=PASSWORD)
    statuses = [console.login("rl@example.com", "wrong password").status_code for _ in range(11)]
    assert statuses[:10] == [400] * 10
    assert statuses[10] == 429
    response = console.login("rl@example.com")
    assert response.status_code == 429 and response.mimetype == "text/html"
    assert "Too many attempts from your address" in text(response)
    assert "Retry-After" in response.headers
    other = console.client.post(
        "/login", data={"email": "rl@example.com"}, environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    assert other.status_code == 400  # another address is not limited (it just lacks a token)


# ---- dashboard, keys, usage, plans ------------------------------------------------------------


def test_dashboard_shows_plan_credits_rate_and_recent_jobs(member, api):
    console, _, key = member
    for _ in range(3):  # creates (refused, so free) count against the plan's rate; reads do not
        assert console.client.post("/v1/imagine", json={}, headers={"X-API-Key": key}).status_code == 400
    assert console.client.get("/v1/account", headers={"X-API-Key": key}).status_code == 200
    page = text(console.get("/console/"))
    assert "Hobby" in page and "30 creates / minute" in page
    assert 'aria-valuenow="200"' in page  # the credits gauge
    assert "3 / 30" in page  # creates this minute for that key
    assert "No jobs yet" in page


def test_keys_are_created_listed_and_revoked(member, app):
    console, account, first_key = member
    response = console.post("/console/keys", {"name": "laptop"}, page="/console/keys")
    assert response.status_code == 302
    page = console.get("/console/keys")
    new_key = shown_key(page)
    assert "laptop" in text(page) and new_key[:16] in text(page)
    assert new_key not in text(console.get("/console/keys"))
    assert console.client.get("/v1/account", headers={"X-API-Key": new_key}).status_code == 200

    with app.app_context():
        row = ApiKey.get(ApiKey.prefix == new_key[:16])
    response = console.post(f"/console/keys/{row.id}/revoke", page="/console/keys")
    assert response.status_code == 302
    assert "revoked. Requests with it now get 401 UNAUTHORIZED." in text(console.get("/console/keys"))
    denied = console.client.get("/v1/account", headers={"X-API-Key": new_key})
    assert denied.status_code == 401 and denied.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert console.client.get("/v1/account", headers={"X-API-Key": first_key}).status_code == 200


def test_another_accounts_key_cannot_be_revoked(member, make_account, app):
    console, _, _ = member
    _, other_key = make_account(email="other@example.com")
    with app.app_context():
        other = ApiKey.get(ApiKey.prefix == other_key[:16])
    assert console.post(f"/console/keys/{other.id}/revoke", page="/console/keys").status_code == 404
    assert console.client.get("/v1/account", headers={"X-API-Key": other_key}).status_code == 200


def test_a_long_key_name_is_refused_inline(member):
    console, _, _ = member
    response = console.post("/console/keys", {"name": "x" * 65}, page="/console/keys")
    assert response.status_code == 400 and "Field cannot be longer than 64 characters." in text(response)


def test_usage_lists_the_ledger(member, app):
    console, account, key = member
    job = console.client.post("/v1/imagine", json={"prompt": "a kite"}, headers={"X-API-Key": key}).get_json()
    wait_for(app, job["job"]["id"])
    page = text(console.get("/console/usage"))
    assert "Hobby plan credits" in page and "+200" in page
    assert "imagine job" in page and "-16" in page
    assert f"/console/jobs/{job['job']['id']}" in page


def test_plans_can_be_switched_when_self_upgrade_is_on(member, app):
    console, account, _ = member
    page = text(console.get("/console/plans"))
    assert "Switch to Standard" in page and "300" in page
    response = console.post("/console/plans", {"plan": "standard"}, page="/console/plans")
    assert response.status_code == 302
    shown = text(console.get("/console/plans"))
    assert "You are now on the Standard plan: your balance was topped up to 500 credits (+300)." in shown
    with app.app_context():
        entries = LedgerEntry.select().where(LedgerEntry.account == account.id)
        entry = entries.order_by(LedgerEntry.id.desc()).get()
        assert (entry.reason, entry.amount, entry.balance_after) == ("plan", 300, 500)


def test_plan_switch_refuses_unknown_plans(member):
    console, _, _ = member
    assert console.post("/console/plans", {"plan": "platinum"}, page="/console/plans").status_code == 400


def test_plans_cannot_be_switched_when_self_upgrade_is_off(closed, console, make_account, app):
    make_account("free", email="locked@example.com", password=PASSWORD)
    console.login("locked@example.com")
    page = text(console.get("/console/plans"))
    assert "Plans on this service are changed by its operator" in page
    assert "Switch to" not in page
    response = console.post("/console/plans", {"plan": "scale"}, page="/console/plans")
    assert response.status_code == 403 and "Ask them to switch yours" in text(response)
    with app.app_context():
        import accounts

        assert accounts.find_by_email("locked@example.com").plan == "free"


# ---- playground, jobs, U/V, cancel --------------------------------------------------------------


def imagine_form(**fields: Any) -> dict[str, Any]:
    return {
        "prompt": "a paper boat on a pond",
        "aspect_ratio": "1:1",
        "version": "6.1",
        "quality": "0.25",
        "style": "",
        "chaos": "0",
        "stylize": "100",
        **fields,
    }


def test_playground_imagine_makes_a_job_through_the_api_path(member, app):
    console, account, _ = member
    form = imagine_form(aspect_ratio="16:9", style="cute")
    response = console.post("/console/playground?tab=imagine", form)
    assert response.status_code == 302
    job_id = response.headers["Location"].split("job=")[1]
    job = wait_for(app, job_id)
    assert job.status == "succeeded" and job.type == "imagine"
    assert (job.params["aspect_ratio"], job.params["style"], job.params["quality"]) == ("16:9", "cute", 0.25)
    page = text(console.get(response.headers["Location"]))
    assert "Imagine job accepted: 16 credits." in page
    assert f"/images/{job_id}/grid.png" in page
    for button in ("U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"):
        assert f'value="{button}"' in page
    assert "a paper boat on a pond</textarea>" in page  # the form keeps the prompt, to tweak and rerun


def test_a_number_too_long_for_a_float_is_out_of_range(member):
    console, _, _ = member
    for chaos, stylize in (("9" * 400, "100"), ("-" + "9" * 400, "100"), ("0", "9" * 400)):
        response = console.post("/console/playground?tab=imagine", imagine_form(chaos=chaos, stylize=stylize))
        assert response.status_code == 400 and "Number must be between" in text(response)


def test_a_file_sent_for_a_text_field_is_no_value(member):
    console, _, _ = member
    response = console.post("/console/keys", {"name": (io.BytesIO(b"sent-as-a-file"), "name.txt")})
    assert response.status_code == 302 and "sent-as-a-file" not in text(console.get("/console/keys"))
    form = imagine_form()
    form["prompt"] = (io.BytesIO(b"a paper boat"), "prompt.txt")
    response = console.post("/console/playground?tab=imagine", form)
    assert response.status_code == 400 and "Describe the image you want." in text(response)
    console.post("/logout", page="/console/")
    response = console.post(
        "/login", {"email": (io.BytesIO(b"member@example.com"), "e.txt"), "password": PASSWORD}
    )
    assert response.status_code == 400 and console.get("/console/").status_code == 302


def test_a_nul_character_in_a_form_is_refused_before_any_lookup(member, app):
    console, account, _ = member
    response = console.post("/console/keys", {"name": "key\x00"})
    assert response.status_code == 400 and "Remove the NUL character" in text(response)
    response = console.post("/console/playground?tab=imagine", imagine_form(prompt="a \x00 boat"))
    assert response.status_code == 400 and "Remove the NUL character" in text(response)
    console.post("/logout", page="/console/")
    response = console.post("/login", {"email": "member\x00@example.com", "password": PASSWORD})
    assert response.status_code == 400 and "Remove the NUL character" in text(response)
    with app.app_context():
        assert Job.select().count() == 0 and not ApiKey.select().where(ApiKey.name == "key\x00").exists()


def test_imagine_this_fills_the_prompt_box(member):
    console, _, _ = member
    page = console.get("/console/playground?tab=imagine&prompt=a <b>bold</b> fox").get_data(as_text=True)
    prompt = re.search(r'<textarea[^>]*name="prompt"[^>]*>([^<]*)</textarea>', page)
    assert prompt and prompt.group(1).strip() == "a &lt;b&gt;bold&lt;/b&gt; fox"  # filled, and escaped


@pytest.mark.parametrize(
    "path",
    [
        "/console/", "/console/playground", "/console/jobs", "/console/jobs?status=failed",
        "/console/jobs?page=3", "/console/keys", "/console/usage", "/console/plans", "/console/webhooks",
        "/console/password",
    ],
)  # fmt: skip
def test_headings_go_down_one_level_at_a_time(member, path):
    """Below a page's h1 (here as a new account sees it, with nothing yet), no heading skips a level: an
    empty state's heading straight below the h1 is an h2."""
    console, _, _ = member
    page = text(console.get(path))
    levels = [int(level) for level in re.findall(r"<h([1-6])\b", page)]
    assert levels[0] == 1 and all(b <= a + 1 for a, b in zip(levels, levels[1:], strict=False)), levels
    if path == "/console/playground":
        assert "<h2>Your result appears here</h2>" in page


def test_playground_shows_validation_messages_inline(member):
    console, _, _ = member
    response = console.post("/console/playground?tab=imagine", imagine_form(prompt="", chaos="500"))
    assert response.status_code == 400
    page = text(response)
    assert "Describe the image you want." in page
    assert "Number must be between 0 and 100." in page
    response = console.post("/console/playground?tab=describe", {"image_url": "ftp://example.com/a.png"})
    assert response.status_code == 400
    assert "Must be an http or https URL." in text(response)  # the API schema's own message
    response = console.post(
        "/console/playground?tab=blend", {"image_urls": "https://example.com/only-one.png"}
    )
    assert response.status_code == 400 and "Enter two to five image URLs, one per line." in text(response)


def test_a_fields_hint_or_error_is_read_with_it(member):
    """Each input is tied by aria-describedby to the hint below it or, once refused, to its error (the
    playground's Chaos and Stylize sliders too), so screen readers read it with the field."""
    console, _, _ = member
    page = text(console.get("/console/playground?tab=imagine"))
    for name in ("chaos", "stylize"):
        assert re.search(rf'<input aria-describedby="{name}-hint"[^>]* id="{name}"', page), name
        assert f'<p class="hint" id="{name}-hint">' in page
    page = text(console.post("/console/playground?tab=imagine", imagine_form(chaos="500", stylize="5000")))
    for name in ("chaos", "stylize"):
        refused = rf'<input aria-describedby="{name}-error" aria-invalid="true"[^>]* id="{name}"'
        assert re.search(refused, page), name
        assert f'<p class="field-error" id="{name}-error">Number must be between 0 and' in page
    keys = text(console.get("/console/keys"))
    assert re.search(r'<input aria-describedby="name-hint"[^>]* id="name"', keys)
    assert '<p class="hint" id="name-hint">A name to recognise it by' in keys


def test_playground_without_credits_says_so(console, make_account):
    make_account("free", email="broke@example.com", password=PASSWORD)
    console.login("broke@example.com")
    for _ in range(3):
        assert console.post("/console/playground?tab=imagine", imagine_form()).status_code == 302
    response = console.post("/console/playground?tab=imagine", imagine_form())
    assert response.status_code == 402
    assert "This imagine costs 16 credits and your balance is 2." in text(response)


def test_playground_describe_and_blend(member, app, files):
    from tests.conftest import image_bytes

    console, _, _ = member
    one = files.add("/one.png", image_bytes(color=(200, 40, 40)))
    two = files.add("/two.png", image_bytes(color=(40, 40, 200)))
    described = console.post("/console/playground?tab=describe", {"image_url": one})
    job = wait_for(app, described.headers["Location"].split("job=")[1])
    assert job.status == "succeeded" and len(job.descriptions) == 4
    page = text(console.get(f"/console/jobs/{job.id}"))
    for description in job.descriptions:
        assert description in page
    blended = console.post("/console/playground?tab=blend", {"image_urls": f"{one}\n\n{two}\n"})
    job = wait_for(app, blended.headers["Location"].split("job=")[1])
    assert job.status == "succeeded" and job.params["image_urls"] == [one, two]
    assert job.params["dimension"] == "square"  # the default, as the API's
    body = {"image_urls": f"{one}\n{two}", "dimension": "landscape"}
    wide = console.post("/console/playground?tab=blend", body)
    job = wait_for(app, wide.headers["Location"].split("job=")[1])
    assert job.status == "succeeded" and job.params["dimension"] == "landscape"
    with app.app_context():
        width, height = storage.load_image(job.id, job.tiles[0]).size
    assert width / height == pytest.approx(3 / 2, rel=0.02)
    assert 'value="portrait"' in console.get("/console/playground?tab=blend").get_data(as_text=True)


def test_u_and_v_buttons_make_upscale_and_variation_jobs(member, api, app):
    console, account, key = member
    parent_id = api_post(console, key, "/v1/imagine", {"prompt": "a fox"})["id"]
    wait_for(app, parent_id)
    page = f"/console/jobs/{parent_id}"
    response = console.post(f"/console/jobs/{parent_id}/pick", {"action": "U2"}, page=page)
    assert response.status_code == 302
    upscale_id = response.headers["Location"].rsplit("/", 1)[1]
    upscale = wait_for(app, upscale_id)
    assert (upscale.type, upscale.index, str(upscale.parent_id)) == ("upscale", 2, parent_id)
    assert "U2: upscale of image 2 started." in text(console.get(f"/console/jobs/{upscale_id}"))
    response = console.post(f"/console/jobs/{parent_id}/pick", {"action": "V4"}, page=page)
    variation = wait_for(app, response.headers["Location"].rsplit("/", 1)[1])
    assert (variation.type, variation.index) == ("variation", 4)
    assert "Made from this job" in text(console.get(f"/console/jobs/{parent_id}"))


def test_picking_from_an_unfinished_or_wrong_job_is_explained(member, app):
    console, _, key = member
    assert console.post("/console/jobs/not-a-job/pick", {"action": "U1"}).status_code == 404
    described = api_post(console, key, "/v1/describe", {"imageUrl": "http://127.0.0.1:9/none.png"})
    wait_for(app, described["id"])
    response = console.post(f"/console/jobs/{described['id']}/pick", {"action": "U1"})
    assert response.status_code == 302
    needs = "upscale needs an imagine, variation, blend, reroll, pan, zoom or inpaint job."
    assert f"is a describe job; {needs}" in text(console.get(response.headers["Location"]))
    job = api_post(console, key, "/v1/imagine", {"prompt": "x"})
    wait_for(app, job["id"])
    assert console.post(f"/console/jobs/{job['id']}/pick", {"action": "U9"}).status_code == 400


def test_cancel_button_cancels_a_running_job(slow, console, make_account, app):
    account, _ = make_account("free", email="slow@example.com", password=PASSWORD)
    console.login("slow@example.com")
    created = console.post("/console/playground?tab=imagine", imagine_form())
    job_id = created.headers["Location"].split("job=")[1]
    page = text(console.get(f"/console/jobs/{job_id}"))
    assert "Cancel job" in page and 'data-live="page"' in page
    response = console.post(f"/console/jobs/{job_id}/cancel")
    assert response.status_code == 302
    page = text(console.get(f"/console/jobs/{job_id}"))
    assert "Job cancelled. Its 16 credits were refunded." in page and "This job was cancelled." in page
    again = console.post(f"/console/jobs/{job_id}/cancel")
    assert "is already cancelled and cannot be cancelled." in text(console.get(again.headers["Location"]))
    with app.app_context():
        assert Job.get_by_id(job_id).status == "cancelled"


def test_a_job_pages_asides_are_told_apart(member, app):
    """A job page has two asides (the menu, the job's details): each named, so that screen readers'
    lists of landmarks tell them apart."""
    console, _, key = member
    job = api_post(console, key, "/v1/imagine", {"prompt": "x"})
    wait_for(app, job["id"])
    page = text(console.get(f"/console/jobs/{job['id']}"))
    asides = re.findall(r"<aside\b[^>]*>", page)
    names = [re.search(r'aria-label="([^"]+)"', aside) for aside in asides]
    assert len(asides) == 2 and all(names), asides
    assert len({name[1] for name in names}) == 2, asides


def test_another_accounts_job_page_is_an_html_404(member, make_account, app):
    console, _, _ = member
    _, other_key = make_account(email="stranger@example.com")
    other = console.client.post("/v1/imagine", json={"prompt": "mine"}, headers={"X-API-Key": other_key})
    other_id = other.get_json()["job"]["id"]
    paths = (f"/console/jobs/{other_id}", "/console/jobs/not-a-uuid", f"/console/playground?job={other_id}")
    for path in paths:
        response = console.get(path)
        assert response.status_code == 404 and response.mimetype == "text/html"
        assert "There is nothing here" in text(response)
    assert console.post(f"/console/jobs/{other_id}/cancel").status_code == 404


def test_gallery_filters_by_status_and_type(member, app):
    console, _, key = member
    imagine = console.client.post("/v1/imagine", json={"prompt": "a lone tree"}, headers={"X-API-Key": key})
    wait_for(app, imagine.get_json()["job"]["id"])
    page = text(console.get("/console/jobs"))
    assert "a lone tree" in page and "/thumbs/grid." in page
    assert "a lone tree" in text(console.get("/console/jobs?status=succeeded&type=imagine"))
    filtered = text(console.get("/console/jobs?type=describe"))
    assert "a lone tree" not in filtered and "No jobs match" in filtered
    assert "a lone tree" in text(console.get("/console/jobs?status=bogus"))  # a bad filter shows everything


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("No face was found in the target image", "No face was found in the target image. Its"),
        ("The provider failed.", "The provider failed. Its"),
    ],
)
def test_a_failed_jobs_error_and_refund_are_two_sentences(member, app, error, shown):
    console, _, key = member
    job = api_post(console, key, "/v1/imagine", {"prompt": "a fox", "quality": 0.25})
    wait_for(app, job["id"])
    with app.app_context():
        Job.update(status="failed", error=error).where(Job.id == job["id"]).execute()
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text(console.get(f"/console/jobs/{job['id']}"))))
    assert shown in page


@pytest.mark.parametrize(
    ("params", "title"),
    [
        ({"zoom_ratio": 1}, "Make square"),
        ({"zoom_ratio": 2}, "Zoom out 2×"),
        ({"zoom_ratio": 1.5}, "Zoom out 1.5×"),
    ],
)
def test_a_zoom_job_is_titled_as_its_button(app, params, title):
    with app.test_request_context():
        assert job_title(Job(type="zoom", params=params)) == title


def test_a_gallery_page_past_the_end_says_so(member, app):
    console, _, key = member
    api_post(console, key, "/v1/imagine", {"prompt": "a fox", "quality": 0.25})
    page = text(console.get("/console/jobs?page=999&status=pending"))
    assert "No jobs this far back" in page and "Page 999 is past the last page of jobs." in page
    assert re.search(r'href="/console/jobs\?status=pending[^"]*">Back to the first page', page)  # no page=
    assert "No jobs yet" not in page


def test_live_endpoint_reports_progress_and_html(member, app):
    console, _, key = member
    job = api_post(console, key, "/v1/imagine", {"prompt": "tide pools"})
    wait_for(app, job["id"])
    response = console.get(f"/console/jobs/live?view=panel&id={job['id']}&id=not-a-uuid")
    body = response.get_json()
    assert response.status_code == 200 and len(body["jobs"]) == 1
    live = body["jobs"][0]
    assert (live["status"], live["progress"], live["active"]) == ("succeeded", 100, False)
    assert 'aria-valuenow="100"' in live["html"] and "U2" in live["html"]
    assert "Job page" in live["html"]  # the playground's panel links to the job's page...
    on_page = console.get(f"/console/jobs/live?view=page&id={job['id']}").get_json()["jobs"][0]
    assert "Job page" not in on_page["html"]  # ...which does not link to itself
    assert console.get("/console/jobs/live?view=nope").status_code == 400


def test_the_pages_follow_their_jobs_over_one_event_stream(member, make_account, app):
    console, _, key = member
    jobs = [api_post(console, key, "/v1/imagine", {"prompt": f"tide pools {n}"}) for n in range(2)]
    for job in jobs:
        wait_for(app, job["id"])
    _, other_key = make_account(email="elsewhere@example.com")
    other = api_post(console, other_key, "/v1/imagine", {"prompt": "secret"})
    query = "&".join(f"id={job_id}" for job_id in (jobs[0]["id"], jobs[1]["id"], other["id"], "not-a-uuid"))
    response = console.get(f"/console/jobs/events?{query}")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)  # both have ended: a done event each, then the stream closes
    assert body.count("event: done") == 2 and other["id"] not in body and "id: " not in body
    assert all(f'"id": "{job["id"]}"' in body for job in jobs)
    assert console.get(f"/console/jobs/events?id={other['id']}").status_code == 404
    assert 'data-events-url="/console/jobs/events"' in console.get("/console/jobs").get_data(as_text=True)


def test_a_live_view_ends_when_its_session_is_logged_out_elsewhere(slow, settings, member, make_account, app):
    settings["EVENT_HEARTBEAT"] = 60.0  # no heartbeat comes first: only the logout can end the streams
    console, _, key = member
    job = api_post(console, key, "/v1/imagine", {"prompt": "slow tide"})
    _, other_key = make_account(email="elsewhere@example.com", password=PASSWORD)
    other_job = api_post(console, other_key, "/v1/imagine", {"prompt": "slow dunes"})
    other = Console(app.test_client())
    assert other.login("elsewhere@example.com").status_code == 302
    ended: dict[str, threading.Event] = {}
    for name, browser, job_id in (("member", console, job["id"]), ("other", other, other_job["id"])):
        response = browser.get(f"/console/jobs/events?id={job_id}", buffered=False)
        assert response.status_code == 200
        chunks = iter(response.response)
        assert b"event: status" in next(chunks) + next(chunks)  # retry, then the job as it is
        ended[name] = threading.Event()
        threading.Thread(target=lambda c=chunks, e=ended[name]: (list(c), e.set()), daemon=True).start()
    time.sleep(1.5)
    assert not ended["member"].is_set()  # the job runs 30 s: the stream stays open
    elsewhere = Console(app.test_client())  # the same account, signed in on another device, logs out
    assert elsewhere.login("member@example.com").status_code == 302
    started = time.monotonic()
    assert elsewhere.post("/logout", page="/console/").status_code == 302
    assert ended["member"].wait(10) and time.monotonic() - started < 8  # the job runs 30 s
    assert not ended["other"].is_set()  # another account's live view goes on


def test_a_describe_result_shows_the_image_it_describes(member, app, files):
    console, _, key = member
    url = files.add("/described.png", image_bytes((320, 180), color=(30, 120, 200)))
    job = api_post(console, key, "/v1/describe", {"imageUrl": url})
    wait_for(app, job["id"])
    page = console.get(f"/console/jobs/{job['id']}").get_data(as_text=True)
    assert re.search(rf'<img src="{re.escape(url)}" alt="The image described"[^>]*data-described-image', page)


def test_live_endpoint_needs_a_session_and_hides_other_accounts_jobs(client, member, make_account):
    console, _, _ = member
    _, other_key = make_account(email="hidden@example.com")
    other = client.post("/v1/imagine", json={"prompt": "secret"}, headers={"X-API-Key": other_key}).get_json()
    live = console.get(f"/console/jobs/live?id={other['job']['id']}").get_json()
    assert live == {"jobs": [], "balance": "200"}  # the signed-in account's own balance
    anonymous = client.application.test_client().get("/console/jobs/live")
    assert anonymous.status_code == 401 and anonymous.is_json


def test_unknown_console_pages_and_wrong_methods_get_the_consoles_error_page(member):
    console, _, _ = member
    for method, path, status in [
        ("GET", "/console/nope", 404),
        ("GET", "/console/jobs/00000000-0000-0000-0000-000000000000/pick", 405),  # a POST-only address
        ("PUT", "/login", 405),
    ]:
        response = console.client.open(path, method=method)
        assert response.status_code == status and response.mimetype == "text/html", path
        assert "Log out" in text(response), path  # the signed-in console's page, with its navigation
        assert response.headers["Cache-Control"] == "no-store", path
    assert "POST" in console.get("/console/jobs/x/pick").headers["Allow"]
    for path in ("/v1/nope", "/nope", "/consolex"):  # the API's unknown paths stay JSON
        assert console.get(path).get_json()["success"] is False, path


def test_the_api_stays_json_and_needs_no_csrf_token(member):
    console, _, key = member
    response = console.client.post("/v1/imagine", json={"prompt": "no token"}, headers={"X-API-Key": key})
    assert response.status_code == 202
    missing = console.client.get("/no/such/page")
    assert missing.status_code == 404 and missing.is_json


def test_home_leads_to_the_console(client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/console/"


# ---- webhooks ------------------------------------------------------------------------------------


def test_webhook_secret_is_shown_and_rotated(member, app, files):
    import webhooks

    console, account, key = member
    page = text(console.get("/console/webhooks"))
    with app.app_context():
        secret = webhooks.signing_secret(account.id)
    assert secret.startswith("whsec_") and secret in page
    assert "No webhooks yet" in page
    response = console.post("/console/webhooks/rotate", page="/console/webhooks")
    assert response.status_code == 302
    page = text(console.get("/console/webhooks"))
    with app.app_context():
        rotated = webhooks.signing_secret(account.id)
    assert rotated != secret and rotated in page and secret not in page
    assert "New signing secret made: every webhook sent from now on is signed with it." in page


def test_webhooks_page_lists_jobs_with_a_webhook(member, app, files):
    console, _, key = member
    hook = files.add("/hook", b"", content_type="text/plain")
    job = api_post(console, key, "/v1/imagine", {"prompt": "a harbour at night", "webhookUrl": hook})
    wait_for(app, job["id"])
    api_post(console, key, "/v1/imagine", {"prompt": "no hook here"})
    page = text(console.get("/console/webhooks"))
    assert f'data-webhook-job="{job["id"]}"' in page and "a harbour at night" in page and hook in page
    assert "no hook here" not in page
    assert hook in text(console.get(f"/console/jobs/{job['id']}"))


def test_webhook_rotation_needs_the_form_token(member, app):
    import webhooks

    console, account, _ = member
    with app.app_context():
        secret = webhooks.signing_secret(account.id)
    assert console.client.post("/console/webhooks/rotate").status_code == 400
    with app.app_context():
        assert webhooks.signing_secret(account.id) == secret


def test_a_grid_offers_every_action_on_each_of_its_images(member, app):
    actions = operations.actions()
    assert actions, "a finished grid calls for actions on its images"
    for operation in actions:
        assert GRID in operation.parents.kinds  # an action works on one image of a grid
    console, _, key = member
    job_id = api_post(console, key, "/v1/imagine", {"prompt": "a lighthouse", "quality": 0.25})["id"]
    wait_for(app, job_id)
    page = console.get(f"/console/jobs/{job_id}").get_data(as_text=True)
    for operation in actions:
        for n in range(1, 5):
            assert f'value="{operation.action.letter}{n}"' in page


def test_an_upscaled_image_offers_its_actions_and_explains_a_bad_mask(member, app):
    actions = operations.actions(operations.IMAGE)
    assert {op.name for op in actions} == {"pan", "zoom", "inpaint"}
    console, _, key = member
    grid = api_post(console, key, "/v1/imagine", {"prompt": "a lighthouse", "quality": 0.25})["id"]
    wait_for(app, grid)
    upscale = api_post(console, key, "/v1/upscale", {"jobId": grid, "index": 1})["id"]
    wait_for(app, upscale)
    page = text(console.get(f"/console/jobs/{upscale}"))
    for operation in actions:
        for number, button in enumerate(operation.action.buttons, 1):
            assert f'value="{operation.action.letter}{number}"' in page and button.text in page
    assert 'value="U1"' not in page  # an upscaled image has no tiles to pick
    act, page_path = f"/console/jobs/{upscale}/act", f"/console/jobs/{upscale}"
    assert console.post(act, {"action": "Q9"}, page=page_path).status_code == 400
    region = next(f"{op.action.letter}1" for op in actions if op.action.painted)
    response = console.post(act, {"action": region, "mask": "not base64!"}, page=page_path)
    assert response.status_code == 302
    shown = text(console.get(response.headers["Location"]))
    assert "The 'mask' field must be a base64-encoded PNG image." in shown
    pan = next(f"{op.action.letter}2" for op in actions if op.name == "pan")  # the second: right
    response = console.post(act, {"action": pan}, page=page_path)
    assert response.status_code == 302
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    with app.app_context():
        job = Job.get_by_id(job_id)
        assert job.type == "pan" and job.params == {"direction": "right"} and str(job.parent_id) == upscale
