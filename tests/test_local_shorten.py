"""The local provider's shorten: words ranked by importance, the least important dropped first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import providers
from fakes import Ctx, provider_settings
from providers import JobCancelled, ProviderError, ShortenRequest
from providers.shorten import shorten, split_prompt

LION = (
    "a majestic lion standing on a cliff at sunset, oil painting, dramatic lighting, highly detailed, 8k, "
    "trending on artstation --ar 16:9 --v 6.1"
)
FILLER = {"majestic", "highly", "detailed", "8k", "trending", "artstation"}
FUNCTION = {"a", "on", "at"}


def words(prompt: str) -> list[str]:
    """The words of a shortened prompt, without its parameters or commas."""
    return split_prompt(prompt)[1].replace(",", " ").split()


def test_five_prompts_each_shorter_than_the_last_keeping_the_subject_and_the_parameters():
    prompts = shorten(LION).prompts
    assert len(prompts) == 5
    lengths = [len(words(prompt)) for prompt in prompts]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) == 5
    assert [len(p) for p in prompts] == sorted((len(p) for p in prompts), reverse=True)
    assert len(prompts[0]) < len(LION)
    for prompt in prompts:
        assert "lion" in words(prompt)
        assert prompt.endswith(" --ar 16:9 --v 6.1")
    assert prompts[-1].startswith("lion")


def test_each_prompt_keeps_a_subset_of_the_previous_ones_words_in_the_original_order():
    original = words(LION)
    previous = original
    for prompt in shorten(LION).prompts:
        kept = words(prompt)
        assert set(kept) <= set(previous)
        positions = [original.index(word) for word in kept]
        assert positions == sorted(positions)
        previous = kept


def test_filler_and_function_words_go_first_and_rank_lowest():
    result = shorten(LION)
    first = set(words(result.prompts[0]))
    assert not first & (FILLER | FUNCTION)
    assert {"lion", "cliff", "sunset", "oil", "painting", "dramatic", "lighting"} <= first
    scores = dict(result.tokens)
    lowest_meaningful = min(scores[w] for w in ("cliff", "sunset", "oil", "painting", "dramatic", "lighting"))
    assert max(scores[w] for w in FILLER | FUNCTION) < lowest_meaningful
    assert max(scores[w] for w in FUNCTION) <= min(scores[w] for w in FILLER)


def test_tokens_cover_every_word_of_the_prompt_in_order_with_importance_from_0_to_1():
    tokens = shorten(LION).tokens
    assert [word for word, _ in tokens] == LION.split(" --")[0].replace(",", "").split()
    assert all(isinstance(score, float) and 0 <= score <= 1 for _, score in tokens)
    assert dict(tokens)["lion"] == 1.0 == max(score for _, score in tokens)


@pytest.mark.parametrize(
    ("prompt", "subject", "kept"),
    [
        ("portrait of an old fisherman with a white beard, in the style of Rembrandt, masterpiece",
         "fisherman", {"old", "beard", "Rembrandt"}),
        ("masterpiece, best quality, cinematic photo, a red fox sleeping in the snow, soft morning light",
         "fox", {"red", "cinematic", "photo"}),
        ("A Beautiful Castle On A Hill At Night", "Castle", {"Hill", "Night"}),
    ],
)
def test_the_subject_is_the_first_real_noun_phrase_and_outlasts_the_rest(prompt, subject, kept):
    result = shorten(prompt)
    assert dict(result.tokens)[subject] == 1.0
    assert words(result.prompts[-1])[-1] == subject
    assert kept <= set(words(result.prompts[0]))
    dropped = {"masterpiece", "best", "quality", "Beautiful", "A", "of", "the"}
    assert not dropped & set(words(result.prompts[0]))


def test_image_urls_stay_at_the_start_and_parameters_at_the_end_untouched():
    prompt = (
        "https://example.com/ref.png  a cute robot::2 watering flowers in a tiny greenhouse"
        " --no people  --s 250"
    )
    for shortened in shorten(prompt).prompts:
        assert shortened.startswith("https://example.com/ref.png ")
        assert shortened.endswith(" --no people --s 250")
        assert "robot::2" in shortened
    assert [word for word, _ in shorten(prompt).tokens][0] == "a"


def test_punctuation_around_words_is_dropped_and_phone_dashes_start_parameters():
    result = shorten('(a red) "cat", [sitting] on a mat!! \u2014ar 3:2 \u2014v 6')
    assert [word for word, _ in result.tokens] == ["a", "red", "cat", "sitting", "on", "a", "mat"]
    assert result.prompts[0] == "red cat, sitting mat \u2014ar 3:2 \u2014v 6"


def test_a_short_prompt_still_gives_five_prompts_down_to_its_subject():
    assert shorten("a cat").prompts == ["cat"] * 5
    assert shorten("cat --ar 1:1").prompts == ["cat --ar 1:1"] * 5
    assert shorten("a cat on a mat").prompts[-1] == "cat"


def test_a_prompt_with_no_words_fails_saying_so():
    with pytest.raises(ProviderError, match="no words to shorten"):
        shorten("--ar 16:9 --v 6.1")
    with pytest.raises(ProviderError, match="no words to shorten"):
        shorten(" ,,, ")


def test_hostile_prompts_take_linear_time():
    """A long run of punctuation and a thousand words: a fraction of a second (quadratic took a minute)."""
    prompt = "!" * 20000 + "a " + " ".join(f"word{i}" for i in range(1000)) + ", " * 500 + "--ar 1:1"
    start = time.monotonic()
    result = shorten(prompt)
    assert time.monotonic() - start < 5
    assert len(result.tokens) == 1001 and result.prompts[0].endswith(" --ar 1:1")


def test_the_same_prompt_gives_the_same_answer_in_another_process():
    """Deterministic: no randomness, and nothing that depends on the interpreter's hash seed."""
    here = shorten(LION)
    script = "import json, sys; from providers.shorten import shorten; r = shorten(sys.argv[1]); " \
             "print(json.dumps([r.prompts, r.tokens]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script, LION], capture_output=True, text=True, env=env,
                         check=True, timeout=60).stdout
    prompts, tokens = json.loads(out)
    assert prompts == here.prompts and [tuple(t) for t in tokens] == here.tokens
    assert shorten(LION) == here


def test_the_local_provider_shortens_reporting_progress():
    provider = providers.create("local", provider_settings())
    assert provider.supports("shorten")
    ctx = Ctx()
    result = provider.run("shorten", ShortenRequest(prompt=LION), ctx)
    assert result.descriptions == shorten(LION).prompts and result.tokens == shorten(LION).tokens
    assert result.image is None and result.tiles is None
    assert ctx.reported == sorted(ctx.reported) and max(ctx.reported) < 100
    with pytest.raises(ProviderError, match="no words"):
        provider.run("shorten", ShortenRequest(prompt="--ar 1:1"), Ctx())
    cancelled = Ctx()
    cancelled.stop.set()
    with pytest.raises(JobCancelled):
        provider.run("shorten", ShortenRequest(prompt=LION), cancelled)
