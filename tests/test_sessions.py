"""Console sessions end on the server: a cookie copied before logout or a password change opens nothing."""

from __future__ import annotations

import accounts
from test_console import PASSWORD, TOKEN, Console, text


def _signed_in(app, make_account, email: str = "s@example.com") -> tuple[Console, str]:
    make_account("free", email=email, password=PASSWORD)
    console = Console(app.test_client())
    assert console.login(email).status_code == 302
    return console, console.client.get_cookie("apiframe_session").value


def _with_cookie(app, cookie: str) -> Console:
    other = Console(app.test_client())
    other.client.set_cookie("apiframe_session", cookie)
    return other


def test_a_cookie_copied_before_logout_no_longer_opens_the_console(app, make_account):
    console, cookie = _signed_in(app, make_account)
    assert _with_cookie(app, cookie).get("/console/").status_code == 200
    assert console.post("/logout", page="/console/").status_code == 302
    stolen = _with_cookie(app, cookie)
    response = stolen.get("/console/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert stolen.get("/console/jobs/live?id=x").status_code == 401
    assert console.get("/console/").status_code == 302
    assert console.login("s@example.com").status_code == 302  # logging in again works
    assert console.get("/console/").status_code == 200


def test_a_password_change_ends_other_sessions_and_keeps_this_one(app, make_account):
    console, _ = _signed_in(app, make_account, "p@example.com")
    elsewhere = Console(app.test_client())
    assert elsewhere.login("p@example.com").status_code == 302
    page = console.get("/console/password")
    assert page.status_code == 200 and TOKEN.search(page.get_data(as_text=True))
    new = "a brand new secret"
    response = console.post(
        "/console/password", {"current": PASSWORD, "new": new, "confirm": new}, page="/console/password"
    )
    assert response.status_code == 302
    assert "Password changed" in text(console.get("/console/"))
    assert elsewhere.get("/console/").status_code == 302
    with app.app_context():
        assert accounts.authenticate("p@example.com", new) is not None
        assert accounts.authenticate("p@example.com", PASSWORD) is None


def test_a_password_change_needs_the_current_password_matching_new_ones_and_csrf(app, make_account):
    console, _ = _signed_in(app, make_account, "c@example.com")
    wrong = console.post(
        "/console/password",
        {"current": "not it at all", "new": "x" * 10, "confirm": "x" * 10},
        page="/console/password",
    )
    assert wrong.status_code == 400 and "The current password is wrong." in text(wrong)
    differ = console.post(
        "/console/password",
        {"current": PASSWORD, "new": "x" * 10, "confirm": "y" * 10},
        page="/console/password",
    )
    assert differ.status_code == 400 and "The two new passwords differ." in text(differ)
    short = console.post(
        "/console/password",
        {"current": PASSWORD, "new": "short", "confirm": "short"},
        page="/console/password",
    )
    assert short.status_code == 400 and "Use at least 8 characters." in text(short)
    forged = console.client.post(
        "/console/password", data={"current": PASSWORD, "new": "x" * 10, "confirm": "x" * 10}
    )
    assert forged.status_code == 400
    with app.app_context():
        assert accounts.authenticate("c@example.com", PASSWORD) is not None
