"""Midjourney-style ``/shorten``: rank a prompt's words by importance and drop the least important first.

Each word gets an importance from 0 to 1: the subject (the head of the first phrase) is 1; style,
medium, colour and named words (artists, places) rank high; other content words in the middle;
filler (quality boosters such as "8k", "masterpiece", "highly detailed") and function words ("a",
"of", "with") lowest; later words count a little less than earlier ones, as they do for Midjourney.
Five prompts follow, each keeping fewer of the top words in their original order. Image URLs at the
start and parameters at the end (``--ar 16:9 --v 6.1``) are kept intact in all five. Deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from providers import ProviderError
from providers.analysis import NAMED_COLOURS

OPTIONS = 5

FUNCTION_WORDS = frozenset("""
    a an the of in on at to for with by from and or nor but as into onto over under above below beneath
    between through during about across against along among around behind beside besides beyond inside
    outside within without toward towards upon via per near off up down out like unlike than then so
    is are was were be been being am it its it's this that these those which who whom whose what there
    their theirs his her hers him he she they them we us our you your yours my me i itself themselves
    has have had having do does did will would can could should may might must shall not no
    some any each every all both either neither such same own just also too only very while where when
""".split())

FILLER_WORDS = frozenset("""
    really extremely highly incredibly super ultra hyper insanely absolutely truly quite totally
    masterpiece best quality high resolution res hd uhd hdr 2k 4k 8k 16k 32k 64k megapixel
    detailed detail details intricate sharp focus trending artstation deviantart pixiv behance cgsociety
    award winning award-winning stunning beautiful gorgeous amazing awesome incredible epic perfect
    professional octane render rendered unreal engine breathtaking wonderful nice great lovely fantastic
    magnificent spectacular splendid cool pretty exquisite elegant majestic style styled inspired
""".split())

STYLE_WORDS = frozenset("""
    photograph photo photography photographic photorealistic realistic hyperrealistic analog film polaroid
    painting painted oil watercolor watercolour acrylic gouache pastel tempera fresco sketch drawing pencil
    charcoal ink lineart illustration illustrated digital art artwork anime manga cartoon comic
    pixel vector 3d cgi sculpture clay claymation low-poly isometric concept poster ukiyo-e woodblock
    engraving etching mosaic stained glass collage papercut origami embroidery tapestry graffiti mural
    impressionism impressionist expressionism expressionist surrealism surreal surrealist cubism cubist
    baroque renaissance rococo gothic nouveau deco bauhaus minimalist minimalism pop psychedelic
    vaporwave synthwave cyberpunk steampunk solarpunk dieselpunk fantasy sci-fi scifi noir vintage retro
    futuristic cinematic dramatic moody lighting light lit sunlight moonlight backlit backlight golden hour
    neon glowing glow soft volumetric bokeh macro wide-angle telephoto fisheye closeup close-up aerial
    panoramic silhouette chiaroscuro monochrome grayscale greyscale sepia pastel vibrant vivid muted
    matte ghibli pixar disney baroque dreamy ethereal misty foggy atmospheric
""".split()) | frozenset(word for name in NAMED_COLOURS for word in name.split())

# Words that frame a subject ("portrait of a fox"): the subject is the phrase after "of".
FRAME_WORDS = frozenset("""
    portrait photo photograph picture image painting illustration drawing sketch render shot view scene
    closeup close-up still poster
""".split())

FUNCTION, FILLER, ADVERB, NUMBER, VERB, CONTENT, STYLE, NAMED, SUBJECT_PART, SUBJECT = (
    0.05, 0.15, 0.2, 0.35, 0.4, 0.55, 0.7, 0.75, 0.7, 1.0,
)
MEANINGFUL = 0.25  # the first shortened prompt keeps the words at least this important
POSITION_FALLOFF = 0.25  # the last word counts this much less than the first
REPEAT_FACTOR = 0.5  # a word said again adds less

_PARAMETERS = re.compile(r"(?:^|\s)((?:--|\u2014)[a-zA-Z].*)$", re.S)  # also "\u2014ar", as phones type "--"
_URL = re.compile(r"\s*(?:https?://\S+|<https?://\S+>)")
# A run of stops before a space (tried once per run: the look-behind keeps this linear), or a line break.
_PHRASE_END = re.compile(r"(?<![,;.!?|])[,;.!?|]++(?=\s|$)|\n+")
_WORD_CHARACTER = re.compile(r"\w")


@dataclass
class _Word:
    """One word of the prompt: as written, how it is looked up, its phrase and its importance."""

    text: str
    key: str
    phrase: int
    score: float = 0.0
    head: bool = True  # not followed by a word it describes


@dataclass(frozen=True)
class Shortened:
    """Five shorter prompts and the importance of each word of the original."""

    prompts: list[str]
    tokens: list[tuple[str, float]]


def split_prompt(prompt: str) -> tuple[str, str, str]:
    """The leading image URLs, the text, and the trailing ``--parameters`` of a prompt."""
    text = prompt.strip()
    urls = []
    while match := _URL.match(text):
        urls.append(match.group().strip())
        text = text[match.end():].lstrip()
    parameters = ""
    if match := _PARAMETERS.search(text):
        parameters = " ".join(match.group(1).split())
        text = text[: match.start()].strip()
    return " ".join(urls), text, parameters


def shorten(prompt: str) -> Shortened:
    """Five progressively shorter versions of ``prompt`` and each word's importance (0-1)."""
    urls, text, parameters = split_prompt(prompt)
    words = _words(text)
    if not words:
        raise ProviderError("The prompt has no words to shorten")
    _rank(words)
    order = sorted(range(len(words)), key=lambda i: (-words[i].score, not words[i].head, i))
    prompts = []
    for count in _kept_counts(words):
        kept = sorted(order[:count])
        prompts.append(" ".join(part for part in (urls, _join(words, kept), parameters) if part))
    return Shortened(prompts, [(word.text, word.score) for word in words])


def _words(text: str) -> list[_Word]:
    """The words of the text, each with its phrase number (phrases end at commas and full stops)."""
    words = []
    for phrase, chunk in enumerate(_PHRASE_END.split(text)):
        for token in chunk.split():
            bare = _trim(token.split("::")[0])
            if bare:
                words.append(_Word(token if "::" in token else _trim(token), bare, phrase))
    return words


def _trim(token: str) -> str:
    """``token`` without the punctuation around it: ``"(cat)"`` -> ``cat``."""
    first = _WORD_CHARACTER.search(token)
    if first is None:
        return ""
    last = _WORD_CHARACTER.search(token[::-1])
    return token[first.start() : len(token) - last.start()]


def _kind(word: _Word, named: bool) -> float:
    """The importance of a word from what kind of word it is, before position and the subject."""
    key = word.key.lower()
    if key in FUNCTION_WORDS:
        return FUNCTION
    if key in FILLER_WORDS:
        return FILLER
    if key in STYLE_WORDS:
        return STYLE
    if named:
        return NAMED
    if key.isdigit():
        return NUMBER
    if key.endswith("ly") and len(key) > 4:
        return ADVERB
    if key.endswith("ing") and len(key) > 5:
        return VERB
    return CONTENT


def _rank(words: list[_Word]) -> None:
    """Score every word in place, normalised so the most important one is 1."""
    capitalised = [word.key[0].isupper() for word in words]
    title_case = sum(capitalised) * 2 > len(words)  # then capitals say nothing about names
    for i, word in enumerate(words):
        word.score = _kind(word, capitalised[i] and not _starts_phrase(words, i) and not title_case)
    modifiable = [word.score >= NUMBER and word.score != VERB for word in words]
    subject = _subject(words)
    for i in subject:
        words[i].score = SUBJECT if i == subject[-1] else max(words[i].score, SUBJECT_PART)
    seen: set[str] = set()
    for i, word in enumerate(words):
        if word.score < SUBJECT:
            word.score *= 1 - POSITION_FALLOFF * i / len(words)
        if word.key.lower() in seen and word.score > FUNCTION:
            word.score *= REPEAT_FACTOR
        seen.add(word.key.lower())
    for i, word in enumerate(words):  # a noun is worth at least its adjectives ("white beard")
        if modifiable[i] and not _starts_phrase(words, i) and modifiable[i - 1]:
            word.score = max(word.score, words[i - 1].score)
            word.head = True
            words[i - 1].head = False
    top = max(word.score for word in words)
    for word in words:
        word.score = round(word.score / top, 2)


def _starts_phrase(words: list[_Word], i: int) -> bool:
    """Whether word ``i`` is the first of its phrase."""
    return i == 0 or words[i - 1].phrase != words[i].phrase


def _subject(words: list[_Word]) -> list[int]:
    """Indexes of the subject's words, head last: the first noun phrase that is not only style words.

    A phrase that starts with a frame ("portrait of a fox") has its subject after "of".
    """
    found = []
    starts = [i for i in range(len(words)) if _starts_phrase(words, i)]
    for start in starts:
        chunk = _chunk(words, start)
        after = chunk[-1] + 1 if chunk else start
        framed = words[chunk[-1]].key.lower() in FRAME_WORDS if chunk else False
        if framed and after < len(words) and words[after].key.lower() == "of":
            chunk = [i for i in _chunk(words, after + 1) if words[i].phrase == words[start].phrase] or chunk
        if any(words[i].key.lower() not in STYLE_WORDS and words[i].key.lower() not in FRAME_WORDS
               for i in chunk):
            return chunk
        found = found or chunk
    return found


def _chunk(words: list[_Word], start: int) -> list[int]:
    """Content words from ``start`` up to the first function word or verb that follows one, in one phrase."""
    chunk: list[int] = []
    for i in range(start, len(words)):
        key = words[i].key.lower()
        if words[i].phrase != words[start].phrase:
            break
        if key in FUNCTION_WORDS or key in FILLER_WORDS:
            if chunk:
                break
            continue
        if chunk and key.endswith("ing") and key not in STYLE_WORDS:
            break
        chunk.append(i)
    return chunk


def _kept_counts(words: list[_Word]) -> list[int]:
    """How many words each of the five prompts keeps: the first drops the filler, then fewer each time."""
    meaningful = sum(word.score >= MEANINGFUL for word in words)
    counts = [max(1, min(len(words) - 1, meaningful))]
    for option in range(2, OPTIONS + 1):
        share = round(counts[0] * (OPTIONS + 1 - option) / OPTIONS)
        counts.append(max(1, min(counts[-1] - 1, share)))
    return counts


def _join(words: list[_Word], kept: list[int]) -> str:
    """The kept words in order, phrases separated by commas as in the original."""
    phrases: list[list[str]] = []
    last = None
    for i in kept:
        if words[i].phrase != last:
            phrases.append([])
            last = words[i].phrase
        phrases[-1].append(words[i].text)
    return ", ".join(" ".join(phrase) for phrase in phrases)
