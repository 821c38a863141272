"""What a prompt is of: its subject family, the subject's colour and modifiers, and its medium.

A broad vocabulary of nouns (with plurals and synonyms) maps onto a few dozen drawable families
(``figures.FAMILIES``). A word the vocabulary lacks falls back to the family of the most similar
known word. Colour words right before the subject's noun colour the subject; the rest colour the
scene. Medium words ("oil painting", "pixel art" ...) pick how the picture is rendered.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache

# family: its words. Families named here are drawn by providers.figures.
_VOCABULARY = {
    "fox": "fox foxes vixen kit wolf wolves coyote jackal husky fennec jackals",
    "cat": "cat cats kitten kittens kitty kitties feline tabby lion lions lioness tiger tigers leopard "
    "panther cheetah lynx jaguar cougar puma ocelot",
    "dog": "dog dogs puppy puppies pup pups doggo hound hounds terrier retriever labrador poodle beagle "
    "corgi bulldog shepherd spaniel dachshund pug canine mutt",
    "bird": "bird birds sparrow robin parrot parrots eagle eagles hawk falcon crow raven seagull gull "
    "pigeon dove swallow finch songbird hummingbird bluejay jay macaw cardinal kingfisher flamingo "
    "peacock phoenix penguin duck swan heron crane stork",
    "owl": "owl owls owlet barnowl",
    "horse": "horse horses pony ponies stallion mare foal unicorn pegasus deer stag doe reindeer elk "
    "moose zebra donkey camel giraffe antelope gazelle",
    "fish": "fish fishes goldfish koi salmon trout carp shark sharks dolphin dolphins seahorse "
    "clownfish tuna piranha",
    "whale": "whale whales orca humpback leviathan",
    "dragon": "dragon dragons wyvern drake serpent dinosaur dinosaurs trex raptor lizard monster "
    "beast creature griffin",
    "rabbit": "rabbit rabbits bunny bunnies hare hares mouse mice rat hamster squirrel",
    "bear": "bear bears grizzly panda pandas polar bison buffalo boar gorilla",
    "butterfly": "butterfly butterflies moth moths insect bee bees dragonfly ladybug",
    "lighthouse": "lighthouse lighthouses beacon",
    "castle": "castle castles palace palaces fortress citadel fort kingdom temple cathedral church "
    "mosque monastery",
    "house": "house houses home homes cottage cottages cabin cabins hut barn farmhouse villa mansion "
    "shack chalet inn tavern shop bakery",
    "tower": "tower towers spire minaret pagoda obelisk windmill clocktower belfry skyscraper",
    "car": "car cars automobile vehicle truck trucks van jeep taxi bus racecar sportscar motorcycle "
    "tractor train locomotive tram",
    "ship": "ship ships boat boats sailboat yacht galleon vessel ferry canoe kayak submarine pirate "
    "schooner steamboat raft",
    "rocket": "rocket rockets spaceship spaceships spacecraft starship shuttle ufo satellite missile "
    "airplane plane jet aircraft",
    "tree": "tree oak willow maple baobab bonsai sequoia birch cherry sakura palm cypress",
    "flower": "flower rose tulip sunflower lily daisy orchid lotus poppy peony dandelion iris "
    "blossom bouquet",
    "planet": "planet planets saturn jupiter mars earth moon moons globe world exoplanet",
    "bowl": "bowl bowls ramen noodle noodles soup pho udon curry salad rice stew porridge cereal sushi "
    "dumplings pasta spaghetti",
    "cup": "cup cups coffee tea mug mugs latte espresso cappuccino teacup teapot drink cocktail wine glass",
    "cake": "cake cakes cupcake cupcakes dessert pie pastry birthday muffin donut doughnut pudding "
    "cheesecake tart",
    "portrait": "portrait portraits face faces headshot selfie man woman men women girl boy lady "
    "gentleman sailor fisherman grandmother grandfather grandma grandpa child kid baby person "
    "elder model actress actor queen king princess prince",
    "figure": "figure figures silhouette people crowd warrior warriors knight knights soldier samurai "
    "ninja wizard witch mage sorcerer monk dancer hero heroine character adventurer explorer "
    "traveler traveller hiker pirate cowboy detective musician farmer",
    "astronaut": "astronaut astronauts cosmonaut spacesuit spaceman spacewoman",
    "robot": "robot robots android androids cyborg cyborgs mech mecha droid automaton",
}
# Families that are painted as the scene, not as a figure in it (procedural's scene words).
SCENE_FAMILIES = {
    "mountain": "mountain mountains peak peaks volcano hill hills cliff cliffs canyon valley",
    "city": "city cities skyline metropolis town village street streets downtown",
}
# The setting a family brings when the prompt names none.
SETTINGS = {
    "fish": "underwater",
    "whale": "underwater",
    "astronaut": "space",
    "rocket": "space",
    "planet": "space",
    "lighthouse": "ocean",
    "ship": "ocean",
    "bowl": "studio",
    "cup": "studio",
    "cake": "studio",
    "portrait": "studio",
    "dragon": "mountain",
    "castle": "mountain",
    "horse": "meadow",
    "house": "meadow",
    "tree": "meadow",
    "flower": "meadow",
    "butterfly": "meadow",
    "rabbit": "meadow",
    "bird": "day",
    "owl": "night",
    "car": "road",
    "tower": "day",
    "robot": "studio",
    "figure": "day",
    "fox": "forest",
    "cat": "studio",
    "dog": "meadow",
    "bear": "forest",
}
# A word's own colour, where its family's default would be wrong ("a wolf" is grey, not fox red).
WORD_COLOURS = {
    "wolf": (125, 125, 132),
    "wolves": (125, 125, 132),
    "husky": (150, 150, 160),
    "lion": (200, 150, 80),
    "lioness": (200, 150, 80),
    "tiger": (225, 120, 30),
    "panther": (30, 30, 36),
    "leopard": (215, 170, 90),
    "polar": (240, 240, 240),
    "panda": (240, 240, 240),
    "goldfish": (245, 140, 30),
    "koi": (240, 110, 40),
    "shark": (120, 135, 150),
    "dolphin": (120, 140, 165),
    "orca": (30, 30, 36),
    "crow": (25, 25, 30),
    "raven": (25, 25, 30),
    "flamingo": (245, 130, 170),
    "zebra": (235, 235, 235),
    "unicorn": (245, 245, 250),
    "pegasus": (245, 245, 250),
    "deer": (170, 110, 60),
    "stag": (150, 95, 50),
    "taxi": (245, 200, 40),
    "sunflower": (245, 200, 40),
    "rose": (210, 30, 50),
    "lotus": (240, 150, 190),
    "mars": (200, 90, 50),
    "earth": (60, 120, 200),
    "moon": (200, 200, 205),
    "saturn": (220, 190, 130),
    "coffee": (245, 245, 240),
    "snowman": (250, 250, 250),
    "grizzly": (110, 70, 40),
    "ufo": (190, 195, 205),
    "jet": (200, 205, 215),
}
# Modifiers: name and the words that ask for it.
MODIFIERS = {
    "helmet": "astronaut astronauts spacesuit cosmonaut space helmet",
    "snow": "snowy snow snowing winter frosty frozen blizzard",
    "crown": "king queen princess prince royal crown crowned regal",
    "hat": "wizard witch mage sorcerer",
    "cap": "sailor captain cap fisherman cowboy hat",
    "wings": "winged wings angel angelic pegasus fairy",
    "horn": "unicorn",
    "antlers": "deer stag reindeer elk moose antlers",
    "beard": "old elderly aged grandfather grandpa sailor fisherman bearded wizard",
    "grey": "old elderly aged grandmother grandma grandfather grandpa",
    "steam": "ramen soup pho udon coffee tea latte espresso cappuccino hot steaming stew",
    "ring": "saturn ringed rings",
    "glow": "neon glowing cyber cyberpunk",
}
MEDIA = {  # medium: phrases that ask for it (the first found wins, in this order)
    "pixel": ("pixel art", "pixel", "pixelated", "8-bit", "8bit", "16-bit", "16bit", "retro game"),
    "lowpoly": ("low poly", "low-poly", "lowpoly", "polygonal", "faceted"),
    "sketch": ("sketch", "pencil", "line art", "lineart", "drawing", "charcoal", "ink drawing", "doodle"),
    "watercolor": ("watercolor", "watercolour", "aquarelle", "gouache"),
    "oil": ("oil painting", "oil", "impasto", "oil on canvas", "painting", "painted", "brushstrokes"),
    "photo": (
        "photorealistic",
        "photo",
        "photograph",
        "photography",
        "realistic",
        "hyperrealistic",
        "cinematic",
        "dslr",
        "35mm",
        "bokeh",
        "studio lighting",
    ),
}
_STOPWORDS = set(
    "a an the of in on at by with and or to from into over under above below near beside behind for "
    "is are be it its this that very some two three many few one my your his her their our cute little "
    "big small huge tiny giant old young beautiful lovely pretty epic majestic detailed highly ultra "
    "style art artwork scene image picture photo view shot wallpaper background lighting light dark "
    "deep bright sunny misty foggy moody dreamy vivid vibrant colorful colourful muted pastel neon mono "
    "render rendering digital concept illustration painting oil sketch pixel realistic watercolor "
    "watercolour poly low high quality masterpiece trending hd uhd k best lots full".split()
)


@dataclass(frozen=True)
class Subject:
    """The figure a prompt asks for: its family, the word that named it, its colour and modifiers."""

    family: str
    word: str
    colour: tuple[int, int, int] | None  # a colour the prompt gives it, or its word's own colour
    modifiers: frozenset[str]
    guessed: bool  # True when the word was matched by similarity, not found in the vocabulary


@cache
def _lookup() -> dict[str, str]:
    """Every known word (and its plural or singular) to its family."""
    table: dict[str, str] = {}
    for family, words in (*_VOCABULARY.items(), *SCENE_FAMILIES.items()):
        for word in words.split():
            for form in (word, *_forms(word)):
                table.setdefault(form, family)
    return table


def _forms(word: str) -> tuple[str, ...]:
    """The plural of a singular and the singular of a plural, by the common English rules."""
    if word.endswith("ies"):
        return (word[:-3] + "y",)
    if word.endswith("ves"):
        return (word[:-3] + "f",)
    if word.endswith(("ches", "shes", "xes", "sses")):
        return (word[:-2],)
    if word.endswith("s") and not word.endswith("ss"):
        return (word[:-1],)
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return (word[:-1] + "ies",)
    if word.endswith(("ch", "sh", "x", "s")):
        return (word + "es",)
    return (word + "s",)


def vocabulary_size() -> int:
    """How many words the vocabulary knows (forms included)."""
    return len(_lookup())


def family_of(word: str) -> tuple[str | None, bool]:
    """The family of one word, and whether it was guessed by similarity (None if nothing is close)."""
    table = _lookup()
    word = word.lower()
    if word in table:
        return table[word], False
    for known in sorted(table, key=len, reverse=True):  # compounds: "sailboat", "firetruck"
        if len(known) >= 4 and (word.endswith(known) or word.startswith(known)):
            return table[known], True
    close = difflib.get_close_matches(word, table, n=1, cutoff=0.72)
    return (table[close[0]], True) if close else (None, False)


def medium(text: str) -> str | None:
    """The medium a prompt asks for ("oil", "watercolor", "pixel", "photo", "sketch", "lowpoly")."""
    padded = " " + " ".join(re.findall(r"[a-z0-9-]+", text.lower())) + " "
    for name, phrases in MEDIA.items():
        if any(f" {phrase} " in padded for phrase in phrases):
            return name
    return None


def find_subject(
    words: list[str], colour_words: dict[str, tuple[int, int, int]], scene_words: set[str]
) -> tuple[Subject | None, set[str]]:
    """The prompt's subject, and the colour words it took (those do not colour the scene)."""
    table = _lookup()
    # A plural that is also a scene word ("roses in a garden", "pine trees") is the scene, not a figure.
    found = [
        (i, table[w])
        for i, w in enumerate(words)
        if w in table and table[w] in _VOCABULARY and not (w in scene_words and w.endswith("s"))
    ]
    guessed = False
    if not found and not set(words) & scene_words:  # a place alone ("deep blue ocean") has no figure
        candidates = [
            (i, w)
            for i, w in enumerate(words)
            if len(w) > 2
            and w not in _STOPWORDS
            and w not in colour_words
            and w not in scene_words
            and w not in table
        ]
        for i, w in candidates:
            family, _ = family_of(w)
            if family in _VOCABULARY:
                found, guessed = [(i, family)], True
                break
    if not found:
        return None, set()
    # The subject is the first figure named, except that a figure word "astronaut"/"robot" after
    # an animal ("cat astronaut") makes the animal wear the outfit: the animal stays the subject.
    index, family = found[0]
    word = words[index]
    present = set(words)
    modifiers = {name for name, vocab in MODIFIERS.items() if present & set(vocab.split())}
    if family == "astronaut":
        modifiers.add("helmet")
    taken: set[str] = set()
    colour = WORD_COLOURS.get(word)
    for j in range(index - 1, max(-1, index - 4), -1):  # "a bright red fox": up to three words before
        if words[j] in colour_words:
            colour = colour_words[words[j]]
            taken.add(words[j])
            break
        if words[j] in table:
            break
    return Subject(family, word, colour, frozenset(modifiers), guessed), taken


def families() -> tuple[str, ...]:
    """The drawable families."""
    return tuple(_VOCABULARY)
