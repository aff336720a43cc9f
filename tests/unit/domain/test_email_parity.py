"""Email bodies against Notify's renderer (notifications-utils on mistune 3), class by class, with the whole
HTML and plain-text output written out. docs/template-parity.md lists what still differs and why."""

from __future__ import annotations

import pytest

from herald.domain.templates import render_email
from herald.domain.templates._placeholders import parse

P = '<p style="Margin: 0 0 20px 0; font-size: 19px; line-height: 25px; color: #0B0C0C;">'
LI = '<li style="Margin: 5px 0 5px; padding: 0 0 0 5px; font-size: 19px;line-height: 25px; color: #0B0C0C;">'
TABLE = (
    '<table role="presentation" style="padding: 0 0 20px 0;">'
    '<tr><td style="font-family: Helvetica, Arial, sans-serif;">'
)
END_TABLE = "</td></tr></table>"
OL = TABLE + '<ol style="Margin: 0 0 0 20px; padding: 0; list-style-type: decimal;">'
UL = TABLE + '<ul style="Margin: 0 0 0 20px; padding: 0; list-style-type: disc;">'
INSET = (
    '<div style="Margin: 0 0 20px 0;"><blockquote style="Margin: 0; border-left: 10px solid #B1B4B6;'
    'padding: 15px 0 0.1px 15px; font-size: 19px; line-height: 25px;">'
)
END_INSET = "</blockquote></div>"
A = '<a style="word-wrap: break-word; color: #1D70B8;" href="'


def _items(*texts: str) -> str:
    return "".join(f"{LI}{text}</li>" for text in texts)


def _check(body: str, personalisation: dict[str, object], html: str, plain: str) -> None:
    rendered = render_email("subject", body, personalisation)
    assert rendered.html == html
    assert rendered.plain_text == plain


@pytest.mark.parametrize(
    ("body", "html", "plain"),
    [
        # Two or more blank lines end a list; the next one starts again, of its own kind.
        (
            "1. a\n2. b\n3. c\n\n\n* d\n* e\n* f",
            f"{OL}{_items('a', 'b', 'c')}</ol>{END_TABLE}{UL}{_items('d', 'e', 'f')}</ul>{END_TABLE}",
            "1. a\n2. b\n3. c\n\n• d\n• e\n• f\n",
        ),
        (
            "* a\n* b\n\n\n\n* c",
            f"{UL}{_items('a', 'b')}</ul>{END_TABLE}{UL}{_items('c')}</ul>{END_TABLE}",
            "• a\n• b\n\n• c\n",
        ),
        (
            "1. a\n2. b\n\n\n3. c",
            f"{OL}{_items('a', 'b')}</ol>{END_TABLE}{OL}{_items('c')}</ol>{END_TABLE}",
            "1. a\n2. b\n\n1. c\n",
        ),
        # A change of kind, or of bullet character, starts a new list even without a blank line.
        (
            "1. a\n2. b\n* c",
            f"{OL}{_items('a', 'b')}</ol>{END_TABLE}{UL}{_items('c')}</ul>{END_TABLE}",
            "1. a\n2. b\n\n• c\n",
        ),
        (
            "* a\n- b",
            f"{UL}{_items('a')}</ul>{END_TABLE}{UL}{_items('b')}</ul>{END_TABLE}",
            "• a\n\n• b\n",
        ),
        # One blank line between items keeps one list, whose items are then paragraphs (a loose list).
        (
            "* a\n\n* b",
            f"{UL}{_items(f'{P}a</p>', f'{P}b</p>')}</ul>{END_TABLE}",
            "• a\n• b\n",
        ),
        (
            "Intro\n* a\n* b\n\nAfter",
            f"{P}Intro</p>{UL}{_items('a', 'b')}</ul>{END_TABLE}{P}After</p>",
            "Intro\n\n• a\n• b\n\nAfter\n",
        ),
    ],
)
def test_lists(body: str, html: str, plain: str) -> None:
    _check(body, {}, html, plain)


@pytest.mark.parametrize(
    ("body", "html", "plain"),
    [
        ("Fish &amp; chips", f"{P}Fish &amp; chips</p>", "Fish & chips\n"),
        ("No&nbsp;break", f"{P}No&nbsp;break</p>", "No\u00a0break\n"),
        ("&copy; Crown", f"{P}&copy; Crown</p>", "© Crown\n"),
        ("Type &lt;tag&gt;", f"{P}Type &lt;tag&gt;</p>", "Type <tag>\n"),
        ("&#163;5 or &#x20AC;6", f"{P}&#163;5 or &#x20AC;6</p>", "£5 or €6\n"),
        # Only a complete entity is one: a bare & or one without its semicolon is escaped.
        ("R&D and &copy 2024", f"{P}R&amp;D and &amp;copy 2024</p>", "R&D and &copy 2024\n"),
        ("&notanentity; <b>", f"{P}&notanentity; &lt;b&gt;</p>", "&notanentity; <b>\n"),
    ],
)
def test_html_entities_are_not_escaped_twice(body: str, html: str, plain: str) -> None:
    _check(body, {}, html, plain)


def test_entities_in_personalisation_are_treated_alike() -> None:
    _check("Hi ((name))", {"name": "Smith &amp; Sons"}, f"{P}Hi Smith &amp; Sons</p>", "Hi Smith & Sons\n")


@pytest.mark.parametrize(
    ("body", "html", "plain"),
    [
        ("![Logo](https://example.com/logo.png)", "", "\n"),
        ("Before\n\n![Logo](https://example.com/logo.png)\n\nAfter", f"{P}Before</p>{P}After</p>", "Before\n\nAfter\n"),
        ("![a](https://x.org/1.png) ![b](https://x.org/2.png)", "", "\n"),
        ("^ ![Logo](https://example.com/logo.png)", f"{INSET}{END_INSET}", "\n"),
    ],
)
def test_image_only_paragraphs_are_dropped(body: str, html: str, plain: str) -> None:
    _check(body, {}, html, plain)


@pytest.mark.parametrize(
    ("body", "personalisation", "html", "plain"),
    [
        (
            "[Click](https://www.gov.uk/((path)))",
            {"path": "a b"},
            f'{P}{A}https://www.gov.uk/a%20b">Click</a></p>',
            "Click: https://www.gov.uk/a%20b\n",
        ),
        (
            "[Apply](https://example.com/((first))/((second))?q=((query)))",
            {"first": "x y", "second": "p\tq", "query": "two words"},
            f'{P}{A}https://example.com/x%20y/p%09q?q=two%20words">Apply</a></p>',
            "Apply: https://example.com/x%20y/p%09q?q=two%20words\n",
        ),
        (
            "Go to https://www.gov.uk/((path)) today",
            {"path": "a b"},
            f'{P}Go to {A}https://www.gov.uk/a%20b">https://www.gov.uk/a%20b</a> today</p>',
            "Go to https://www.gov.uk/a%20b today\n",
        ),
        # Outside a URL a value keeps its spaces, even on the same line as a link.
        (
            "((name)) [Click](https://x.org/((path)))",
            {"name": "Jo Bloggs", "path": "a b"},
            f'{P}Jo Bloggs {A}https://x.org/a%20b">Click</a></p>',
            "Jo Bloggs Click: https://x.org/a%20b\n",
        ),
    ],
)
def test_personalised_urls_keep_their_whole_target(
    body: str, personalisation: dict[str, object], html: str, plain: str
) -> None:
    _check(body, personalisation, html, plain)


def test_body_stays_the_text_as_filled() -> None:
    assert render_email("s", "[Click](https://x.org/((path)))", {"path": "a b"}).body == "[Click](https://x.org/a b)"


@pytest.mark.parametrize(
    ("body", "html", "plain"),
    [
        ("Hello\u3164 there", f"{P}Hello there</p>", "Hello there\n"),  # Hangul filler
        ("\u3164", "", "\n"),
        ("a\uffa0b\u115fc\u1160d", f"{P}abcd</p>", "abcd\n"),  # its half-width and Jamo kin
        ("Line\u2028one", f"{P}Lineone</p>", "Lineone\n"),  # line separator
    ],
)
def test_invisible_filler_characters_are_stripped(body: str, html: str, plain: str) -> None:
    _check(body, {}, html, plain)


def test_filler_characters_in_personalisation_are_stripped() -> None:
    _check("Hi ((name))", {"name": "\u3164Jo\u3164"}, f"{P}Hi Jo</p>", "Hi Jo\n")


@pytest.mark.parametrize(
    ("body", "html", "plain"),
    [
        ("One\ntwo\nthree", f"{P}One<br>two<br>three</p>", "One\ntwo\nthree\n"),
        ("^ Inset text", f"{INSET}{P}Inset text</p>{END_INSET}", "Inset text\n"),
        (
            "^ First\n^ line two\n\n^ Second",
            f"{INSET}{P}First<br>line two</p>{P}Second</p>{END_INSET}",
            "First\nline two\n\nSecond\n",
        ),
        (
            "Before\n\n^ * a\n^ * b\n\nAfter",
            f"{P}Before</p>{INSET}{UL}{_items('a', 'b')}</ul>{END_TABLE}{END_INSET}{P}After</p>",
            "Before\n\n• a\n• b\n\nAfter\n",
        ),
        (
            "[Pay](https://example.com/pay?ref=1&amount=2)",
            f'{P}{A}https://example.com/pay?ref=1&amount=2">Pay</a></p>',
            "Pay: https://example.com/pay?ref=1&amount=2\n",
        ),
        (
            '[Wiki](https://en.wikipedia.org/wiki/Foo_(bar) "About Foo")',
            f'{P}{A}https://en.wikipedia.org/wiki/Foo_%28bar%29" title="About Foo">Wiki</a></p>',
            "Wiki (About Foo): https://en.wikipedia.org/wiki/Foo_(bar)\n",
        ),
        ("[Home](www.example.com)", f'{P}{A}http://www.example.com">Home</a></p>', "Home: www.example.com\n"),
        (
            "[Write](mailto:jo@example.com)",
            f'{P}{A}mailto:jo%40example.com">Write</a></p>',
            "Write: mailto:jo@example.com\n",
        ),
        (
            "See https://example.com/a%2Fb?x=1&y=2",
            f'{P}See {A}https://example.com/a%2Fb?x=1&y=2">https://example.com/a%2Fb?x=1&amp;y=2</a></p>',
            "See https://example.com/a%2Fb?x=1&y=2\n",
        ),
    ],
)
def test_markup_element_for_element(body: str, html: str, plain: str) -> None:
    _check(body, {}, html, plain)


@pytest.mark.parametrize(
    ("body", "personalisation", "html", "plain"),
    [
        # Padded values keep their inner spaces; the body's ends are trimmed.
        ("Dear ((name)),", {"name": "  Jo  "}, f"{P}Dear   Jo,</p>", "Dear   Jo,\n"),
        ("((name))", {"name": "  Jo  "}, f"{P}Jo</p>", "Jo\n"),
        # List items from personalisation are trimmed, blank ones dropped (one of only a filler too: Notify
        # would show an empty bullet).
        (
            "Bring:((items))",
            {"items": ["  passport ", "\u3164", "", " letter"]},
            f"{P}Bring:</p>{UL}{_items('passport', 'letter')}</ul>{END_TABLE}",
            "Bring:\n\n• passport\n• letter\n",
        ),
        # Indented list markers and trailing spaces on items.
        ("   * a   \n   * b", {}, f"{UL}{_items('a', 'b')}</ul>{END_TABLE}", "• a\n• b\n"),
    ],
)
def test_whitespace_around_lists_and_values(
    body: str, personalisation: dict[str, object], html: str, plain: str
) -> None:
    _check(body, personalisation, html, plain)


@pytest.mark.parametrize(
    ("template", "in_url"),
    [
        ("[Click](https://www.gov.uk/((path)))", (True,)),
        ("Go to https://x.org/((a))/((b)) ((c))", (True, True, False)),
        ("((a))https://x.org/((b))", (False, True)),
        ("[a](https://x.org/((p)))((q))", (True, False)),
        ("https://x.org/?q=(1)((y))", (True,)),
        ("Hi ((name))\n[x](http://y.org/((z)))", (False, True)),
        ("[a](b) ((c)) www.x.org/((d))", (False, False)),
    ],
)
def test_which_placeholders_stand_inside_a_url(template: str, in_url: tuple[bool, ...]) -> None:
    assert parse(template).in_url == in_url
