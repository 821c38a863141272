"""Admin commands: ``flask --app app users|keys|webhooks|init-db ...``."""

from __future__ import annotations

import datetime
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from peewee import fn

import accounts
import credits
import retention
import storage
import webhooks
from auth import SHOWN_PREFIX_LENGTH, hash_key, revoke
from auth import create_key as mint_key
from config import MAX_RETENTION_DAYS, PLANS
from models import Account, ApiKey
from providers import configured as configured_providers

users = AppGroup("users", help="Manage accounts.")
keys = AppGroup("keys", help="Manage API keys.")
webhook_commands = AppGroup("webhooks", help="Manage webhook signing secrets.")
providers = AppGroup("providers", help="Inspect the configured providers.")
storage_commands = AppGroup("storage", help="Manage image storage.")


def _account(email: str) -> Account:
    account = accounts.find_by_email(email)
    if account is None:
        raise click.ClickException(f"no account with email {email}")
    return account


@users.command("create")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--plan", type=click.Choice(list(PLANS)), default="free", show_default=True)
@click.option("--password", default=None, help="Password for the web console.")
def create_user(email: str, name: str, plan: str, password: str | None) -> None:
    """Create an account with its plan's credits; prints its first API key on the last line."""
    try:
        account, key = accounts.create(email, name=name, plan=plan, password=password)
    except accounts.AccountError as exc:
        hint = ""
        if accounts.find_by_email(email) is not None:
            email = accounts.normalize_email(email)
            hint = f"; for another API key, run: .venv/bin/flask --app app keys create {email}"
        raise click.ClickException(f"{exc}{hint}") from None
    click.echo(f"created {account.email} on the {plan} plan with {account.balance} credits; API key:")
    click.echo(key)


@users.command("credits", context_settings={"ignore_unknown_options": True})
@click.argument("email")
@click.argument("amount", type=int)
def grant_credits(email: str, amount: int) -> None:
    """Grant AMOUNT credits (negative to remove them)."""
    account = _account(email)
    try:
        balance = credits.grant(account.id, amount, note="granted by an administrator")
    except (credits.InsufficientCredits, credits.TooManyCredits) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{email}: {amount:+d} credits, balance {balance}")


@users.command("plan")
@click.argument("email")
@click.argument("plan", type=click.Choice(list(PLANS)))
def change_plan(email: str, plan: str) -> None:
    """Move an account to PLAN (an upgrade tops the balance up to the plan's credits, once in 30 days)."""
    account, granted = accounts.change_plan(_account(email), plan)
    click.echo(f"{email}: now on the {plan} plan, {granted:+d} credits, balance {account.balance}")


@keys.command("create")
@click.argument("email")
@click.option("--name", default="", help="A name to recognise the key by.")
def create_key(email: str, name: str) -> None:
    """Create another API key for an account; prints it on the last line."""
    account = _account(email)
    try:
        row, key = mint_key(account, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created key {row.prefix}… for {email}:")
    click.echo(key)


@keys.command("revoke")
@click.argument("prefix")
def revoke_key(prefix: str) -> None:
    """Revoke the live key that starts with PREFIX (its shown prefix, or the whole key).

    Anything longer than the shown prefix is taken as the whole key and must be it: its hash is compared, so a
    mistyped key that happens to start like a live one revokes nothing."""
    prefix = prefix.removesuffix("…")  # as `keys create` and the console show it
    if len(prefix) < 12:
        raise click.ClickException("give at least the first 12 characters of the key")
    whole = len(prefix) > SHOWN_PREFIX_LENGTH
    starts = fn.SUBSTR(ApiKey.prefix, 1, len(prefix)) == prefix  # case counts: LIKE would ignore it
    chosen = ApiKey.key_hash == hash_key(prefix) if whole else starts
    matches = list(ApiKey.select().where(ApiKey.revoked_at.is_null() & chosen))
    if not matches and whole:  # the key itself is a secret: not echoed
        raise click.ClickException(f"no live key is the key given (starting {prefix[:SHOWN_PREFIX_LENGTH]}…)")
    if not matches:
        raise click.ClickException(f"no live key starts with {prefix}")
    if len(matches) > 1:
        raise click.ClickException(f"{len(matches)} keys start with {prefix}; give more characters")
    revoke(matches[0])
    click.echo(f"revoked {matches[0].prefix}…")


@webhook_commands.command("secret")
@click.argument("email")
@click.option("--rotate", is_flag=True, help="Replace the secret with a new one.")
def webhook_secret(email: str, rotate: bool) -> None:
    """Print an account's webhook signing secret (a new one with --rotate) on the last line."""
    account = _account(email)
    if rotate:
        secret = webhooks.rotate_signing_secret(account.id)
        click.echo(f"rotated the webhook signing secret of {email}; pending webhooks are signed with it:")
    else:
        secret = webhooks.signing_secret(account.id)
        click.echo(f"webhook signing secret of {email}:")
    click.echo(secret)


@providers.command("check")
def check_providers() -> None:
    """Ask each configured provider whether its backend answers and accepts our credentials.

    An operation the configured provider cannot do is "not supported": said, but not a failure."""
    failed = False
    for operation, health in configured_providers().check().items():
        state = "not supported" if not health.supported else "ok" if health.ok else "FAILED"
        click.echo(f"{operation}: {health.name} {state}: {health.detail}")
        failed = failed or (health.supported and not health.ok)
    if failed:
        raise click.exceptions.Exit(1)


@storage_commands.command("import")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
@click.option("--overwrite", is_flag=True, help="Copy images the storage already has, too.")
def import_images(data_dir: Path | None, overwrite: bool) -> None:
    """Copy the images of a data directory (by default this one's) into the configured storage."""
    data_dir = data_dir or Path(current_app.config["DATA_DIR"])
    source = storage.LocalStorage((data_dir / "images").resolve())
    if not source.root.is_dir():  # not a data directory, or one with no image yet: nothing could be copied
        raise click.ClickException(f"{data_dir} has no images/ directory: there is nothing to import")
    target = storage.current()
    if isinstance(target, storage.LocalStorage) and target.root.resolve() == source.root:
        raise click.ClickException(f"the images in {source.root} are already the configured storage")
    try:
        copied, skipped = storage.copy_images(source, target, overwrite=overwrite)
    except storage.StorageUnavailable as exc:
        why = exc.detail or exc
        raise click.ClickException(f"{why} Nothing more was copied; run the import again.") from None
    click.echo(f"copied {copied} images from {source.describe()} to {target.describe()}")
    click.echo(f"{skipped} images were there already")


@storage_commands.command("prune")
@click.option(
    "--days",
    type=click.IntRange(min=1, max=MAX_RETENTION_DAYS),
    default=None,
    help="Days after which a job's images go [default: APIFRAME_IMAGE_RETENTION_DAYS].",
)
@click.option("--dry-run", is_flag=True, help="Only count the jobs whose images would be deleted.")
def prune_images(days: int | None, dry_run: bool) -> None:
    """Delete the stored images (and inputs) of jobs that ended more than DAYS days ago; the jobs stay."""
    days = current_app.config["IMAGE_RETENTION_DAYS"] if days is None else days
    if not days:
        raise click.ClickException(
            "images are kept forever here: give --days N (at least 1), or set APIFRAME_IMAGE_RETENTION_DAYS"
        )
    try:
        pruned = retention.prune(datetime.timedelta(days=days), dry_run=dry_run)
    except storage.StorageUnavailable as exc:
        why = exc.detail or exc
        raise click.ClickException(f"{why} The jobs left keep their images; run the prune again.") from None
    ended = f"jobs that ended more than {days} days ago"
    if dry_run:
        click.echo(f"{pruned.found} {ended} have their images; nothing was deleted")
    else:
        click.echo(f"deleted the images of {pruned.deleted} {ended}")


@click.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (also done whenever the app starts)."""
    click.echo("database is up to date")


def init_app(app: Flask) -> None:
    """Register the admin commands on ``app``."""
    app.cli.add_command(users)
    app.cli.add_command(keys)
    app.cli.add_command(webhook_commands)
    app.cli.add_command(providers)
    app.cli.add_command(storage_commands)
    app.cli.add_command(init_db)
