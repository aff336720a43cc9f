"""The markdown Notify accepts in email templates, rendered to the HTML part and the plain-text part.

A deliberate subset of Notify's markdown dialect (notifications-utils on mistune 3): paragraphs with
hard line breaks, `#` and `##` headings (also as `===`/`---` underlines), `*`, `-`, `•` and `1.` lists,
`^` inset text, `---` rules, `[text](url)` links, bare http(s) URLs, and backslash escapes. Like Notify
there is no emphasis, code or raw HTML: such characters are shown as typed. HTML entities written in
the template (`&amp;`, `&copy;`) are kept as entities in the HTML part and shown as their characters in
the plain-text part. docs/template-parity.md lists where Herald still differs.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from html.entities import html5

# Presentation copied from Notify's email renderer so messages look the same in mail clients.
LINK_STYLE = "word-wrap: break-word; color: #1D70B8;"
_P = '<p style="Margin: 0 0 20px 0; font-size: 19px; line-height: 25px; color: #0B0C0C;">'
_H2 = (
    '<h2 style="Margin: 0 0 15px 0; padding: 10px 0 0 0; font-size: 27px; line-height: 35px; '
    'font-weight: bold; color: #0B0C0C;">'
)
_H3 = (
    '<h3 style="Margin: 0 0 15px 0; padding: 10px 0 0 0; font-size: 19px; line-height: 25px; '
    'font-weight: bold; color: #0B0C0C;">'
)
_HR = '<hr style="border: 0; height: 1px; background: #B1B4B6; Margin: 30px 0 30px 0;">'
_LIST_OPEN = (
    '<table role="presentation" style="padding: 0 0 20px 0;"><tr>'
    '<td style="font-family: Helvetica, Arial, sans-serif;">'
)
_LIST_CLOSE = "</td></tr></table>"
_OL = '<ol style="Margin: 0 0 0 20px; padding: 0; list-style-type: decimal;">'
_UL = '<ul style="Margin: 0 0 0 20px; padding: 0; list-style-type: disc;">'
_LI = '<li style="Margin: 5px 0 5px; padding: 0 0 0 5px; font-size: 19px;line-height: 25px; color: #0B0C0C;">'
# Inset text sits in a block of its own that carries the margin, as in Notify's renderer.
_INSET_OPEN = (
    '<div style="Margin: 0 0 20px 0;"><blockquote style="Margin: 0; border-left: 10px solid #B1B4B6;'
    'padding: 15px 0 0.1px 15px; font-size: 19px; line-height: 25px;">'
)
_INSET_CLOSE = "</blockquote></div>"
_BR = "<br>"
_PLAIN_WIDTH = 65
_PLAIN_RULE = "\n\n" + ("=-" * _PLAIN_WIDTH)[:_PLAIN_WIDTH]

_HRULE = re.compile(r" {0,3}[-*_](?: *[-*_]){2,} *")
_ATX_HEADING = re.compile(r" *(#{1,6})(.*\S.*)")
_UNDERLINE = re.compile(r" *[=-]+ *")
_QUOTE_START = re.compile(r" *\^.")
# Every leading marker goes: "^ ^ text" is one inset, not two, so insets never nest (or recurse).
_QUOTE_MARKER = re.compile(r"(?: *\^ ?)+")
_BULLET = re.compile(r" *(?:(•)[ \t]*|([*-])[ \t]+|(\d+)\.[ \t]+)")
# Characters Notify drops from email bodies: the line separator, and the Hangul fillers that render as
# nothing (Notify names U+3164; its half-width and Jamo forms behave the same).
_INVISIBLE = "\u2028\u3164\u115f\u1160\uffa0"

_INLINE = re.compile(
    r"\\(?P<escaped>[\\`*_{}\[\]()<>#+\-.!|~^])"
    r"|(?P<image>!)?\[(?P<label>(?:\\.|[^\[\]\\])*)\]"
    r"\(\s*<?(?P<href>(?:[^\s()<>\\]|\\.|\((?:[^\s()\\]|\\.)*\))*)>?(?:\s+[\"'](?P<title>[^\"'\n]*)[\"'])?\s*\)"
    r"|<(?P<angled>https?://[^\s<>]+)>"
    r"|(?P<url>https?://[^\s<]+[^<.,:\"')\]\s])",
    re.IGNORECASE,
)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()<>#+\-.!|~^])")
_UNSAFE_SCHEME = re.compile(r"\s*(?:javascript|vbscript|data):", re.IGNORECASE)
_RECOGNISED_SCHEMES = ("ftp:", "file:", "http:", "https:", "mailto:", "tel:")
# What the href keeps as typed; anything else (quotes, brackets, spaces, non-ASCII) is percent-encoded,
# which also keeps the attribute closed. Existing %XX escapes are left alone, as Notify does.
_HREF_SAFE = ":/?#=&;%"
_TARGET_SAFE = ":/?#@!$&()*+,;=%"
# An "&" that does not start an entity ("&amp;", "&#40;", "&copy;": the semicolon is required).
_BARE_AMPERSAND = re.compile(r"&(?!#[0-9]{1,7};|#[xX][0-9a-fA-F]+;|[^\t\n\f <&#;]{1,32};)")
_CHARACTER_REFERENCE = re.compile(r"&(#[0-9]{1,7};|#[xX][0-9a-fA-F]+;|[^\t\n\f <&#;]{1,32};)")

# "GOV.UK" gets a zero-width space so mail clients do not turn it into a link (as Notify does): Notify's
# (^|\s)(#|\*|\^)?GOV\.UK(?!/|\?|#), case-insensitive. Written to start with "GOV." and look back from there,
# with the letters re.IGNORECASE would also take, so the regex engine can skip ahead to a "G" or "g" rather
# than try the pattern at every character.
_GOVUK = re.compile("[Gg][Oo][Vv]\\.(?=[Uu][Kk\u212a](?![/?#]))(?:(?<!\\S.{4})|(?<=[#*^].{4})(?<!\\S.{5}))")

# Whitespace patterns start only where a run of whitespace starts and never give back what they take,
# so a long run of spaces costs linear time rather than quadratic.
_WHITESPACE_BEFORE_PUNCTUATION = re.compile(r"(?<![ \t])[ \t]++(?=[,.])")
_SPACED_HYPHEN = re.compile(r"(?<![^\S\n])[^\S\n]++[-–—]{1,3}[^\S\n]++")
_DASHES = "-–—"
# An opening quote: at the start, or after whitespace, a bracket or a dash. The quote comes first and the
# test looks back from it, so the regex engine can skip ahead to each quote.
_OPENING_DOUBLE = re.compile(r'"(?<![^\s(\[{\-–—]")')
_OPENING_SINGLE = re.compile(r"'(?<![^\s(\[{\-–—\"“]')(?=\w)")
_WORD_WITH_AT = re.compile(r"(?<!\S)[^\s@]*+@\S*")


def _straighten_quotes(match: re.Match[str]) -> str:
    return match.group(0).replace("‘", "'").replace("’", "'")


def _has_dash_after_whitespace(text: str) -> bool:
    """Whether a dash follows whitespace other than a newline, which `_SPACED_HYPHEN` needs: finding each
    dash is far cheaper than running that pattern, which cannot skip ahead."""
    for dash in _DASHES:
        index = text.find(dash, 1) if dash in text else -1  # "in" is the cheaper call
        while index != -1:
            before = text[index - 1]
            if before.isspace() and before != "\n":
                return True
            index = text.find(dash, index + 1)
    return False


def _heading_text(raw: str) -> str:
    """mistune's ` *text *#* *`: the closing hashes are decoration, unless they are all there is."""
    text = raw.strip(" ")
    return text.rstrip("#").rstrip(" ") or text


def nice_typography(text: str) -> str:
    """Notify's do_nice_typography, simplified: no space before , or ., curly quotes (but not inside email
    addresses), and an en dash for a hyphen standing between spaces."""
    if " ," in text or " ." in text or "\t" in text:  # substring tests are far cheaper than the regex
        text = _WHITESPACE_BEFORE_PUNCTUATION.sub("", text)
    if '"' in text:
        text = _OPENING_DOUBLE.sub("“", text).replace('"', "”")
    if "'" in text:
        text = _OPENING_SINGLE.sub("‘", text).replace("'", "’")
        if "@" in text:
            text = _WORD_WITH_AT.sub(_straighten_quotes, text)
    if _has_dash_after_whitespace(text):
        text = _SPACED_HYPHEN.sub(" – ", text)
    return text


def _zero_width_space_after(match: re.Match[str]) -> str:
    return match.group(0) + "\u200b"


def unlink_govuk(text: str) -> str:
    lowered = text.lower()
    if "gov.uk" not in lowered:  # every match lowercases to "gov.uk", and this is far cheaper than the pattern
        return text
    if not text.isascii():  # lowercasing can change lengths: only ASCII text keeps its indexes
        return _GOVUK.sub(_zero_width_space_after, text)
    # The pattern tried only where "gov.uk" stands, rather than scanning the whole body.
    parts = []
    position = 0
    for index in _indexes(lowered, "gov.uk"):
        if _GOVUK.match(text, index):
            parts.append(text[position : index + 4])
            position = index + 4
    parts.append(text[position:])
    return "\u200b".join(parts)


def unescape_markdown(text: str) -> str:
    return _ESCAPE.sub(r"\1", text) if "\\" in text else text


def escape_text(text: str) -> str:
    """HTML-escape text but keep the entities it already holds, so "&amp;" is not shown as "&amp;amp;"."""
    if "&" in text:
        text = _BARE_AMPERSAND.sub("&amp;", text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _character(match: re.Match[str]) -> str:
    reference = match.group(1)
    if reference.startswith("#"):
        return html.unescape(match.group(0))
    return html5.get(reference, match.group(0))


def unescape_entities(text: str) -> str:
    """The characters that entities stand for, for the plain-text part; only complete entities (with
    their semicolon) count, so "&copy" or "R&D;" stay as typed."""
    return _CHARACTER_REFERENCE.sub(_character, text) if "&" in text else text


def _may_open_block(line: str) -> bool:
    """False when no block pattern (rule, heading, underline, inset, list item) can match `line`: each
    starts, after spaces, with one of these characters or a digit. Most lines are plain text, and this
    costs far less than trying the patterns. A line of only spaces gives "", which counts as a maybe."""
    first = line.lstrip(" ")[:1]
    return first in "-*_#=^•" or first.isdecimal()


def _starts_other_block(line: str) -> bool:
    return _may_open_block(line) and bool(
        _HRULE.fullmatch(line) or _ATX_HEADING.fullmatch(line) or _QUOTE_START.match(line) or _BULLET.match(line)
    )


def _is_underline(lines: list[str], index: int) -> bool:
    return index < len(lines) and _may_open_block(lines[index]) and _UNDERLINE.fullmatch(lines[index]) is not None


def _next_content_line(lines: list[str], index: int) -> int:
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index


class _Output:
    """The HTML part and the plain-text part, written side by side in one pass over the blocks.

    `known` maps the text of blocks to `_inline(text)`, which is a pure function of it, so a block whose text
    is in there is not rendered again. Only the template's own texts go in (`learn`), never a filled one:
    personalisation is client-supplied and unbounded."""

    __slots__ = ("html", "known", "learn", "plain")

    def __init__(self, known: dict[str, tuple[str, str]], *, learn: bool) -> None:
        self.html: list[str] = []
        self.plain: list[str] = []
        self.known = known
        self.learn = learn

    def inline(self, text: str) -> tuple[str, str]:
        rendered = self.known.get(text)
        if rendered is None:
            rendered = _inline(text)
            if self.learn:
                self.known[text] = rendered
        return rendered

    def paragraph(self, text: str) -> None:
        html, plain = self.inline(text)
        # Judged on what it renders to: a paragraph of only an image (images are dropped) leaves nothing.
        if html.strip():
            self.html.append(f"{_P}{html}</p>")
        if plain.strip():
            self.plain.append(f"\n\n{plain}")

    def heading(self, level: int, text: str) -> None:
        if not text.strip():
            return
        if level > 2:
            self.paragraph(text)
            return
        html, plain = self.inline(text)
        self.html.append(f"{_H2}{html}</h2>" if level == 1 else f"{_H3}{html}</h3>")
        underline = ("=" if level == 1 else "-") * _PLAIN_WIDTH
        self.plain.append(f"\n\n\n{plain}\n{underline}")

    def rule(self) -> None:
        self.html.append(_HR)
        self.plain.append(_PLAIN_RULE)

    def listing(self, ordered: bool, items: list[str], loose: bool) -> None:
        """Items set apart by blank lines (`loose`) are each a paragraph of their own, as in Notify."""
        self.html.append(_LIST_OPEN + (_OL if ordered else _UL))
        self.plain.append("\n")
        for number, item in enumerate(items, 1):
            html, plain = self.inline(item)
            if loose:
                html = f"{_P}{html}</p>" if html.strip() else ""
            self.html.append(f"{_LI}{html}</li>")
            self.plain.append(f"\n{number}. {plain}" if ordered else f"\n• {plain}")
        self.html.append(("</ol>" if ordered else "</ul>") + _LIST_CLOSE)


def _parse_quote(lines: list[str], index: int, out: _Output) -> int:
    inner: list[str] = []
    while True:
        # A "^" line takes the non-blank lines after it along; blank lines then another "^" line continue it.
        inner.append(_QUOTE_MARKER.sub("", lines[index], count=1))
        index += 1
        while index < len(lines) and lines[index].strip():
            inner.append(_QUOTE_MARKER.sub("", lines[index], count=1))
            index += 1
        following = _next_content_line(lines, index)
        if following < len(lines) and _QUOTE_START.match(lines[following]):
            inner.extend([""] * (following - index))
            index = following
            continue
        # Inset text sits in a block of its own in the HTML part; the plain-text part shows just its blocks.
        out.html.append(_INSET_OPEN)
        _parse_blocks(inner, out)
        out.html.append(_INSET_CLOSE)
        return index


def _marker(bullet: re.Match[str]) -> str:
    """What a list item must share with the first item to belong to the same list: "." for any number,
    else the bullet character itself (a "*" item after "-" items starts a new list, as in CommonMark)."""
    return "." if bullet.group(3) is not None else bullet.group(1) or bullet.group(2)


def _bullet(line: str) -> re.Match[str] | None:
    return _BULLET.match(line) if _may_open_block(line) else None


def _parse_list(lines: list[str], index: int, out: _Output) -> int:
    first = _BULLET.match(lines[index])
    assert first is not None
    marker = _marker(first)
    items: list[list[str]] = []
    loose = False
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            # One blank line between items keeps the list going (and makes it loose); two or more end it.
            following = _next_content_line(lines, index)
            if following - index > 1 or following == len(lines) or _HRULE.fullmatch(lines[following]):
                break
            bullet = _bullet(lines[following])
            if bullet is None or _marker(bullet) != marker:
                break
            loose = True
            index = following
            continue
        if _may_open_block(line) and (_HRULE.fullmatch(line) or _ATX_HEADING.fullmatch(line)):
            break
        if bullet := _bullet(line):
            if _marker(bullet) != marker:
                break
            items.append([line[bullet.end() :].strip()])
        else:
            items[-1].append(line.strip())
        index += 1
    out.listing(marker == ".", ["\n".join(item) for item in items], loose)
    return index


def _parse_blocks(lines: list[str], out: _Output) -> None:
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        may_open = _may_open_block(line)
        if may_open and _HRULE.fullmatch(line):
            out.rule()
            index += 1
        elif may_open and (heading := _ATX_HEADING.fullmatch(line)):
            out.heading(len(heading.group(1)), _heading_text(heading.group(2)))
            index += 1
        elif _is_underline(lines, index + 1):
            out.heading(1 if lines[index + 1].strip()[-1] == "=" else 2, line.strip())
            index += 2
        elif may_open and _QUOTE_START.match(line):
            index = _parse_quote(lines, index, out)
        elif may_open and _BULLET.match(line):
            index = _parse_list(lines, index, out)
        else:
            paragraph = [line.strip()]
            index += 1
            while (
                index < len(lines)
                and lines[index].strip()
                and not _starts_other_block(lines[index])
                and not _is_underline(lines, index + 1)
            ):
                paragraph.append(lines[index].strip())
                index += 1
            out.paragraph("\n".join(paragraph))


def _split_lines(markdown: str) -> list[str]:
    if "\r" in markdown:
        markdown = markdown.replace("\r\n", "\n").replace("\r", "\n")
    if not markdown.isascii():  # every invisible character is outside ASCII, and isascii() is free
        for character in _INVISIBLE:  # str.translate looks every character up: far slower than these
            if character in markdown:
                markdown = markdown.replace(character, "")
    return markdown.split("\n")


def _href(url: str) -> str:
    """Notify's create_sanitised_html_for_url: a scheme it knows (else http://), and everything that could
    break out of the attribute percent-encoded, so the result needs no further HTML escaping."""
    if not url.lower().startswith(_RECOGNISED_SCHEMES):
        url = "http://" + url
    return urllib.parse.quote(url, safe=_HREF_SAFE)


def _link_target(href: str) -> str | None:
    """A markdown link's target as mistune gives it: entities resolved, then percent-encoded but for URL
    punctuation. Scripting schemes give no link at all (beyond Notify, whose http:// prefix for unknown
    schemes also disarms them). The plain-text part shows this; the HTML part's href goes through `_href`."""
    if _UNSAFE_SCHEME.match(href):
        return None
    return urllib.parse.quote(html.unescape(href), safe=_TARGET_SAFE)


def _indexes(text: str, part: str) -> Iterator[int]:
    index = text.find(part)
    while index != -1:
        yield index
        index = text.find(part, index + 1)


def _inline_matches(text: str) -> Iterator[re.Match[str]]:
    """What `_INLINE.finditer(text)` finds, trying the pattern only where a match can start: at a "\\", a
    "[" (or the "!" before it), a "<", or the "http"/"https" before a "://". finditer would try it at every
    character, which costs about 60 ns each."""
    starts = {*_indexes(text, "\\"), *_indexes(text, "<")}
    for index in _indexes(text, "["):
        starts.update((index, index - 1))
    for index in _indexes(text, "://"):
        starts.update((index - 4, index - 5))
    position = 0
    for start in sorted(starts):
        if start >= position and (match := _INLINE.match(text, start)):
            yield match
            position = match.end()


def _text_run(text: str) -> tuple[str, str]:
    typography = nice_typography(text)
    return escape_text(typography).replace("\n", _BR), unescape_entities(typography)


def _inline(text: str) -> tuple[str, str]:
    """Text in a block as HTML and as plain text: runs of text (escapes resolved), links and bare URLs;
    images are dropped."""
    if "\\" not in text and "[" not in text and "://" not in text:
        # Nothing `_INLINE` could match (the common case): the text is one run.
        return _text_run(text) if text else ("", "")
    html_parts: list[str] = []
    plain_parts: list[str] = []
    run: list[str] = []

    def end_run() -> None:
        if any(run):
            html, plain = _text_run("".join(run))
            html_parts.append(html)
            plain_parts.append(plain)
        run.clear()

    position = 0
    for match in _inline_matches(text):
        run.append(text[position : match.start()])
        position = match.end()
        if (escaped := match.group("escaped")) is not None:
            run.append(escaped)
            continue
        end_run()
        if match.group("label") is not None:
            if match.group("image"):
                continue
            label = unescape_markdown(match.group("label"))
            title = match.group("title")
            target = _link_target(unescape_markdown(match.group("href")))
            if target is None:
                html_parts.append(escape_text(label))
                plain_parts.append(unescape_entities(label))
                continue
            title_attribute = f' title="{html.escape(title)}"' if title else ""
            html_parts.append(
                f'<a style="{LINK_STYLE}" href="{_href(target)}"{title_attribute}>{escape_text(label)}</a>'
            )
            plain_parts.append(f"{unescape_entities(label)}{f' ({title})' if title else ''}: {target}")
            continue
        if angled := match.group("angled"):
            url = angled
        else:
            # The URL pattern never ends on ")"; give back those that close a "(" opened inside the URL,
            # so https://en.wikipedia.org/wiki/Foo_(bar) keeps its bracket (Notify's mistune loses it).
            start = match.start("url")
            while position < len(text) and text[position] == ")":
                if text.count("(", start, position) <= text.count(")", start, position):
                    break
                position += 1
            url = text[start:position]
        html_parts.append(f'<a style="{LINK_STYLE}" href="{_href(url)}">{escape_text(url)}</a>')
        plain_parts.append(url)
    run.append(text[position:])
    end_run()
    return "".join(html_parts), "".join(plain_parts)


def _render(markdown: str, out: _Output) -> tuple[str, str]:
    _parse_blocks(_split_lines(unlink_govuk(markdown)), out)
    return "".join(out.html), "".join(out.plain).lstrip() + "\n"


@dataclass(frozen=True, slots=True)
class _Template:
    html: str
    plain: str
    known: dict[str, tuple[str, str]]  # the texts of the template's blocks, rendered


# A cached template keeps about five times its size (its HTML, plain text and blocks: some 50 kB for 10,000
# characters), so only templates up to this size are cached, and only so many (at most ~13 MB): a service's
# largest templates cannot fill ingest's memory. Larger ones are rare, and render without the cache. The
# count leaves room for many services' templates in turn, as each one missed is rendered twice.
_LARGEST_CACHED_TEMPLATE = 10_000


@lru_cache(maxsize=256)
def _template(template: str) -> _Template:
    """A template body rendered once as it stands, placeholders and all: templates repeat, and most of their
    blocks hold no placeholder, so they come out of a filled body unchanged."""
    out = _Output({}, learn=True)
    html, plain = _render(template, out)
    return _Template(html, plain, out.known)


def render(markdown: str, template: str | None = None) -> tuple[str, str]:
    """An email body written in markdown, as the HTML part and the plain-text part of the message. With the
    `template` it was filled from, the blocks that came out of the template unchanged are not rendered again."""
    if template is None or len(template) > _LARGEST_CACHED_TEMPLATE:
        return _render(markdown, _Output({}, learn=False))
    rendered = _template(template)
    if markdown == template:
        return rendered.html, rendered.plain
    return _render(markdown, _Output(rendered.known, learn=False))
