"""Signup, login and logout (rate-limited per client address on POST)."""

from __future__ import annotations

from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

import accounts
from console.blueprints import signin_bp as bp
from console.forms import ConfirmForm, LoginForm, SignupForm
from console.login import current_account, log_in, log_out, safe_next

NEW_KEY = "new_key"  # the session entry that carries a new API key to the one page that shows it


def show_key_once(key: str) -> None:
    """Keep ``key`` for the next page only, which shows it once (see ``take_new_key``)."""
    session[NEW_KEY] = key


def take_new_key() -> str | None:
    """The new API key to show on this page, if any; it is gone from the session afterwards."""
    return session.pop(NEW_KEY, None)


@bp.get("/")
def home() -> Response:
    """The console for the signed in, the login page for everyone else."""
    return redirect(url_for("console.dashboard"))


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Response | tuple[str, int] | str:
    """Create an account on the free plan, sign in, and show its first API key once."""
    g.account = current_account()
    if not current_app.config["ALLOW_SIGNUP"]:
        return render_template("signin/signup_closed.html"), 403
    form = SignupForm()
    if g.account is not None and not form.is_submitted():
        return redirect(url_for("console.dashboard"))
    if not form.validate_on_submit():
        return render_template("signin/signup.html", form=form), 400 if form.is_submitted() else 200
    try:
        account, key = accounts.create(form.email.data, name=form.name.data, password=form.password.data)
    except accounts.AccountError as exc:
        if accounts.find_by_email(form.email.data) is not None:
            form.email.errors.append("An account with this email already exists. Log in instead?")
        else:
            form.form_errors.append(str(exc).capitalize() + ".")
        return render_template("signin/signup.html", form=form), 400
    log_in(account)
    show_key_once(key)
    flash(f"Welcome, {account.name}! Your account has {account.balance} free credits.", "success")
    return redirect(url_for("console.dashboard"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    """Log in with email and password, then go where the visitor was headed."""
    account = current_account()  # before the form: an ended session is cleared, with any CSRF token in it
    form = LoginForm(next=request.args.get("next", ""))
    if account is not None and not form.is_submitted():
        return redirect(safe_next(form.next.data))
    if not form.validate_on_submit():
        return render_template("signin/login.html", form=form), 400 if form.is_submitted() else 200
    account = accounts.authenticate(form.email.data, form.password.data)
    if account is None:
        form.form_errors.append("Wrong email or password.")
        return render_template("signin/login.html", form=form), 400
    log_in(account)
    return redirect(safe_next(form.next.data))


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Response | str:
    """Log out (POST, from the button in the console; GET asks first)."""
    form = ConfirmForm()
    if form.validate_on_submit():  # before current_account(), which clears an ended session's token
        log_out()
        flash("You are logged out.", "info")
        return redirect(url_for("signin.login"))
    g.account = current_account()  # ended: the page says so and shows no form
    return render_template("signin/logout.html", form=form)
