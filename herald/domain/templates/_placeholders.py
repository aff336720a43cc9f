"""`((name))` and `((name??text))` placeholders, matched the way Notify matches personalisation keys."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

PLACEHOLDER_PATTERN = re.compile(r"\({2}([^()]+)\){2}")
# Where a placeholder stands inside a URL: a link's target "[text](https://...((here))" or a bare
# "https://...((here))". Judged on the template's text since the last whitespace before the placeholder.
_INSIDE_URL = re.compile(r"(?:\]\(<?|https?://)[^()<>]*(?:\([^()<>]*\)[^()<>]*)*$", re.IGNORECASE)
# A value placed in a URL keeps the URL whole: its whitespace is percent-encoded, as Notify does.
_URL_WHITESPACE = str.maketrans({character: f"%{ord(character):02X}" for character in string.whitespace})

_TRUTHY = frozenset(("yes", "y", "true", "t", "1", "include", "show"))
# Notify drops its obscure whitespace from list items before deciding whether an item is blank; the
# Hangul fillers, which the email body loses anyway, go too.
_OBSCURE_WHITESPACE_TABLE = str.maketrans(
    "", "", "\u180e\u200b\u200c\u200d\u2060\ufeff\u2028\u2029\u00a0\u202f\u3164\u115f\u1160\uffa0"
)


@dataclass(frozen=True, slots=True)
class Slot:
    name: str  # as written in the template, e.g. "First name" (what "Missing personalisation" reports)
    key: str  # normalised, e.g. "firstname"
    conditional: str | None  # the text after "??", or None for a plain placeholder


@dataclass(frozen=True, slots=True)
class ParsedText:
    literals: tuple[str, ...]  # always one more than slots: text before, between and after them
    slots: tuple[Slot, ...]
    in_url: tuple[bool, ...] = ()  # for each slot, whether it stands inside a URL
    # With no "??" placeholder: the literals as a %-format with a "%s" for each slot, which `fill_strings`
    # fills from the slots' keys in one C call.
    string_format: str | None = None


def normalise_key(key: str) -> str:
    # Three replaces beat str.translate by a wide margin on short keys.
    return key.replace(" ", "").replace("_", "").replace("-", "").lower()


# Templates up to this many characters are cached (1,024 of them: ~20 MB at most, against goal 6's 150 MB
# a process); a longer one, rare, is split on every use.
_CACHED_UP_TO = 10_000


def parse(text: str) -> ParsedText:
    """Split a template field once; templates repeat, so the result is cached. (Personalisation is
    client-supplied and unbounded, so nothing derived from it is cached.)"""
    return _parse_cached(text) if len(text) <= _CACHED_UP_TO else _parse(text)


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> ParsedText:
    return _parse(text)


def _parse(text: str) -> ParsedText:
    literals: list[str] = []
    slots: list[Slot] = []
    in_url: list[bool] = []
    word = ""  # the template's text since its last whitespace, earlier placeholders written as "x"
    position = 0
    for match in PLACEHOLDER_PATTERN.finditer(text):
        literal = text[position : match.start()]
        literals.append(literal)
        body = match.group(1)
        name, separator, conditional = body.partition("??")
        slots.append(Slot(name, normalise_key(name), conditional if separator else None))
        after_space = literal.rsplit(maxsplit=1)[-1] if literal and not literal[-1].isspace() else ""
        word = after_space if len(after_space) < len(literal) else word + literal
        in_url.append(bool(_INSIDE_URL.search(word)))
        word += "x"
        position = match.end()
    literals.append(text[position:])
    string_format = None
    if all(slot.conditional is None for slot in slots):
        string_format = "%s".join(literal.replace("%", "%%") for literal in literals)
    return ParsedText(tuple(literals), tuple(slots), tuple(in_url), string_format)


def placeholders(*texts: str) -> list[str]:
    """Placeholder names in order of first appearance, without duplicates (keys compared as Notify does)."""
    seen: set[str] = set()
    names: list[str] = []
    for text in texts:
        for slot in parse(text).slots:
            if slot.key not in seen:
                seen.add(slot.key)
                names.append(slot.name)
    return names


def lookup(personalisation: Mapping[str, object]) -> dict[str, object]:
    """Personalisation by normalised name; a later key beats an earlier one that normalises the same."""
    return {normalise_key(key if isinstance(key, str) else str(key)): value for key, value in personalisation.items()}


def missing(parsed: Iterable[ParsedText], values: Mapping[str, object]) -> list[str]:
    seen: set[str] = set()
    names: list[str] = []
    for text in parsed:
        for slot in text.slots:
            if slot.key not in seen:
                seen.add(slot.key)
                if values.get(slot.key) is None:
                    names.append(slot.name)
    return names


def str2bool(value: str) -> bool:
    return value.lower() in _TRUTHY


def _list_items(value: list[object] | tuple[object, ...]) -> list[str]:
    items = (
        str(item).translate(_OBSCURE_WHITESPACE_TABLE).strip(string.whitespace) for item in value if item is not None
    )
    return [item for item in items if item]


def render_value(value: object, *, markdown_lists: bool) -> str:
    if not isinstance(value, list | tuple):
        return str(value)
    items = _list_items(value)
    if not items:
        return ""
    if markdown_lists:
        return "\n\n" + "\n".join(f"* {item}" for item in items)
    # Text messages cannot show a bullet list, so Notify writes "a, b and c".
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} and {items[-1]}"


def fill_strings(parsed: ParsedText, values: Mapping[str, object]) -> str | None:
    """`fill` without `encode_in_urls` for the usual message, much faster: every value a str and no "??"
    placeholder, so values stand as they are. None otherwise (a missing value too), for the full path."""
    if parsed.string_format is None:
        return None
    texts = []
    for slot in parsed.slots:
        value = values.get(slot.key)
        if type(value) is not str:
            return None
        texts.append(value)
    return parsed.string_format % tuple(texts)


def fill(
    parsed: ParsedText, values: Mapping[str, object], *, markdown_lists: bool, encode_in_urls: bool = False
) -> str:
    """Substitute every placeholder; call `missing` first, as every slot needs a value here. With
    `encode_in_urls`, whitespace in a value that stands inside a URL is percent-encoded."""
    if not parsed.slots:
        return parsed.literals[0]
    parts = [parsed.literals[0]]
    for index, (slot, literal) in enumerate(zip(parsed.slots, parsed.literals[1:], strict=True)):
        value = values[slot.key]
        text = value if type(value) is str else render_value(value, markdown_lists=markdown_lists)
        if slot.conditional is not None:
            text = slot.conditional if str2bool(text) else ""
        elif encode_in_urls and parsed.in_url[index]:
            text = text.translate(_URL_WHITESPACE)
        parts.append(text)
        parts.append(literal)
    return "".join(parts)
