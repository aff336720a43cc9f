"""The email renderer's shortcuts give what the straightforward way gives, for any input.

Each shortcut (a pattern rewritten so the regex engine can skip ahead, a substring test before a pattern,
a block rendered once per template) is checked against the plain form of the same rule."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.domain.templates import _markdown

# Pieces that hit every rule: block markers, links, URLs, quotes, dashes, GOV.UK in its spellings (U+212A
# is the Kelvin sign, which re.IGNORECASE takes for "K"), entities, escapes and unusual whitespace.
_PIECES = st.sampled_from(
    [
        *("#", "## ", "* ", "- ", "• ", "1. ", "^ ", "---", "===", "\n", "\n\n", " ", "  ", "\t", "\r\n"),
        *("[a](https://x.org/a_(b))", "![i](x.png)", "[", "]", "(", ")", "<", ">", "<https://a.b/c>", "://"),
        *("https://", "http://www.gov.uk/x.", "HTTPS://X.ORG", "httpſ://x", "\\", "\\*", "\\[", "!", "@"),
        *("GOV.UK", "gov.uk", "Gov.Uk", "GOV.U\u212a", "GOV.UK/", "GOV.UK?", "GOV.UK#", "#", "*", "^", "x"),
        *('"', "'", "‘", "’", "“", "-", "–", "—", "--", " - ", ",", ".", " ,", " .", "{", "o'neil@example.com"),
        *("&", "&amp;", "&copy;", "&#40;", "a", "Z", "1", "é", "😀", "\u00a0", "\u2028", "\u3164", "\u3000", "\x85"),
    ]
)
markdownish = st.lists(_PIECES | st.text(max_size=3), max_size=30).map("".join)

# The patterns as Notify writes them, which the module's own are rewritten from.
NOTIFY_GOVUK = re.compile(r"(^|\s)(#|\*|\^)?(GOV)\.(UK)(?!/|\?|#)", re.IGNORECASE)
PLAIN_OPENING_DOUBLE = re.compile(r'(?:^|(?<=[\s(\[{\-–—]))"')
PLAIN_OPENING_SINGLE = re.compile(r"(?:^|(?<=[\s(\[{\-–—\"“]))'(?=\w)")


@settings(max_examples=500, deadline=None)
@given(text=markdownish)
def test_inline_scan_finds_what_finditer_finds(text: str) -> None:
    found = [(match.span(), match.groupdict()) for match in _markdown._inline_matches(text)]
    assert found == [(match.span(), match.groupdict()) for match in _markdown._INLINE.finditer(text)]


@settings(max_examples=500, deadline=None)
@given(text=markdownish | markdownish.map(lambda text: text.encode("ascii", "ignore").decode()))
def test_govuk_is_unlinked_where_notifys_pattern_matches(text: str) -> None:
    assert _markdown.unlink_govuk(text) == NOTIFY_GOVUK.sub("\\1\\2\\3.\u200b\\4", text)


@settings(max_examples=500, deadline=None)
@given(text=markdownish)
def test_opening_quotes_are_found_where_the_plain_patterns_find_them(text: str) -> None:
    assert _markdown._OPENING_DOUBLE.sub("“", text) == PLAIN_OPENING_DOUBLE.sub("“", text)
    assert _markdown._OPENING_SINGLE.sub("‘", text) == PLAIN_OPENING_SINGLE.sub("‘", text)


@settings(max_examples=500, deadline=None)
@given(text=markdownish)
def test_nice_typography_skips_only_patterns_that_would_change_nothing(text: str) -> None:
    expected = _markdown._WHITESPACE_BEFORE_PUNCTUATION.sub("", text)
    expected = _markdown._OPENING_DOUBLE.sub("“", expected).replace('"', "”")
    if "'" in expected:  # only quotes made curly here are straightened again in email addresses
        expected = _markdown._OPENING_SINGLE.sub("‘", expected).replace("'", "’")
        expected = re.sub(
            r"\S+", lambda word: _markdown._straighten_quotes(word) if "@" in word[0] else word[0], expected
        )
    expected = _markdown._SPACED_HYPHEN.sub(" – ", expected)
    assert _markdown.nice_typography(text) == expected


@settings(max_examples=300, deadline=None)
@given(blocks=st.lists(markdownish, min_size=1, max_size=6), changed=st.data())
def test_rendering_with_the_template_gives_what_rendering_alone_gives(
    blocks: list[str], changed: st.DataObject
) -> None:
    template = "\n\n".join(blocks)
    index = changed.draw(st.integers(0, len(blocks) - 1))
    filled = "\n\n".join([*blocks[:index], changed.draw(markdownish), *blocks[index + 1 :]])
    assert _markdown.render(template, template) == _markdown.render(template)
    assert _markdown.render(filled, template) == _markdown.render(filled)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GOV.UK", "GOV.\u200bUK"),
        ("see gov.uk.", "see gov.\u200buk."),
        ("^GOV.UK and #Gov.Uk", "^GOV.\u200bUK and #Gov.\u200bUk"),
        ("\n*GOV.U\u212a", "\n*GOV.\u200bU\u212a"),
        ("xGOV.UK x#GOV.UK GOV.UK/x GOV.UK?x GOV.UK#x", "xGOV.UK x#GOV.UK GOV.UK/x GOV.UK?x GOV.UK#x"),
        ("www.gov.uk", "www.gov.uk"),
    ],
)
def test_govuk_examples(text: str, expected: str) -> None:
    assert _markdown.unlink_govuk(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\t- b", "a – b"),
        ("a\u00a0— b", "a – b"),
        ("a\n- b", "a\n- b"),
        ("AB12-XY and 1 -2", "AB12-XY and 1 -2"),
        ("'(\"x\")' [it's] ['y']", "’(“x”)’ [it’s] [‘y’]"),
        ("mail 'o'neil@example.com' now", "mail 'o'neil@example.com' now"),
        ("a , b\t.", "a, b."),
    ],
)
def test_typography_examples(text: str, expected: str) -> None:
    assert _markdown.nice_typography(text) == expected
