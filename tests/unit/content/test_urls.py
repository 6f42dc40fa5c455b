"""content.urls: URLs written in text, links, and their hosts."""

from __future__ import annotations

import pytest

from milterguard.content import urls as urls_mod
from milterguard.content.urls import MAX_URLS, message_urls, url_host, url_hosts


def test_url_host() -> None:
    assert url_host("https://u:p@Shop.Example.COM:8080/x") == "shop.example.com"
    assert url_host("www.example.org/a") == "www.example.org"
    assert url_host("http://xn--bcher-kva.example/") == "bücher.example"
    assert url_host("mailto:someone@example.com") is None




@pytest.mark.parametrize("text, urls", [
    ("Visit WWW.Example.com/x or HTTPS://Site.example/\u00c9 now",
     ["WWW.Example.com/x", "HTTPS://Site.example/\u00c9"]),
    ("Kelvin \u212a http://a.example \u00c9WWW.b.example caf\u00e9", ["http://a.example"]),
    ("\u03a3 ftp://f.example/\u03a3\u03a3 xwww.no.example www.yes.example", ["ftp://f.example/\u03a3\u03a3", "www.yes.example"]),
    # U+0130 lowers to two characters; text_urls keeps str.lower's positions there.
    ("\u0130\u0130 http://c.example/x", ["tp://c.example/x"]),
    ("bad \udc80 http://d.example", ["http://d.example"]),
])
def test_text_urls_on_non_ascii_text(text: str, urls: list[str]) -> None:
    assert urls_mod.text_urls(text) == urls


def test_searchable_lower_only_differs_from_lower_off_ascii() -> None:
    text = "Caf\u00c9 WWW.X HTTP:// \u03a3\u00c4"
    low = urls_mod._searchable_lower(text)
    assert len(low) == len(text.lower())
    for mine, real in zip(low, text.lower()):
        assert mine == real or (not mine.isascii() and mine.lower() == real)




def test_message_urls_keep_web_links_then_text_urls_once() -> None:
    links = ["https://a.example/x", "mailto:x@example.com", "javascript:void(0)",
             "//b.example/y", "www.c.example", "https://a.example/x"]
    texts = ["see http://d.example/ and https://a.example/x", "www.e.example."]
    assert message_urls(links, texts) == [
        "https://a.example/x", "//b.example/y", "www.c.example", "http://d.example/",
        "www.e.example"]


def test_message_urls_are_capped() -> None:
    text = " ".join(f"http://h{i}.example/" for i in range(MAX_URLS + 50))
    found = message_urls([], [text, "http://late.example/"])
    assert len(found) == MAX_URLS
    assert found[0] == "http://h0.example/" and "http://late.example/" not in found


def test_url_hosts_are_distinct_and_skip_hostless() -> None:
    assert url_hosts(["https://A.example/1", "http://a.example/2", "mailto:x@example.com",
                      "www.b.example/x"]) == ["a.example", "www.b.example"]
