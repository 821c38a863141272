"""The playground: imagine, describe and blend from forms, through the API's own validation and job path."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

import operations
from console.blueprints import console_bp as bp
from console.forms import ImagineForm, playground_forms
from console.gallery import find_job, job_forms, submit
from errors import ApiError
from jobs import list_for
from schemas import IMAGINE_DEFAULTS

FORMS = playground_forms()

# API field name -> form field name, to show the API's validation messages beside the right input.
FORM_FIELDS = {
    "prompt": "prompt",
    "aspectRatio": "aspect_ratio",
    "version": "version",
    "quality": "quality",
    "style": "style",
    "chaos": "chaos",
    "stylize": "stylize",
    "imageUrl": "image_url",
    "imageUrls": "image_urls",
    "targetImageUrl": "target_image_url",
    "swapImageUrl": "swap_image_url",
}
RECENT = 6


def _tab() -> str:
    tab = request.args.get("tab", next(iter(FORMS)))
    if tab not in FORMS:
        abort(404)
    return tab


def _prefilled(tab: str, job_id: str | None) -> tuple[FlaskForm, Any]:
    """The tab's form, filled from the job being shown (to tweak and run again), and that job; with no
    job, the imagine form takes ``?prompt=`` (the "Imagine this" link under a description)."""
    if not job_id:
        prompt = request.args.get("prompt")
        return (ImagineForm(prompt=prompt) if prompt and FORMS[tab] is ImagineForm else FORMS[tab]()), None
    job = find_job(job_id)
    if FORMS[tab] is ImagineForm and job.type == tab:
        params = {**IMAGINE_DEFAULTS, **(job.params or {})}
        return ImagineForm(
            prompt=job.prompt,
            aspect_ratio=params["aspect_ratio"],
            version=params["version"],
            quality=f"{params['quality']:g}",
            style=params.get("style") or "",
            chaos=round(params["chaos"]),
            stylize=round(params["stylize"]),
        ), job
    return FORMS[tab](), job


def _page(tab: str, form: FlaskForm, job: Any, status: int = 200) -> tuple[str, int]:
    return render_template(
        "console/playground.html",
        tab=tab,
        tabs=FORMS,
        form=form,
        job=job,
        recent=[other for other in list_for(g.account, limit=RECENT + 1, offset=0) if other != job][:RECENT],
        **job_forms(),
    ), status


def _show_api_error(form: FlaskForm, exc: ApiError) -> None:
    """Put the API's messages beside the inputs they are about (or above the form)."""
    placed = False
    for api_field, messages in (exc.fields or {}).items():
        name = FORM_FIELDS.get(api_field)
        if name and name in form:
            text = messages[0] if isinstance(messages, list) else str(messages)
            form[name].errors.append(str(text)[:1].upper() + str(text)[1:])
            placed = True
    if not placed:
        form.form_errors.append(exc.message)


@bp.get("/playground")
def playground() -> tuple[str, int]:
    """The forms, and the job just submitted with its live progress and result."""
    tab = _tab()
    form, job = _prefilled(tab, request.args.get("job"))
    return _page(tab, form, job)


@bp.post("/playground")
def run() -> Response | tuple[str, int]:
    """Submit the tab's form as the API request it stands for, then show the new job."""
    tab = _tab()
    form = FORMS[tab]()
    if not form.validate_on_submit():
        return _page(tab, form, None, 400)
    try:
        job = submit(operations.get(tab), form.payload())
    except ApiError as exc:
        _show_api_error(form, exc)
        return _page(tab, form, None, exc.status if exc.status != 404 else 400)
    flash(f"{tab.capitalize()} job accepted: {job.cost} credits.", "success")
    return redirect(url_for("console.playground", tab=tab, job=job.id))
