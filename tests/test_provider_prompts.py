"""Midjourney prompts for the backends that speak them: a modal's prompt filled in as Midjourney does."""

from __future__ import annotations

import pytest

from providers.prompts import remixed

GRID = "a red fox --ar 16:9 --v 6.1 --s 250"


@pytest.mark.parametrize(
    ("prompt", "settings", "expected"),
    [
        (None, {}, GRID),  # the job has no prompt of its own: the parent's, whole
        ("a snowy owl", {}, "a snowy owl --ar 16:9 --v 6.1 --s 250"),
        ("an owl --v 7", {}, "an owl --ar 16:9 --s 250 --v 7"),  # its own parameters replace the parent's
        ("--ar 1:1", {}, "a red fox --v 6.1 --s 250 --ar 1:1"),  # parameters only: the parent's text stays
        ("an owl --AR 1:1", {}, "an owl --v 6.1 --s 250 --ar 1:1"),  # any case
        ("an owl --aspect 1:1 --version 7", {}, "an owl --s 250 --ar 1:1 --v 7"),  # long names
        ("an owl \u2014ar 1:1", {}, "an owl --v 6.1 --s 250 --ar 1:1"),  # an em dash, as phones type it
        ("an owl --niji 6", {}, "an owl --ar 16:9 --s 250 --niji 6"),  # one model: --v or --niji
        ("an owl --no cars trees", {}, "an owl --ar 16:9 --v 6.1 --s 250 --no cars trees"),
        (None, {"zoom": "2", "ar": "2:3"}, "a red fox --v 6.1 --s 250 --zoom 2 --ar 2:3"),
        ("a bay", {"zoom": "1.5", "ar": None}, "a bay --v 6.1 --s 250 --zoom 1.5"),  # None drops one
    ],
)
def test_a_modal_gets_the_parents_prompt_with_the_jobs_own_text_and_parameters(prompt, settings, expected):
    assert remixed(prompt, GRID, **settings) == expected


def test_a_parent_without_parameters_or_prompt():
    assert remixed("an owl", "a red fox") == "an owl"
    assert remixed(None, "") == "" and remixed("an owl", "") == "an owl"
    assert remixed("an owl", "a fox \u2014ar 16:9") == "an owl --ar 16:9"
