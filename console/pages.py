"""The signed-in pages about the account: dashboard, API keys, usage and plans."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

import accounts
import auth
import jobs
import ratelimit
import webhooks
from config import PLANS
from console.blueprints import console_bp as bp
from console.forms import ConfirmForm, KeyForm, PasswordForm, PlanForm
from console.login import end_sessions, log_in
from console.signin import show_key_once, take_new_key
from credits import GRANT_REASONS
from models import ApiKey, Job, LedgerEntry
from ratelimit import requests_this_minute

RECENT_JOBS = 8
LEDGER_PAGE = 50
RECENT_WEBHOOKS = 20
MAX_PAGE = 100_000  # past every real page; keeps the SQL offset in range


@dataclass(frozen=True)
class KeyUsage:
    """How much of the plan's per-minute rate one live key has used."""

    key: ApiKey
    used: int
    limit: int

    @property
    def percent(self) -> int:
        """Used, as a percentage of the limit."""
        return min(100, round(100 * self.used / self.limit)) if self.limit else 0


def live_keys() -> list[ApiKey]:
    """The signed-in account's keys that work, newest first."""
    return list(
        ApiKey.select()
        .where((ApiKey.account == g.account.id) & ApiKey.revoked_at.is_null())
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )


def key_usage() -> list[KeyUsage]:
    """Requests this minute for each live key, against the plan's limit."""
    usage = []
    for key in live_keys():
        used, limit = requests_this_minute(key.key_hash, g.account.plan)
        usage.append(KeyUsage(key, used, limit))
    return usage


def page_number() -> int:
    """The ``page`` query argument (1 when missing or bad, at most ``MAX_PAGE``)."""
    page = request.args.get("page", type=int) or 1
    return min(max(page, 1), MAX_PAGE)


@bp.get("/")
def dashboard() -> str:
    """Plan, credits, requests this minute and recent jobs."""
    recent = jobs.list_for(g.account, limit=RECENT_JOBS, offset=0)
    return render_template(
        "console/dashboard.html",
        plan=PLANS[g.account.plan],
        usage=key_usage(),
        recent=recent,
        new_key=take_new_key(),
    )


@bp.get("/keys")
def keys() -> str:
    """Every key of the account, and a form for a new one."""
    return _keys_page(KeyForm(), 200)


def _keys_page(form: KeyForm, status: int) -> tuple[str, int]:
    all_keys = list(
        ApiKey.select()
        .where(ApiKey.account == g.account.id)
        .order_by(ApiKey.revoked_at.is_null(False), ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return render_template(
        "console/keys.html", form=form, keys=all_keys, new_key=take_new_key(), revoke_form=ConfirmForm()
    ), status


@bp.post("/keys")
def create_key() -> Response | tuple[str, int]:
    """Mint a key; it is shown once, on the page this redirects to."""
    form = KeyForm()
    if not form.validate_on_submit():
        return _keys_page(form, 400)
    row, key = auth.create_key(g.account, (form.name.data or "").strip())
    show_key_once(key)
    flash(f"Key {row.prefix}… created.", "success")
    return redirect(url_for("console.keys"))


@bp.post("/keys/<int(max=2147483647):key_id>/revoke")
def revoke_key(key_id: int) -> Response:
    """Revoke one of the account's keys: it stops working at once."""
    key = ApiKey.get_or_none((ApiKey.id == key_id) & (ApiKey.account == g.account.id))
    if key is None:
        abort(404)
    if auth.revoke(key):
        flash(f"Key {key.prefix}… revoked. Requests with it now get 401 UNAUTHORIZED.", "success")
    else:
        flash(f"Key {key.prefix}… was already revoked.", "info")
    return redirect(url_for("console.keys"))


@bp.get("/usage")
def usage() -> str:
    """The credit ledger: what each job cost, refunds and grants."""
    page = page_number()
    entries = list(
        LedgerEntry.select()
        .where(LedgerEntry.account == g.account.id)
        .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
        .limit(LEDGER_PAGE + 1)
        .offset((page - 1) * LEDGER_PAGE)
    )
    return render_template(
        "console/usage.html",
        entries=entries[:LEDGER_PAGE],
        page=page,
        has_more=len(entries) > LEDGER_PAGE,
        totals=_ledger_totals(),
        grant_reasons=GRANT_REASONS,
    )


def _ledger_totals() -> dict[str, int]:
    """Credits spent, refunded and granted over the account's whole ledger (kept as it grows)."""
    return {"spent": g.account.spent, "refunded": g.account.refunded, "granted": g.account.granted}


@bp.get("/plans")
def plans() -> str:
    """The plan table, with a switch button when self-upgrade is allowed."""
    return render_template(
        "console/plans.html",
        plans=PLANS.values(),
        reads_per_minute=ratelimit.reads_per_minute,
        form=PlanForm(),
        allow_switch=current_app.config["ALLOW_SELF_UPGRADE"],
    )


@bp.post("/plans")
def switch_plan() -> Response | tuple[str, int]:
    """Move to another plan, granting its credits (only when APIFRAME_ALLOW_SELF_UPGRADE is on)."""
    if not current_app.config["ALLOW_SELF_UPGRADE"]:
        abort(403, "Plans are changed by the operator of this service. Ask them to switch yours.")
    form = PlanForm()
    if not form.validate_on_submit():
        abort(400, "Pick one of the plans.")
    plan = PLANS[form.plan.data]
    if plan.name == g.account.plan:
        flash(f"You are already on the {plan.title} plan.", "info")
        return redirect(url_for("console.plans"))
    account, granted = accounts.change_plan(g.account, plan.name)
    if granted:
        added = f"your balance was topped up to {account.balance:,} credits (+{granted:,})."
    else:
        added = "no credits were added (an upgrade tops your balance up once per plan in 30 days)."
    flash(f"You are now on the {plan.title} plan: {added}", "success")
    return redirect(url_for("console.plans"))


@bp.get("/webhooks")
def webhooks_page() -> str:
    """The webhook signing secret (to reveal, copy and rotate) and the latest webhooks sent."""
    recent = list(
        Job.select()
        .where((Job.account == g.account.id) & Job.webhook_url.is_null(False))
        .order_by(Job.created_at.desc(), Job.id)
        .limit(RECENT_WEBHOOKS)
    )
    return render_template(
        "console/webhooks.html",
        secret=webhooks.signing_secret(g.account.id),
        recent=recent,
        form=ConfirmForm(),
    )


@bp.post("/webhooks/rotate")
def rotate_webhook_secret() -> Response:
    """Replace the signing secret; every webhook sent from now on is signed with the new one."""
    webhooks.rotate_signing_secret(g.account.id)
    flash("New signing secret made: every webhook sent from now on is signed with it.", "success")
    return redirect(url_for("console.webhooks_page"))


@bp.route("/password", methods=["GET", "POST"])
def password() -> Response | tuple[str, int]:
    """Change the console password; every other session of the account ends."""
    form = PasswordForm()
    if not form.validate_on_submit():
        return render_template("console/password.html", form=form), 400 if form.is_submitted() else 200
    try:
        accounts.change_password(g.account, form.current.data, form.new.data)
    except accounts.AccountError as exc:
        form.current.errors.append(str(exc).capitalize() + ".")
        return render_template("console/password.html", form=form), 400
    log_in(end_sessions(g.account.id))  # this browser stays signed in, under the new generation
    flash("Password changed. Every other session of your account has been logged out.", "success")
    return redirect(url_for("console.dashboard"))
