"""Emails: subject and body filled, size and emptiness checked as Notify does, and `sanitise_content_for`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from herald.domain.templates import _markdown, _placeholders
from herald.domain.templates._errors import (
    EMAIL_MAX_BYTES,
    EmptyMessage,
    MessageTooLong,
    MissingPersonalisation,
)

# Anything written with a scheme, else Notify's bare-URL shape (dotted labels and a TLD-like ending).
# A bare match may only start where a run of label characters starts: Notify's pattern tried every
# word boundary, which is quadratic on long hyphenated text.
_URL = re.compile(
    r"(?P<scheme>https?://)[^\s<]*"
    r"|(?<![\w\-@.])(?:[\w\-]+\.)+[a-z]{2,63}(?!@)\b(?:[/?#][^<\s]*)?",
    re.IGNORECASE,
)
_MARKDOWN_ESCAPES = str.maketrans({character: "\\" + character for character in "\\`*_(){}[]<>#+-.!|"})
# Notify's normalise_whitespace: wide obscure whitespace (U+00A0, U+202F) becomes a space, which str.split
# does anyway, and zero-width characters go.
_ZERO_WIDTH = "\u180e\u200b\u200c\u200d\u2060\ufeff\u2028\u2029"


def _neutralise_url(match: re.Match[str]) -> str:
    url = match.group(0)
    if match.group("scheme") or url.lower().startswith("www."):
        return ""  # written as a link, so a link someone slipped into personalisation: drop it
    return url.replace(".", ". ")  # "J.Smith" or "file.txt": keep the words, stop them being linked


def _unlink(text: str) -> str:
    return _URL.sub(_neutralise_url, text)


def sanitise_value(text: str) -> str:
    """Make a personalisation value inert in markdown: no links, every markdown character escaped."""
    return _unlink(text).translate(_MARKDOWN_ESCAPES)


@dataclass(frozen=True, slots=True)
class _Sanitised:
    body_values: dict[str, object]
    # The subject is not markdown, so it gets the links neutralised but no backslashes.
    subject_values: dict[str, object]
    report: dict[str, dict[str, str]]


def _sanitise_personalisation(personalisation: Mapping[str, object], keys: Sequence[str]) -> _Sanitised:
    wanted = {_placeholders.normalise_key(key) for key in keys}
    body_values = dict(personalisation)
    subject_values = dict(personalisation)
    report: dict[str, dict[str, str]] = {}
    for key, value in personalisation.items():
        if value is None or _placeholders.normalise_key(str(key)) not in wanted:
            continue
        is_list = isinstance(value, list | tuple)
        items = [str(item) for item in value if item is not None] if isinstance(value, list | tuple) else [str(value)]
        sanitised = [sanitise_value(item) for item in items]
        if sanitised == items:
            continue
        body_values[key] = sanitised if is_list else sanitised[0]
        subject_values[key] = [_unlink(item) for item in items] if is_list else _unlink(items[0])
        # A list is reported one item a line, so the report stays a mapping of strings.
        report[str(key)] = {"unsanitised": "\n".join(items), "sanitised": "\n".join(sanitised)}
    return _Sanitised(body_values, subject_values, report)


def _normalise_subject_whitespace(text: str) -> str:
    if not text.isascii():  # none is ASCII, and isascii() is free
        for character in _ZERO_WIDTH:  # str.translate looks every character up: far slower than these
            if character in text:
                text = text.replace(character, "")
    return " ".join(text.split())


def _fill(parsed: _placeholders.ParsedText, values: Mapping[str, object], *, markdown_lists: bool) -> str:
    filled = _placeholders.fill_strings(parsed, values)  # the usual case, and much faster
    return filled if filled is not None else _placeholders.fill(parsed, values, markdown_lists=markdown_lists)


def _is_empty(template_body: str, content: str) -> bool:
    # Notify's rule: only a template that starts and ends with a placeholder can come out empty.
    if not template_body:
        return True
    if not (template_body.startswith("((") and template_body.endswith("))")):
        return False
    return not content


# Not frozen: one is made per message sent, and a frozen dataclass costs four times as much to make.
@dataclass(slots=True)
class RenderedEmail:
    subject: str  # filled, typography applied, whitespace collapsed (Notify's content.subject)
    body: str  # the filled markdown, stripped (Notify's content.body)
    # The body as the HTML part of the message; empty (and `plain_text` too) when both are `email_parts(body)`
    # and were left to be made where it is sent (`render_email(html=False)`).
    html: str
    sanitised_content: dict[str, dict[str, str]] = field(default_factory=dict)
    plain_text: str = ""  # the body as the text/plain part of the message


def render_email(
    subject: str,
    body: str,
    personalisation: Mapping[str, object],
    *,
    sanitise_content_for: Sequence[str] = (),
    html: bool = True,
) -> RenderedEmail:
    """`html` False: the HTML and plain-text parts are left empty when `email_parts(body)` makes them, as it
    does unless a placeholder sits in a link or the filled body has whitespace at its ends. Only a live
    hand-off sends them, so accepting an email need not pay for them (research mode and test keys never
    do)."""
    parsed_subject = _placeholders.parse(subject)
    parsed_body = _placeholders.parse(body)
    values = subject_values = _placeholders.lookup(personalisation)
    if missing := _placeholders.missing((parsed_subject, parsed_body), values):
        raise MissingPersonalisation(missing)

    sanitised_content: dict[str, dict[str, str]] = {}
    if sanitise_content_for:
        sanitised = _sanitise_personalisation(personalisation, sanitise_content_for)
        values = _placeholders.lookup(sanitised.body_values)
        subject_values = _placeholders.lookup(sanitised.subject_values)
        sanitised_content = sanitised.report

    filled = _fill(parsed_body, values, markdown_lists=True)
    content = filled.strip()
    if _is_empty(body, content):
        raise EmptyMessage()
    size = len(content) if content.isascii() else len(content.encode("utf-8"))
    if size > EMAIL_MAX_BYTES:
        raise MessageTooLong.email(size)

    filled_subject = _normalise_subject_whitespace(
        _markdown.nice_typography(_fill(parsed_subject, subject_values, markdown_lists=False))
    )
    # A value inside a URL has its whitespace percent-encoded for rendering, so the link keeps its whole
    # target; `body` stays the text as filled. With no placeholder in a URL the two are the same.
    rendered = filled
    if any(parsed_body.in_url):
        rendered = _placeholders.fill(parsed_body, values, markdown_lists=True, encode_in_urls=True)
    elif not html and filled == content:
        return RenderedEmail(subject=filled_subject, body=content, html="", sanitised_content=sanitised_content)
    html_part, plain_text = _markdown.render(rendered, body)
    return RenderedEmail(
        subject=filled_subject,
        body=content,
        html=html_part,
        sanitised_content=sanitised_content,
        plain_text=plain_text,
    )


class EmailParts(NamedTuple):
    html: str
    text: str  # the text/plain part, as Notify's PlainTextEmailTemplate renders it


def email_parts(body: str) -> EmailParts:
    """An email's HTML and plain-text parts from its filled body (`RenderedEmail.body`), when
    `render_email(html=False)` left them out."""
    return EmailParts(*_markdown.render(body))
