"""The admin page's calls, call records and gateways in headless Chromium, fed by real SIPp calls: a call in
progress appears in the live table, a finished one in the records, the CSV download holds it, and the
gateway set shows its destination up."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.integration.admin_server import run_server
from tests.integration.sipp_kit import SippServer, run_sipp, scenario
from tests.integration.test_admin_browser import CHROMIUM_ARGS
from tests.integration.test_calls import USERS, wait_until

pytestmark = pytest.mark.timeout(180)


def test_the_page_shows_live_calls_records_and_gateways(tmp_path: Path, test_output_dir: Path) -> None:
    chromium = require_program("chromium")
    require_program("sipp")
    sync_api = pytest.importorskip("playwright.sync_api")
    gateway = SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, 0, name="gw", extra=["-aa"])
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateways.pstn]\nprobe_interval = 1\n[[gateways.pstn.destinations]]\n'
                      f'address = "127.0.0.1:{gateway.port}"\n[[gateway_routes]]\nprefix = "+1"\nset = "pstn"\n')
    with run_server(tmp_path, "--stateful", "--config", str(config), users=USERS) as server, gateway, \
            SippServer(scenario("uas-no-bye.xml", tmp_path), tmp_path, server.sip_port, name="callee") as callee, \
            sync_api.sync_playwright() as pw:
        reg = run_sipp(server.sip_port, scenario("proxy-register.xml", tmp_path), tmp_path,
                       ["-m", "1", "-s", "callee", "-key", "callee_port", str(callee.port)], name="register")
        assert reg.count("SuccessfulCall") == 1, reg
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.wait_for_selector("#live.on", timeout=10_000)
            page.wait_for_function("document.querySelector('#gateways').textContent.includes('up')", timeout=10_000)
            assert str(gateway.port) in page.locator("#gateways tbody").inner_text()
            # a call that stays up (its BYE never comes): live on the page
            live = run_sipp(server.sip_port, scenario("uac-no-bye.xml", tmp_path), tmp_path,
                            ["-m", "1", "-s", "callee", "-key", "caller", "alice"], name="live")
            assert live.count("SuccessfulCall") == 1, live
            page.wait_for_function("document.querySelector('#calls tbody').textContent.includes('answered')",
                                   timeout=10_000)
            row = page.locator("#calls tbody tr").inner_text()
            assert "alice@127.0.0.1" in row and "callee@127.0.0.1" in row and f"127.0.0.1:{callee.port}" in row
            # a call through the gateway set, finished: in the records
            done = run_sipp(server.sip_port, scenario("uac-gateway.xml", tmp_path), tmp_path,
                            ["-m", "1", "-s", "+15551234", "-key", "caller", "alice"], name="done")
            assert done.count("SuccessfulCall") == 1, done
            wait_until(lambda: any(r["end_reason"] == "bye" for r in server.get("/api/cdrs")["cdrs"]),
                       "the gateway call's record")
            page.wait_for_function("document.querySelector('#cdrs tbody').textContent.includes('+15551234')",
                                   timeout=15_000)
            assert "bye" in page.locator("#cdrs tbody tr").first.inner_text()
            # the call still up gets its row once it has lasted OPEN_DELAY (2 s; short calls cost one write)
            wait_until(lambda: server.get("/api/cdrs")["total"] == 2, "the row of the call still up")
            with page.expect_download() as info:
                page.click("#cdrs-csv")
            rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
            # newest first: the finished gateway call, and the call still up (its row is written when answered)
            assert [(r["caller"], r["callee"], r["end_reason"]) for r in rows] == [
                ("alice@127.0.0.1", "+15551234@127.0.0.1", "bye"), ("alice@127.0.0.1", "callee@127.0.0.1",
                                                                     "in progress")]
            page.screenshot(path=str(test_output_dir / "admin-calls.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
