"""The console's forms (Flask-WTF: every POST form carries a CSRF token)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_wtf import FlaskForm
from flask_wtf.form import SUBMIT_METHODS
from flask_wtf.form import _Auto as FORM_DATA_AUTO
from marshmallow import Schema
from wtforms import (
    EmailField,
    HiddenField,
    IntegerRangeField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
    URLField,
)
from wtforms.validators import (
    AnyOf,
    DataRequired,
    EqualTo,
    Length,
    Optional,
    Regexp,
    ValidationError,
)

import operations
import schemas
from accounts import EMAIL_PATTERN, MAX_EMAIL_LENGTH, MAX_NAME_LENGTH, MIN_PASSWORD_LENGTH
from auth import MAX_KEY_NAME_LENGTH
from config import PLANS
from imaging import ASPECT_RATIOS
from jobs import STATUSES
from operations import Operation
from schemas import IMAGINE_DEFAULTS


def whole_range(low: int, high: int) -> Any:
    """NumberRange for a whole number of any length (NumberRange's NaN check overflows past 1e308)."""
    message = f"Number must be between {low} and {high}."

    def check(form: Any, field: Any) -> None:
        if field.data is None or not low <= field.data <= high:
            raise ValidationError(message)

    return check


EMAIL = Regexp(EMAIL_PATTERN, message="Enter an email address like jane@example.com.")
# The buttons under a finished grid: each action's letter and an image's number (U1..U4, V1..V4).
PICKS = {f"{op.action.letter}{index}": (op, index) for op in operations.actions() for index in range(1, 5)}


class ConsoleForm(FlaskForm):
    """A form posted by a browser: its data is the form body only (a JSON body is not a form)."""

    class Meta(FlaskForm.Meta):
        def wrap_formdata(self, form: Any, formdata: Any) -> Any:
            """The posted form fields only: no console form takes a file, and a JSON body is not a form."""
            if formdata is not FORM_DATA_AUTO or request.method not in SUBMIT_METHODS:
                return super().wrap_formdata(form, formdata)
            return request.form or None

    def validate(self, extra_validators: Any = None) -> bool:
        """The fields' checks, once no field holds text a database cannot store (before any looks it up)."""
        unstorable = [f for f in self if isinstance(f.data, str) and schemas.unstorable(f.data)]
        for field in unstorable:
            field.errors = ["Remove the NUL character or lone surrogate: it cannot be stored."]
        return not unstorable and super().validate(extra_validators)


class SignupForm(ConsoleForm):
    """Create an account."""

    name = StringField(
        "Name",
        validators=[DataRequired("Tell us your name."), Length(max=MAX_NAME_LENGTH)],
        render_kw={"autocomplete": "name"},
    )
    email = EmailField(
        "Email",
        validators=[DataRequired("Enter your email address."), Length(max=MAX_EMAIL_LENGTH), EMAIL],
        render_kw={"autocomplete": "email"},
    )
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Choose a password."),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=256,
                message=f"Use at least {MIN_PASSWORD_LENGTH} characters.",
            ),
        ],
        render_kw={"autocomplete": "new-password"},
    )


class LoginForm(ConsoleForm):
    """Log in with email and password."""

    email = EmailField(
        "Email",
        validators=[DataRequired("Enter your email address."), Length(max=MAX_EMAIL_LENGTH)],
        render_kw={"autocomplete": "email"},
    )
    password = PasswordField(
        "Password",
        validators=[DataRequired("Enter your password.")],
        render_kw={"autocomplete": "current-password"},
    )
    next = HiddenField()


class PasswordForm(ConsoleForm):
    """Change the console password: the current one, and the new one twice."""

    current = PasswordField(
        "Current password",
        validators=[DataRequired("Enter your current password.")],
        render_kw={"autocomplete": "current-password"},
    )
    new = PasswordField(
        "New password",
        validators=[
            DataRequired("Choose a new password."),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=256,
                message=f"Use at least {MIN_PASSWORD_LENGTH} characters.",
            ),
        ],
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField(
        "New password, again",
        validators=[
            DataRequired("Type the new password again."),
            EqualTo("new", "The two new passwords differ."),
        ],
        render_kw={"autocomplete": "new-password"},
    )


class ConfirmForm(ConsoleForm):
    """A button that only needs the CSRF token: log out, revoke a key, cancel a job, rotate a secret."""


class KeyForm(ConsoleForm):
    """Create an API key."""

    name = StringField(
        "Name",
        validators=[Optional(), Length(max=MAX_KEY_NAME_LENGTH)],
        render_kw={"placeholder": "e.g. laptop"},
    )


class PickForm(ConsoleForm):
    """The buttons under a grid (U1-U4, V1-V4): an operation on one of its four images."""

    action = StringField(validators=[AnyOf(list(PICKS), message=f"Pick one of {', '.join(PICKS)}.")])

    def operation(self) -> tuple[Operation, int]:
        """The pressed button's operation, and the image's number."""
        return PICKS[self.action.data]


# The buttons under one image: each action's letter and a button's number (P1 pans left, Z3 makes square ...).
IMAGE_ACTIONS = {
    f"{op.action.letter}{number}": (op, button)
    for op in operations.actions(operations.IMAGE)
    for number, button in enumerate(op.action.buttons, 1)
}


class ImageActionForm(ConsoleForm):
    """The buttons under one image (pan, zoom out, vary region), and the mask painted for vary region."""

    action = StringField(
        validators=[AnyOf(list(IMAGE_ACTIONS), message=f"Pick one of {', '.join(IMAGE_ACTIONS)}.")]
    )
    mask = HiddenField(validators=[Optional(), Length(max=schemas.MAX_MASK_LENGTH)])

    def payload(self, job_id: str) -> tuple[Operation, dict[str, Any]]:
        """The pressed button's operation, and the request body it sends for image ``job_id``."""
        operation, button = IMAGE_ACTIONS[self.action.data]
        body = {"jobId": job_id, **button.fields}
        if operation.action.painted:
            body["mask"] = self.mask.data or ""
        return operation, body


class PlanForm(ConsoleForm):
    """Switch to another plan."""

    plan = StringField(validators=[AnyOf(list(PLANS), message="Pick one of the plans.")])


def _choices(values: tuple[Any, ...], none: str | None = None) -> list[SelectChoice]:
    """Options for ``values``, after an empty one labelled ``none`` if given."""
    empty = [SelectChoice("", none)] if none is not None else []
    return empty + [SelectChoice(str(value)) for value in values]


class PlaygroundForm(ConsoleForm):
    """A playground tab: the form of one request schema, with the body it makes for the API."""

    request: type[Schema]  # the operation's request schema this form fills in
    icon = "sparkles"

    def payload(self) -> dict[str, Any]:
        """The request body the API would get."""
        raise NotImplementedError


def playground_forms() -> dict[str, type[PlaygroundForm]]:
    """The playground's tabs: each operation whose request schema has a form, by operation name."""
    forms = {form.request: form for form in PlaygroundForm.__subclasses__()}
    return {op.name: forms[op.request] for op in operations.OPERATIONS if op.request in forms}


class ImagineForm(PlaygroundForm):
    """Four images from a prompt: the fields of POST /v1/imagine."""

    request = schemas.ImagineRequest

    prompt = TextAreaField(
        "Prompt",
        validators=[DataRequired("Describe the image you want."), Length(max=schemas.MAX_PROMPT_LENGTH)],
        render_kw={"rows": 3, "placeholder": "a lighthouse on a cliff at dusk, dramatic clouds"},
    )
    aspect_ratio = SelectField(
        "Aspect ratio", choices=_choices(ASPECT_RATIOS), default=IMAGINE_DEFAULTS["aspect_ratio"]
    )
    version = SelectField("Version", choices=_choices(schemas.VERSIONS), default=IMAGINE_DEFAULTS["version"])
    quality = SelectField(
        "Quality",
        choices=[
            SelectChoice("1", "1 (1024 px)"),
            SelectChoice("0.5", "0.5 (728 px)"),
            SelectChoice("0.25", "0.25 (512 px)"),
        ],
        default=f"{IMAGINE_DEFAULTS['quality']:g}",
    )
    style = SelectField("Style", choices=_choices(schemas.STYLES, none="none"), default="")
    chaos = IntegerRangeField("Chaos", validators=[whole_range(0, 100)], default=IMAGINE_DEFAULTS["chaos"])
    stylize = IntegerRangeField(
        "Stylize", validators=[whole_range(0, 1000)], default=IMAGINE_DEFAULTS["stylize"]
    )

    def payload(self) -> dict[str, Any]:
        """The request body the API would get."""
        return {
            "prompt": self.prompt.data,
            "aspectRatio": self.aspect_ratio.data,
            "version": self.version.data,
            "quality": float(self.quality.data),
            "style": self.style.data or None,
            "chaos": self.chaos.data,
            "stylize": self.stylize.data,
        }


class DescribeForm(PlaygroundForm):
    """Four prompts for an image: the fields of POST /v1/describe."""

    request = schemas.DescribeRequest
    icon = "text"
    image_url = URLField(
        "Image URL",
        validators=[DataRequired("Enter the URL of an image."), Length(max=schemas.MAX_URL_LENGTH)],
        description="An http(s) URL the server can fetch. You get four prompts that describe it.",
        render_kw={"placeholder": "https://example.com/photo.jpg"},
    )

    def payload(self) -> dict[str, Any]:
        """The request body the API would get."""
        return {"imageUrl": self.image_url.data}


BLEND_SHAPES = tuple(schemas.BLEND_DIMENSIONS.items())  # ("square", "1:1") ...


class BlendForm(PlaygroundForm):
    """Blend images: the fields of POST /v1/blend, one URL per line."""

    request = schemas.BlendRequest
    icon = "circles"
    image_urls = TextAreaField(
        "Image URLs",
        validators=[DataRequired("Enter two to five image URLs, one per line.")],
        description="Two to five http(s) image URLs, one per line. You get four blends.",
        render_kw={"rows": 5, "placeholder": "https://example.com/one.png\nhttps://example.com/two.png"},
    )
    dimension = SelectField(
        "Dimension",
        choices=[SelectChoice(name, f"{name.capitalize()} ({shape})") for name, shape in BLEND_SHAPES],
        default="square",
        description="The shape of the four blends.",
    )

    def urls(self) -> list[str]:
        """The non-empty lines."""
        return [line.strip() for line in (self.image_urls.data or "").splitlines() if line.strip()]

    def validate_image_urls(self, field: TextAreaField) -> None:
        """Two to five URLs (the API checks each one)."""
        if not 2 <= len(self.urls()) <= 5:
            raise ValidationError("Enter two to five image URLs, one per line.")

    def payload(self) -> dict[str, Any]:
        """The request body the API would get."""
        return {"imageUrls": self.urls(), "dimension": self.dimension.data}


class ShortenForm(PlaygroundForm):
    """Five shorter prompts: the fields of POST /v1/shorten."""

    request = schemas.ShortenRequest
    icon = "text"
    prompt = TextAreaField(
        "Prompt",
        validators=[DataRequired("Enter the prompt to shorten."), Length(max=schemas.MAX_PROMPT_LENGTH)],
        description="You get five shorter prompts, and how much each word matters.",
        render_kw={"rows": 3, "placeholder": "a very beautiful and highly detailed painting of a lighthouse"},
    )

    def payload(self) -> dict[str, Any]:
        """The request body the API would get."""
        return {"prompt": self.prompt.data}


URL_LENGTH = Length(max=schemas.MAX_URL_LENGTH)


class FaceSwapForm(PlaygroundForm):
    """The face of one image on another: the fields of POST /v1/faceswap."""

    request = schemas.FaceSwapRequest
    icon = "images"
    target_image_url = URLField(
        "Target image URL",
        validators=[DataRequired("Enter the URL of the image to change."), URL_LENGTH],
        description="The photo whose face is replaced.",
        render_kw={"placeholder": "https://example.com/portrait.jpg"},
    )
    swap_image_url = URLField(
        "Face image URL",
        validators=[DataRequired("Enter the URL of the image with the face."), URL_LENGTH],
        description="The photo the face is taken from.",
        render_kw={"placeholder": "https://example.com/face.jpg"},
    )

    def payload(self) -> dict[str, Any]:
        """The request body the API would get."""
        return {"targetImageUrl": self.target_image_url.data, "swapImageUrl": self.swap_image_url.data}


class JobFilterForm(ConsoleForm):
    """The gallery's filters (a GET form: nothing changes, so no CSRF token)."""

    class Meta:
        csrf = False

    status = SelectField("Status", choices=_choices(STATUSES, none="Any status"), default="")
    type = SelectField("Type", choices=_choices(operations.names(), none="Any type"), default="")
