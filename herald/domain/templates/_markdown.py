"""The markdown Notify accepts in email templates, rendered to the HTML part and the plain-text part.

A deliberate subset of Notify's mistune-0.8 dialect: paragraphs with hard line breaks, `#` and `##`
headings (also as `===`/`---` underlines), `*`, `-`, `•` and `1.` lists, `^` inset text, `---` rules,
`[text](url)` links, bare http(s) URLs, and backslash escapes. Like Notify there is no emphasis, code
or raw HTML: such characters are shown as typed (and HTML-escaped).
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

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
_BLOCKQUOTE = (
    '<blockquote style="Margin: 0 0 20px 0; border-left: 10px solid #B1B4B6;'
    'padding: 15px 0 0.1px 15px; font-size: 19px; line-height: 25px;">'
)
_PLAIN_WIDTH = 65

_HRULE = re.compile(r" {0,3}[-*_](?: *[-*_]){2,} *")
_ATX_HEADING = re.compile(r" *(#{1,6})(.*\S.*)")
_UNDERLINE = re.compile(r" *[=-]+ *")
_QUOTE_START = re.compile(r" *\^.")
# Every leading marker goes: "^ ^ text" is one inset, not two, so insets never nest (or recurse).
_QUOTE_MARKER = re.compile(r"(?: *\^ ?)+")
_BULLET = re.compile(r" *(?:(•)[ \t]*|([*-])[ \t]+|(\d+)\.[ \t]+)")

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


def _parse_list(lines: list[str], index: int) -> tuple[ListBlock, int]:
    first = _BULLET.match(lines[index])
    assert first is not None
    ordered = first.group(3) is not None
    items: list[list[str]] = []
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            following = _next_content_line(lines, index)
            if following < len(lines) and _BULLET.match(lines[following]) and not _HRULE.fullmatch(lines[following]):
                index = following
                continue
            break
        if _HRULE.fullmatch(line) or _ATX_HEADING.fullmatch(line):
            break
        if bullet := _BULLET.match(line):
            items.append([line[bullet.end() :].strip()])
        else:
            items[-1].append(line.strip())
        index += 1
    return ListBlock(ordered, tuple("\n".join(item) for item in items)), index


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
    return markdown.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "").split("\n")


def _safe_href(href: str) -> str | None:
    return None if _UNSAFE_SCHEME.match(href) else href


def _autolink_href(url: str) -> str:
    # Notify's create_sanitised_html_for_url: normalise the percent-encoding so quotes cannot break out.
    return urllib.parse.quote(urllib.parse.unquote(url), safe=":/?#=&;")


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
            out.append(html.escape(nice_typography(token), quote=False).replace("\n", "<br />"))
        elif isinstance(token, _Link):
            label = html.escape(token.label, quote=False)
            href = _safe_href(token.href)
            if href is None:
                out.append(label)
            else:
                title = f' title="{html.escape(token.title)}"' if token.title else ""
                out.append(f'<a style="{LINK_STYLE}" href="{html.escape(href)}"{title}>{label}</a>')
        else:
            href = html.escape(_autolink_href(token.url))
            out.append(f'<a style="{LINK_STYLE}" href="{href}">{html.escape(token.url, quote=False)}</a>')
    return "".join(out)


def _inline_plain(text: str) -> str:
    out: list[str] = []
    for token in _inline_tokens(text):
        if isinstance(token, str):
            out.append(nice_typography(token))
        elif isinstance(token, _Link):
            title = f" ({token.title})" if token.title else ""
            out.append(f"{token.label}{title}: {token.href}" if _safe_href(token.href) else token.label)
        else:
            out.append(token.url)
    return "".join(out)


def _block_html(block: Block) -> str:
    match block:
        case Paragraph(text) | Heading(_, text) if not text.strip():
            return ""
        case Paragraph(text):
            return f"{_P}{_inline_html(text)}</p>"
        case Heading(1, text):
            return f"{_H2}{_inline_html(text)}</h2>"
        case Heading(2, text):
            return f"{_H3}{_inline_html(text)}</h3>"
        case Heading(_, text):
            return f"{_P}{_inline_html(text)}</p>"
        case Rule():
            return _HR
        case ListBlock(ordered, items):
            body = "".join(f"{_LI}{_inline_html(item)}</li>" for item in items)
            opening, closing = (_OL, "</ol>") if ordered else (_UL, "</ul>")
            return f"{_LIST_OPEN}{opening}{body}{closing}{_LIST_CLOSE}"
        case Quote(children):
            return f"{_BLOCKQUOTE}{''.join(_block_html(child) for child in children)}</blockquote>"
    raise AssertionError(block)  # pragma: no cover - the match is exhaustive


def _block_plain(block: Block) -> str:
    match block:
        case Paragraph(text) | Heading(_, text) if not text.strip():
            return ""
        case Heading(1 | 2 as level, text):
            underline = ("=" if level == 1 else "-") * _PLAIN_WIDTH
            return f"\n\n\n{_inline_plain(text)}\n{underline}"
        case Paragraph(text) | Heading(_, text):
            return f"\n\n{_inline_plain(text)}"
        case Rule():
            return "\n\n" + ("=-" * _PLAIN_WIDTH)[:_PLAIN_WIDTH]
        case ListBlock(ordered, items):
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
