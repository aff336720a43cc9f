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

_HRULE = re.compile(r" {0,3}[-*_](?: *[-*_]){2,} *")
_ATX_HEADING = re.compile(r" *(#{1,6})(.*\S.*)")
_UNDERLINE = re.compile(r" *[=-]+ *")
_QUOTE_START = re.compile(r" *\^.")
# Every leading marker goes: "^ ^ text" is one inset, not two, so insets never nest (or recurse).
_QUOTE_MARKER = re.compile(r"(?: *\^ ?)+")
_BULLET = re.compile(r" *(?:(•)[ \t]*|([*-])[ \t]+|(\d+)\.[ \t]+)")
# Characters Notify drops from email bodies: the line separator, and the Hangul fillers that render as
# nothing (Notify names U+3164; its half-width and Jamo forms behave the same).
_INVISIBLE = str.maketrans(dict.fromkeys("\u2028\u3164\u115f\u1160\uffa0"))

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

# "GOV.UK" gets a zero-width space so mail clients do not turn it into a link (as Notify does).
_GOVUK = re.compile(r"(^|\s)(#|\*|\^)?(GOV)\.(UK)(?!/|\?|#)", re.IGNORECASE)

# Whitespace patterns start only where a run of whitespace starts and never give back what they take,
# so a long run of spaces costs linear time rather than quadratic.
_WHITESPACE_BEFORE_PUNCTUATION = re.compile(r"(?<![ \t])[ \t]++([,.])")
_SPACED_HYPHEN = re.compile(r"(?<![^\S\n])[^\S\n]++[-–—]{1,3}[^\S\n]++")
_OPENING_DOUBLE = re.compile(r'(?:^|(?<=[\s(\[{\-–—]))"')
_OPENING_SINGLE = re.compile(r"(?:^|(?<=[\s(\[{\-–—\"“]))'(?=\w)")
_WORD = re.compile(r"\S+")


def _straighten_quotes_in_email_address(match: re.Match[str]) -> str:
    word = match.group(0)
    return word.replace("‘", "'").replace("’", "'") if "@" in word else word


def _heading_text(raw: str) -> str:
    """mistune's ` *text *#* *`: the closing hashes are decoration, unless they are all there is."""
    text = raw.strip(" ")
    return text.rstrip("#").rstrip(" ") or text


def nice_typography(text: str) -> str:
    """Notify's do_nice_typography, simplified: no space before , or ., curly quotes (but not inside email
    addresses), and an en dash for a hyphen standing between spaces."""
    if " ," in text or " ." in text or "\t" in text:  # substring tests are far cheaper than the regex
        text = _WHITESPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    if '"' in text:
        text = _OPENING_DOUBLE.sub("“", text).replace('"', "”")
    if "'" in text:
        text = _OPENING_SINGLE.sub("‘", text).replace("'", "’")
        if "@" in text:
            text = _WORD.sub(_straighten_quotes_in_email_address, text)
    if "-" in text or "–" in text or "—" in text:
        text = _SPACED_HYPHEN.sub(" – ", text)
    return text


def unlink_govuk(text: str) -> str:
    return _GOVUK.sub("\\1\\2\\3.\u200b\\4", text)


def unescape_markdown(text: str) -> str:
    return _ESCAPE.sub(r"\1", text)


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


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str


@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Rule:
    pass


@dataclass(frozen=True, slots=True)
class ListBlock:
    ordered: bool
    items: tuple[str, ...]
    # Items set apart by blank lines: each item's text is then a paragraph of its own, as in Notify.
    loose: bool = False


@dataclass(frozen=True, slots=True)
class Quote:
    children: tuple[Block, ...]


Block = Paragraph | Heading | Rule | ListBlock | Quote


def _starts_other_block(line: str) -> bool:
    return bool(
        _HRULE.fullmatch(line) or _ATX_HEADING.fullmatch(line) or _QUOTE_START.match(line) or _BULLET.match(line)
    )


def _next_content_line(lines: list[str], index: int) -> int:
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index


def _parse_quote(lines: list[str], index: int) -> tuple[Quote, int]:
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
        return Quote(tuple(parse_blocks(inner))), index


def _marker(bullet: re.Match[str]) -> str:
    """What a list item must share with the first item to belong to the same list: "." for any number,
    else the bullet character itself (a "*" item after "-" items starts a new list, as in CommonMark)."""
    return "." if bullet.group(3) is not None else bullet.group(1) or bullet.group(2)


def _parse_list(lines: list[str], index: int) -> tuple[ListBlock, int]:
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
            bullet = _BULLET.match(lines[following])
            if bullet is None or _marker(bullet) != marker:
                break
            loose = True
            index = following
            continue
        if _HRULE.fullmatch(line) or _ATX_HEADING.fullmatch(line):
            break
        if bullet := _BULLET.match(line):
            if _marker(bullet) != marker:
                break
            items.append([line[bullet.end() :].strip()])
        else:
            items[-1].append(line.strip())
        index += 1
    return ListBlock(marker == ".", tuple("\n".join(item) for item in items), loose), index


def parse_blocks(lines: list[str]) -> list[Block]:
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
        elif _HRULE.fullmatch(line):
            blocks.append(Rule())
            index += 1
        elif heading := _ATX_HEADING.fullmatch(line):
            blocks.append(Heading(len(heading.group(1)), _heading_text(heading.group(2))))
            index += 1
        elif index + 1 < len(lines) and _UNDERLINE.fullmatch(lines[index + 1]):
            blocks.append(Heading(1 if lines[index + 1].strip()[-1] == "=" else 2, line.strip()))
            index += 2
        elif _QUOTE_START.match(line):
            quote, index = _parse_quote(lines, index)
            blocks.append(quote)
        elif _BULLET.match(line):
            listing, index = _parse_list(lines, index)
            blocks.append(listing)
        else:
            paragraph = [line.strip()]
            index += 1
            while (
                index < len(lines)
                and lines[index].strip()
                and not _starts_other_block(lines[index])
                and not (index + 1 < len(lines) and _UNDERLINE.fullmatch(lines[index + 1]))
            ):
                paragraph.append(lines[index].strip())
                index += 1
            blocks.append(Paragraph("\n".join(paragraph)))
    return blocks


def _split_lines(markdown: str) -> list[str]:
    return markdown.replace("\r\n", "\n").replace("\r", "\n").translate(_INVISIBLE).split("\n")


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


@dataclass(frozen=True, slots=True)
class _Link:
    label: str
    href: str
    title: str | None


@dataclass(frozen=True, slots=True)
class _AutoLink:
    url: str


def _inline_tokens(text: str) -> Iterator[str | _Link | _AutoLink]:
    """Split a paragraph into runs of text (escapes resolved), links and bare URLs; images are dropped."""
    run: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        run.append(text[position : match.start()])
        position = match.end()
        if (escaped := match.group("escaped")) is not None:
            run.append(escaped)
            continue
        if any(run):
            yield "".join(run)
        run.clear()
        if match.group("label") is not None:
            if not match.group("image"):
                href = unescape_markdown(match.group("href"))
                yield _Link(unescape_markdown(match.group("label")), href, match.group("title"))
        elif angled := match.group("angled"):
            yield _AutoLink(angled)
        else:
            # The URL pattern never ends on ")"; give back those that close a "(" opened inside the URL,
            # so https://en.wikipedia.org/wiki/Foo_(bar) keeps its bracket (Notify's mistune loses it).
            start = match.start("url")
            while position < len(text) and text[position] == ")":
                if text.count("(", start, position) <= text.count(")", start, position):
                    break
                position += 1
            yield _AutoLink(text[start:position])
    run.append(text[position:])
    if any(run):
        yield "".join(run)


def _inline_html(text: str) -> str:
    out: list[str] = []
    for token in _inline_tokens(text):
        if isinstance(token, str):
            out.append(escape_text(nice_typography(token)).replace("\n", _BR))
        elif isinstance(token, _Link):
            label = escape_text(token.label)
            target = _link_target(token.href)
            if target is None:
                out.append(label)
            else:
                title = f' title="{html.escape(token.title)}"' if token.title else ""
                out.append(f'<a style="{LINK_STYLE}" href="{_href(target)}"{title}>{label}</a>')
        else:
            out.append(f'<a style="{LINK_STYLE}" href="{_href(token.url)}">{escape_text(token.url)}</a>')
    return "".join(out)


def _inline_plain(text: str) -> str:
    out: list[str] = []
    for token in _inline_tokens(text):
        if isinstance(token, str):
            out.append(unescape_entities(nice_typography(token)))
        elif isinstance(token, _Link):
            label = unescape_entities(token.label)
            title = f" ({token.title})" if token.title else ""
            target = _link_target(token.href)
            out.append(label if target is None else f"{label}{title}: {target}")
        else:
            out.append(token.url)
    return "".join(out)


def _paragraph_html(text: str) -> str:
    # Judged on what it renders to: a paragraph of only an image (images are dropped) leaves nothing.
    inner = _inline_html(text)
    return f"{_P}{inner}</p>" if inner.strip() else ""


def _block_html(block: Block) -> str:
    match block:
        case Paragraph(text) | Heading(_, text) if not text.strip():
            return ""
        case Paragraph(text):
            return _paragraph_html(text)
        case Heading(1, text):
            return f"{_H2}{_inline_html(text)}</h2>"
        case Heading(2, text):
            return f"{_H3}{_inline_html(text)}</h3>"
        case Heading(_, text):
            return _paragraph_html(text)
        case Rule():
            return _HR
        case ListBlock(ordered, items, loose):
            render = _paragraph_html if loose else _inline_html
            body = "".join(f"{_LI}{render(item)}</li>" for item in items)
            opening, closing = (_OL, "</ol>") if ordered else (_UL, "</ul>")
            return f"{_LIST_OPEN}{opening}{body}{closing}{_LIST_CLOSE}"
        case Quote(children):
            return f"{_INSET_OPEN}{''.join(_block_html(child) for child in children)}{_INSET_CLOSE}"
    raise AssertionError(block)  # pragma: no cover - the match is exhaustive


def _block_plain(block: Block) -> str:
    match block:
        case Paragraph(text) | Heading(_, text) if not text.strip():
            return ""
        case Heading(1 | 2 as level, text):
            underline = ("=" if level == 1 else "-") * _PLAIN_WIDTH
            return f"\n\n\n{_inline_plain(text)}\n{underline}"
        case Paragraph(text) | Heading(_, text):
            inner = _inline_plain(text)
            return f"\n\n{inner}" if inner.strip() else ""
        case Rule():
            return "\n\n" + ("=-" * _PLAIN_WIDTH)[:_PLAIN_WIDTH]
        case ListBlock(ordered, items, _):
            markers = (f"{number}." if ordered else "•" for number in range(1, len(items) + 1))
            return "\n" + "".join(
                f"\n{marker} {_inline_plain(item)}" for marker, item in zip(markers, items, strict=True)
            )
        case Quote(children):
            return "".join(_block_plain(child) for child in children)
    raise AssertionError(block)  # pragma: no cover - the match is exhaustive


def parse(markdown: str) -> list[Block]:
    return parse_blocks(_split_lines(unlink_govuk(markdown)))


def to_html(blocks: list[Block]) -> str:
    return "".join(_block_html(block) for block in blocks)


def to_plain_text(blocks: list[Block]) -> str:
    return "".join(_block_plain(block) for block in blocks).lstrip() + "\n"
