"""Fixtures of the console's browser tests: one server, OpenID Provider and Chromium per
module (a new browser costs about a second, a new context 50 ms); a fresh browser context
(its own cookie jar: a person of their own) per sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.console.harness import Stack, chromium, running_stack

VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The console on embedded SQLite, for the whole module."""
    yield from running_stack(request, tmp_path_factory, "sqlite")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Any]:
    """``new_context(**options)``: a fresh browser context (closed after the test)."""
    opened: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(**{"viewport": VIEWPORT, **options})
        opened.append(context)
        return context

    yield make
    for context in opened:
        context.close()
