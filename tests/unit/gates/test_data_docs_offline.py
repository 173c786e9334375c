"""A failed gate's Data Docs render styled, their failed expectation visible, with no network at all.

GE's pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and vega from CDNs; keiko copies packaged
files into the site instead (keiko.gates.data_docs). The browser test opens the site as on-call would, in
headless Chromium driven over the DevTools protocol, with every request to anything but a file or loopback
failed, and checks what is drawn: without the copies the page is unstyled and its tables are never drawn.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest

from conftest import DS
from keiko.gates import data_docs

SUITE = "impressions.ranges"
# GE shows an expectation in words, never by its type name (expect_column_values_to_be_between here).
EXPECTED = "values must be greater than or equal to 1.0 and less than or equal to 4.0."
LOCAL_SCHEMES = ("file", "data", "about", "blob")
LOOPBACK = ("localhost", "127.0.0.1", "::1")
TAGS = re.compile(r"<(?:script|link|img)\b([^>]*)>", re.IGNORECASE)
SOURCE = re.compile(r'\b(?:src|href)="([^"]*)"')
# GE's page templates, found without importing GE (seconds) in this fast test's process.
TEMPLATES = Path(find_spec("great_expectations").submodule_search_locations[0], "render", "view", "templates")


def loaded_urls(html: str) -> list[str]:
    """What the page's scripts, stylesheets and images load (links to other pages are not loads)."""
    return [url for attributes in TAGS.findall(html) for url in SOURCE.findall(attributes)]


def test_every_cdn_file_of_great_expectations_templates_has_a_packaged_copy():
    """A GE upgrade that changes a CDN URL fails here, before any page loads it from the internet."""
    remote = {
        url
        for template in TEMPLATES.glob("*.j2")
        for url in loaded_urls(template.read_text())
        if url.startswith(("http://", "https://"))
    }
    assert remote and not remote - set(data_docs.REMOTE), sorted(remote - set(data_docs.REMOTE))
    for name, (package, path) in data_docs.FILES.items():
        assert data_docs._source(package, path), f"{name}: {package} does not have {path} (make install)"


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("headless Chromium is needed to check Data Docs: apt-get install chromium (make test does)")
    return binary


class DevTools:
    """Headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no extra
    package). Every request the page makes is paused (Fetch domain): a file or loopback one continues, any
    other is recorded and failed, so nothing leaves this machine."""

    def __init__(self, profile: Path) -> None:
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: hand it ours above them.
        commands, replies = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands, replies))
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
            "--disable-background-networking", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",  # and no name resolves, should one get out
        ]  # fmt: skip
        redirect = f'exec "$0" "$@" 3<&{commands} 4>&{replies} {commands}<&- {replies}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", redirect, chromium(), *flags, "about:blank"],
            pass_fds=(commands, replies),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands)
        os.close(replies)
        self._buffer, self._id, self.events = b"", 0, []
        self.requested: list[str] = []  # every URL the page asked for
        try:
            self._attach()
        except BaseException:
            self.__exit__()
            raise

    def _attach(self) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable", session=self.session)
        self.send("Fetch.enable", session=self.session, patterns=[{"urlPattern": "*"}])
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session=self.session,
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc: object) -> None:
        try:  # Chromium ends its renderer and GPU processes itself when closed
            self.post("Browser.close")
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(10)
        os.close(self._commands)
        os.close(self._replies)

    def post(self, method: str, session: str | None = None, **params: Any) -> int:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        return self._id

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        sent = self.post(method, session, **params)
        while (message := self._next()).get("id") != sent:
            pass
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message.get("result", {})

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self._next(deadline - time.monotonic()).get("method") != event:
            pass

    def _next(self, timeout: float = 60) -> dict[str, Any]:
        """The next message from Chromium; requests are let through or failed as they come."""
        while b"\0" not in self._buffer:
            if not select.select([self._replies], [], [], max(timeout, 0))[0]:
                raise TimeoutError("Chromium did not answer in time")
            if not (chunk := os.read(self._replies, 1 << 20)):
                raise EOFError("Chromium exited")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        self.events.append(message)
        if message.get("method") == "Fetch.requestPaused":
            request = message["params"]["requestId"]
            url = message["params"]["request"]["url"]
            self.requested.append(url)
            if local(url):
                self.post("Fetch.continueRequest", self.session, requestId=request)
            else:
                self.post("Fetch.failRequest", self.session, requestId=request, errorReason="BlockedByClient")
        elif message.get("method") == "Network.requestWillBeSent":
            self.requested.append(message["params"]["request"]["url"])
        return message

    def open(self, page: Path, scheme: str) -> dict[str, Any]:
        """Load `page` in the colour scheme given; what is drawn (DRAWN), once its fonts are in."""
        self.events.clear()
        self.requested.clear()
        dark_or_light = [{"name": "prefers-color-scheme", "value": scheme}]
        self.send("Emulation.setEmulatedMedia", session=self.session, features=dark_or_light)
        self.send("Page.navigate", session=self.session, url=page.as_uri())
        self.wait_for("Page.loadEventFired")
        drawn = self.send(
            "Runtime.evaluate", session=self.session, expression=DRAWN, awaitPromise=True, returnByValue=True
        )
        events = {name: [e["params"] for e in self.events if e.get("method") == name] for name in EVENTS}
        urls = {e["requestId"]: e["request"]["url"] for e in events["Network.requestWillBeSent"]}
        return json.loads(drawn["result"]["value"]) | {
            "requested": sorted(set(self.requested)),
            "errors": [
                e["exceptionDetails"].get("exception", {}).get("description", e["exceptionDetails"]["text"])
                for e in events["Runtime.exceptionThrown"]
            ],
            "failed": [f"{urls.get(e['requestId'])}: {e['errorText']}" for e in events["Network.loadingFailed"]],
        }


EVENTS = ("Runtime.exceptionThrown", "Network.requestWillBeSent", "Network.loadingFailed")
# What the page shows a reader: Bootstrap's layout, the tables bootstrap-table drew and their visible rows,
# the section headings on screen, and whether Font Awesome's font loaded.
DRAWN = """document.fonts.ready.then(() => {
  const shown = element => element.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})
    && element.getBoundingClientRect().width > 0 && element.getBoundingClientRect().height > 0;
  const style = selector => getComputedStyle(document.querySelector(selector));
  return JSON.stringify({
    navbar: style("nav.navbar").display,
    padding: style(".container-fluid").paddingLeft,
    tables: document.querySelectorAll(".bootstrap-table").length,
    rows: [...document.querySelectorAll(".bootstrap-table tbody tr")].filter(shown).map(row => row.innerText),
    headings: [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")].filter(shown).map(h => h.innerText.trim()),
    icons: [...document.fonts].some(font => font.family.includes("Font Awesome") && font.status === "loaded"),
  });
})"""


def local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname in LOOPBACK


@pytest.fixture
def failed_site(keiko_home: Path) -> Path:
    """A Data Docs site as keiko's runner writes it for a failed gate: one column, out of range."""
    import great_expectations as gx

    from keiko.gates.runner import Validation, run_validations
    from keiko.stages.context import StageContext

    ctx = StageContext.create("ctr", dt.date.fromisoformat(DS))
    frame = pd.DataFrame({"position": [1, 2, 3, 9, 12]})
    expectation = gx.expectations.ExpectColumnValuesToBeBetween(column="position", min_value=1, max_value=4)
    outcomes = run_validations(ctx, "raw", [Validation(SUITE, frame, [expectation])], extra={})
    assert [(o.column, o.passed) for o in outcomes] == [("position", False)]
    return Path(unquote(urlsplit(ctx.layout.data_docs("gate_raw")).path))


@pytest.mark.browser
def test_a_failed_gates_data_docs_render_styled_with_the_network_off(failed_site, tmp_path):
    pages = sorted(failed_site.rglob("*.html"))
    remote = {
        f"{page.relative_to(failed_site)}: {url}"
        for page in pages
        for url in loaded_urls(page.read_text())
        if url.startswith(("http://", "https://", "//"))
    }
    assert not remote, "still loaded from the internet:\n" + "\n".join(sorted(remote))
    for page in pages:  # relative links into the site: served by the run-page route or opened as a file
        for url in loaded_urls(page.read_text()):
            target = (page.parent / url).resolve()
            assert target.is_relative_to(failed_site) and target.is_file(), f"{page.name}: {url}"

    index = failed_site / "index.html"
    (validation,) = (failed_site / "validations").rglob("*.html")
    with DevTools(tmp_path / "profile") as browser:
        for scheme in ("light", "dark"):  # GE's dark overrides would fetch a logo from the internet
            for page in (index, validation):
                drawn = browser.open(page, scheme)
                where = f"{page.relative_to(failed_site)} ({scheme})"
                outside = [url for url in drawn["requested"] if not local(url)]
                assert not outside, f"{where} asked the network for:\n" + "\n".join(outside)
                assert not drawn["errors"] and not drawn["failed"], (where, drawn["errors"], drawn["failed"])
                # Bootstrap's styles: .navbar is a flex box, .pl-5 a 3rem padding; the browser's would be
                # block and 0.
                assert (drawn["navbar"], drawn["padding"]) == ("flex", "48px"), where
                assert drawn["tables"] and drawn["icons"], where  # bootstrap-table drew; Font Awesome loaded
                if page == index:  # the run's validation, a row of the table bootstrap-table draws
                    assert any(f"ctr.raw.{SUITE}" in row and "ctr-2026-11-21" in row for row in drawn["rows"]), drawn
                else:  # the column's heading and the failed expectation's row, on screen
                    assert "position" in drawn["headings"], drawn
                    assert any(EXPECTED in row and "40% unexpected" in row for row in drawn["rows"]), drawn
