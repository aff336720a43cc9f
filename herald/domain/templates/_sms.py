"""Text messages: Notify's SanitiseSMS character rules, whitespace normalisation and fragment billing."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from herald.domain.templates import _placeholders
from herald.domain.templates._errors import (
    SMS_CHAR_COUNT_LIMIT,
    EmptyMessage,
    MessageTooLong,
    MissingPersonalisation,
)

EXTENDED_GSM_CHARACTERS = frozenset("^{}\\[~]|€")
GSM_CHARACTERS = (
    frozenset(
        "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
        "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    )
    | EXTENDED_GSM_CHARACTERS
)
WELSH_DIACRITICS = frozenset(
    "àèìòùẁỳÀÈÌÒÙẀỲ"  # grave
    "áéíóúẃýÁÉÍÓÚẂÝ"  # acute
    "äëïöüẅÿÄËÏÖÜẄŸ"  # diaeresis
    "âêîôûŵŷÂÊÎÔÛŴŶ"  # circumflex
)
ALLOWED_CHARACTERS = GSM_CHARACTERS | WELSH_DIACRITICS
# Any of these forces the whole message into UCS-2, which fits fewer characters per fragment.
WELSH_NON_GSM_CHARACTERS = WELSH_DIACRITICS - GSM_CHARACTERS

# Downgrades that keep the meaning; the union of the tables in Notify's SanitiseText versions.
REPLACEMENT_CHARACTERS: Mapping[str, str] = {
    "\u2011": "-",  # non-breaking hyphen
    "–": "-",
    "—": "-",
    "\u2212": "-",  # minus sign
    "…": "...",
    "‘": "'",
    "’": "'",
    "‚": "'",
    "“": '"',
    "”": '"',
    "„": '"',
    "\u180e": "",  # Mongolian vowel separator
    "\u200b": "",  # zero width space
    "\u200c": "",  # zero width non-joiner
    "\u200d": "",  # zero width joiner
    "\u2060": "",  # word joiner
    "\ufeff": "",  # zero width no-break space
    "\u2028": "",  # line separator
    "\u2029": "",  # paragraph separator
    "\u00a0": " ",  # no-break space
    "\u202f": " ",  # narrow no-break space
    "\t": " ",
    "Ł": "L",
    "ł": "l",
}

# Canonical decompositions reach GSM or Welsh letters only from these blocks (Latin, Latin Extended
# Additional, Greek Extended, letterlike symbols); the unit tests re-scan all of Unicode to prove it.
_DECOMPOSABLE_RANGES = ((0x00C0, 0x0400), (0x1E00, 0x2000), (0x2100, 0x2200))
# "≠" decomposes to "=" plus this overlay: downgrading it would invert the meaning, so it becomes "?".
_NEGATION_OVERLAY = "0338"


def _downgrade(character: str) -> str | None:
    """Follow canonical decompositions (é -> e, ǖ -> ü) until reaching a character SMS can carry."""
    current = character
    while decomposition := unicodedata.decomposition(current):
        if decomposition.startswith("<") or decomposition.endswith(_NEGATION_OVERLAY):
            return None
        current = chr(int(decomposition.split()[0], 16))
        if current in ALLOWED_CHARACTERS:
            return current
    return None


class _SmsTable(dict[int, str]):
    """str.translate table: every character SMS can carry maps to itself, known downgrades to their
    replacement, and anything else (emoji, CJK, Cyrillic…) falls through to "?"."""

    def __missing__(self, key: int) -> str:
        return "?"


def _build_table() -> _SmsTable:
    table = _SmsTable({ord(c): c for c in ALLOWED_CHARACTERS})
    for start, stop in _DECOMPOSABLE_RANGES:
        for codepoint in range(start, stop):
            if codepoint not in table and (downgraded := _downgrade(chr(codepoint))) is not None:
                table[codepoint] = downgraded
    table.update({ord(c): replacement for c, replacement in REPLACEMENT_CHARACTERS.items()})
    return table


_SMS_TABLE = _build_table()


def _character_class(characters: frozenset[str]) -> str:
    return "[" + "".join(sorted(re.escape(c) for c in characters)) + "]"


# Everything that changes how a message is billed: Welsh letters outside GSM (UCS-2) and GSM's
# extension-table characters (two septets each). One regex pass finds both.
_BILLING_SPECIAL = re.compile(_character_class(WELSH_NON_GSM_CHARACTERS | EXTENDED_GSM_CHARACTERS))
# Beyond this many different characters to replace, one translate pass beats a replace per character.
_MAX_REPLACE_PASSES = 8

# Starts only where a run of spaces starts, and never backtracks: linear on long runs of spaces.
_WHITESPACE_BEFORE_PUNCTUATION = re.compile(r"(?<![ \t])[ \t]++([,.])")
_THREE_OR_MORE_NEWLINES = re.compile(r"\n{3,}")
_ZERO_WIDTH = re.compile("[\u180e\u200b\u200c\u200d\u2060\ufeff]")
# ASCII that SMS carries as it is and that leaves the clean-up nothing to do but split lines: printable
# GSM characters and newlines.
_SENDABLE_ASCII = bytes(c for c in range(128) if chr(c) == "\n" or (chr(c).isprintable() and chr(c) in GSM_CHARACTERS))
_EXTENDED_GSM_ASCII = "".join(sorted(c for c in EXTENDED_GSM_CHARACTERS if c.isascii())).encode()


def sanitise_sms(text: str) -> str:
    """Make text GSM-7 (plus Welsh) safe: downgrade what has a faithful downgrade, else "?"."""
    if ALLOWED_CHARACTERS.issuperset(text):  # the usual case: a set scan, much cheaper than translate
        return text
    unsupported = set(text).difference(ALLOWED_CHARACTERS)
    if len(unsupported) > _MAX_REPLACE_PASSES:
        return text.translate(_SMS_TABLE)
    for character in unsupported:  # replacements are all allowed characters, so the order is irrelevant
        text = text.replace(character, _SMS_TABLE[ord(character)])
    return text


def normalise_sms_whitespace(text: str) -> str:
    """Notify's SMS clean-up, in Notify's order: no space before , or ., each line's whitespace collapsed,
    at most one blank line in a row, and no leading or trailing whitespace."""
    if " ," in text or " ." in text or "\t" in text:  # substring tests are far cheaper than the regex
        text = _WHITESPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    if not text.isascii():
        text = _ZERO_WIDTH.sub("", text.replace("\u00a0", " "))
    text = "\n".join([" ".join(line.split()) for line in text.splitlines()])
    if "\n\n\n" in text:
        text = _THREE_OR_MORE_NEWLINES.sub("\n\n", text)
    return text.strip()


def _utf16_length(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _is_sendable_as_is(text: str) -> bool:
    """True when `normalise_sms_whitespace` and `sanitise_sms` would both return text as it is: the usual
    message, recognised by scans in C that cost a fraction of the two (the unit tests compare them)."""
    return (
        text.isascii()
        and not text.encode().translate(None, _SENDABLE_ASCII)
        and "  " not in text
        and " ," not in text
        and " ." not in text
        and " \n" not in text
        and "\n " not in text
        and "\n\n\n" not in text
        and text.strip() == text
    )


def sms_fragment_count(text: str) -> int:
    """Billable fragments for text as it will be sent (i.e. already through `sanitise_sms`)."""
    if text.isascii():  # no Welsh letters, so GSM; an extension character takes two units
        if len(text) <= 80:  # one fragment even at two units a character
            return 1
        units = 2 * len(text) - len(text.encode().translate(None, _EXTENDED_GSM_ASCII))
    else:
        special = _BILLING_SPECIAL.findall(text)
        if special and not WELSH_NON_GSM_CHARACTERS.isdisjoint(special):
            units = _utf16_length(text)
            return 1 if units <= 70 else math.ceil(units / 67)
        units = len(text) + len(special)
    return 1 if units <= 160 else math.ceil(units / 153)


# Not frozen: one is made per message sent, and a frozen dataclass costs four times as much to make.
@dataclass(slots=True)
class RenderedSms:
    body: str  # filled and sanitised, without the service-name prefix (Notify's content.body)
    billed_body: str  # what the handset receives: with the prefix when one was requested
    fragment_count: int  # billable units, prefix included
    character_count: int  # length of `body`, the figure checked against the 918 limit


def render_sms(body: str, personalisation: Mapping[str, object], *, prefix: str | None = None) -> RenderedSms:
    parsed = _placeholders.parse(body)
    if not parsed.slots:
        filled = parsed.literals[0]
    else:
        values = _placeholders.lookup(personalisation)
        strings = _placeholders.fill_strings(parsed, values)
        if strings is not None:
            filled = strings
        else:
            if missing := _placeholders.missing((parsed,), values):
                raise MissingPersonalisation(missing)
            filled = _placeholders.fill(parsed, values, markdown_lists=False)

    text = filled if _is_sendable_as_is(filled) else sanitise_sms(normalise_sms_whitespace(filled))
    character_count = len(text)
    if character_count == 0:
        raise EmptyMessage()
    if character_count > SMS_CHAR_COUNT_LIMIT:
        raise MessageTooLong.sms(character_count)

    billed = _with_prefix(prefix.strip(), filled, text) if prefix else text
    return RenderedSms(text, billed, sms_fragment_count(billed), character_count)


@lru_cache(maxsize=256)
def _tidy_prefix(prefix: str) -> str | None:
    """The (stripped) service name sanitised, if the clean-up would leave it as it is; else None."""
    if prefix.isprintable() and prefix == " ".join(prefix.split()) and " ," not in prefix and " ." not in prefix:
        return sanitise_sms(prefix)
    return None


def _with_prefix(prefix: str, filled: str, text: str) -> str:
    """The message as sent: Notify runs the clean-up over "{prefix}: {filled}" as a whole. When neither
    the name nor the seam gives the clean-up anything to do, that is just the prefix on the cleaned body."""
    first = filled[0]
    if (tidy := _tidy_prefix(prefix)) is not None and first.isprintable() and not first.isspace() and first not in ",.":
        return f"{tidy}: {text}"
    return sanitise_sms(normalise_sms_whitespace(f"{prefix}: {filled}"))
