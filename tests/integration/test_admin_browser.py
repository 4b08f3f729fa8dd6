"""The admin page in headless Chromium: live bindings without reload, removing a user, a screenshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_udp_port, require_program
from tests.integration.admin_server import run_server, sipp_register

pytestmark = pytest.mark.timeout(180)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_admin_page_live(tmp_path: Path, test_output_dir: Path) -> None:
    chromium = require_program("chromium")
    sipp = require_program("sipp")
    sync_api = pytest.importorskip("playwright.sync_api")
    local = free_udp_port()
    with run_server(tmp_path) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.wait_for_selector("#live.on", timeout=10_000)
            assert page.locator("#users li").count() == 3
            assert page.locator("#bindings tbody tr").count() == 0
            assert "proxy" in page.locator("#mode").inner_text()
            # the page must not reload: mark the window and check the mark survives the updates
            page.evaluate("window.__same_page = true")

            sipp_register(sipp, server, tmp_path, ["user0", "user2"], expires=900, local_port=local)
            page.wait_for_function("document.querySelectorAll('#bindings tbody tr').length === 2", timeout=10_000)
            rows = page.locator("#bindings tbody tr").all_inner_texts()
            assert any("user0" in r and f"127.0.0.1:{local}" in r and "sipp-bench" in r for r in rows), rows
            assert page.locator("#bindings-count").inner_text() == "2"
            page.wait_for_function(
                "[...document.querySelectorAll('#requests tr')].some(tr => tr.textContent.includes('REGISTER'))",
                timeout=5_000)
            assert page.evaluate("window.__same_page") is True

            # add a user through the form, then remove one with its button (accepting the confirm dialog)
            page.fill("#add-user input[name=username]", "dave")
            page.fill("#add-user input[name=password]", "pw123")
            page.click("#add-user button[type=submit]")
            page.wait_for_selector("#users button[data-user=dave]", timeout=5_000)
            assert "dave:pw123" in server.users_file.read_text()
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#users button[data-user=user1]")
            page.wait_for_function("!document.querySelector('#users button[data-user=user1]')", timeout=5_000)
            assert "user1" not in server.users_file.read_text()
            assert "Removed user1" in page.locator("#users-message").inner_text()
            page.wait_for_function("document.querySelector('#timings').textContent.includes('REGISTER')",
                                   timeout=5_000)
            page.screenshot(path=str(test_output_dir / "admin-desktop.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.goto(server.url + "/")
            phone.wait_for_selector("#live.on", timeout=10_000)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"page wider than a phone screen: {width}px"
            phone.screenshot(path=str(test_output_dir / "admin-phone.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
