"""Browser phones for integration tests: JsSIP pages in headless Chromium, driven from Python.

Reusable by any test that needs a WebRTC endpoint (browser to browser through the proxy, a browser calling a
SIPp UAS or a ``leansip phone``)::

    with Browser(trust=cert) as browser:
        alice = browser.phone("alice", f"wss://127.0.0.1:{port}", "sip:alice@leansip", "alicepw")
        alice.wait("registered")
        alice.call("sip:bob@leansip")
        alice.wait("confirmed")

What it needs, none of it fetched at test time: Debian's ``chromium`` (driven by the ``playwright`` Python
package through ``executable_path``: no browser download), and the JsSIP bundle ``tests/browser/dist/jssip.js``
that ``make browser-deps`` builds from the npm packages pinned in ``tests/browser/package.json`` (``.ci/run``
runs it). A missing piece skips the test with the command that installs it, or fails under
``LEANSIP_REQUIRE_EXTERNAL=1`` (CI).

The page (``tests/browser/phone.html`` + ``phone.js``) is opened from a ``file://`` URL, which Chromium treats as
a secure context (getUserMedia works); media comes from Chromium's fake devices, and only loopback ICE candidates
are offered (``--allow-loopback-in-peer-connection`` plus a filter in phone.js), so no packet leaves the machine.
For ``wss:`` the browser trusts exactly the test's certificate (its public key hash in
``--ignore-certificate-errors-spki-list``), as a real deployment needs a certificate the browser trusts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, external_required, require_program

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
JSSIP_BUNDLE = BROWSER_DIR / "dist" / "jssip.js"
PHONE_PAGE = BROWSER_DIR / "phone.html"

#: headless, sandbox off (root in a container), nothing that phones home, fake camera/microphone granted
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--allow-loopback-in-peer-connection"]


def require_jssip() -> Path:
    """The JsSIP bundle, or skip (fail in CI) saying how to build it."""
    if JSSIP_BUNDLE.is_file():
        return JSSIP_BUNDLE
    reason = f"{JSSIP_BUNDLE.relative_to(REPO_ROOT)} missing: run `make browser-deps` (npm install + esbuild)"
    if external_required():
        pytest.fail(f"{reason}; LEANSIP_REQUIRE_EXTERNAL=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


def spki_hash(cert_pem: Path) -> str:
    """base64 SHA-256 of a certificate's public key, the form ``--ignore-certificate-errors-spki-list`` takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class BrowserPhone:
    """One page running phone.js: a JsSIP user agent."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.errors: list[str] = []
        self.console: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: self.console.append(msg.text))

    def start(self, url: str, uri: str, password: str | None = None, *, register: bool = True,
              loopback_ice: bool = True, expires: int = 600, debug: bool = False) -> BrowserPhone:
        options = {"url": url, "uri": uri, "password": password, "register": register,
                   "loopbackIce": loopback_ice, "expires": expires, "debug": debug}
        self.page.evaluate("opts => window.phone.start(opts)", options)
        return self

    def events(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate("window.phone.events()"))

    def wait(self, ev: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first event named ``ev`` whose fields equal ``match``; waits for it in the page (no polling)."""
        predicate = "([ev, match]) => window.phoneEvents.find(e => e.ev === ev && " \
                    "Object.entries(match).every(([k, v]) => e[k] === v))"
        try:
            handle = self.page.wait_for_function(predicate, arg=[ev, match], timeout=timeout * 1000)
        except Exception as exc:  # playwright's TimeoutError: say what the page saw instead
            raise AssertionError(f"{self.name}: no {ev} {match} within {timeout} s; events: "
                                 f"{json.dumps(self.events())}; errors: {self.errors}") from exc
        return dict(handle.json_value())

    def call(self, target: str) -> None:
        self.page.evaluate("t => window.phone.call(t)", target)

    def answer(self) -> None:
        self.page.evaluate("window.phone.answer()")

    def hangup(self) -> None:
        self.page.evaluate("window.phone.hangup()")

    def stop(self) -> None:
        """Unregister and disconnect, as a phone closing properly does."""
        self.page.evaluate("window.phone.stop()")

    def close(self) -> None:
        """Close the page as a user closing the tab: no unregistration, the WebSocket just goes."""
        self.page.close()


class Browser:
    """Headless Chromium with fake media devices; ``trust`` is a certificate (PEM) to accept for wss:."""

    def __init__(self, *, trust: Path | None = None, args: list[str] | None = None) -> None:
        self.trust = trust
        self.extra_args = list(args or [])
        self._pw: Any = None
        self._browser: Any = None
        self._context: Any = None
        self.phones: list[BrowserPhone] = []

    def __enter__(self) -> Browser:
        chromium = require_program("chromium")
        require_jssip()
        sync_api = pytest.importorskip("playwright.sync_api")
        args = CHROMIUM_ARGS + self.extra_args
        if self.trust is not None:
            args.append(f"--ignore-certificate-errors-spki-list={spki_hash(self.trust)}")
        self._pw = sync_api.sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=chromium, args=args)
            self._context = self._browser.new_context()
        except BaseException:
            self._pw.stop()
            raise
        return self

    def phone(self, name: str) -> BrowserPhone:
        """A new page with phone.js loaded (call :meth:`BrowserPhone.start` to register)."""
        page = self._context.new_page()
        phone = BrowserPhone(page, name)
        page.goto(PHONE_PAGE.as_uri())
        page.wait_for_function("window.phone !== undefined && window.JsSIP !== undefined", timeout=10_000)
        self.phones.append(phone)
        return phone

    def screenshot(self, phone: BrowserPhone, path: Path) -> None:
        if not phone.page.is_closed():
            phone.page.screenshot(path=str(path))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            self._pw.stop()


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` (e.g. a server's HTTP API) until it returns something true; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
