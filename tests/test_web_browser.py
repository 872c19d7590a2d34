"""The web console in a real browser: Debian's headless Chromium driven by Selenium (chromium-driver)
against a real `mleg serve` (mailbox on the real Dovecot, answers through the real SMTP relay).

One browser session for the whole journey, to keep the suite's time modest. It also takes the
screenshots the README shows (into docs/ under `make screenshots`).
"""

from __future__ import annotations

import email
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.credentials import service as credentials
from core.storage.db import make_engine, unit_of_work
from core.storage.models import Credential, GuessAttempt, OutboxMessage, SupportThread
from core.support import answers, staff
from core.support import threads as support
from tests.cli_helpers import PROJECT_ROOT, cli_environment
from tests.factories import add_student, build_ctx, make_settings
from tests.servers.dovecot import DovecotServer, free_port
from tests.servers.smtp_relay import SmtpRelay

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery staple"
# The README's pictures are refreshed only when asked (`make screenshots`); a test run leaves the
# tree as it was and keeps its pictures in the test's own folder (tmp_path/screenshots).
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
DOCS = PROJECT_ROOT / "docs"
WAIT = 30  # seconds a step may take on a loaded machine; a bound, not an assertion of speed


def _browser_or_skip() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        reason = "chromium/chromedriver not installed (scripts/install-test-deps.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium, driver = _browser_or_skip()
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,900",
                     "--lang=pl-PL", "--disable-gpu"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "pl-PL,pl"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield chrome
    finally:
        chrome.quit()


class Serve:
    """`mleg serve` in a child process, as an installation runs it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=env,
                                         cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, url: str) -> None:
        # Starting is slower than a step: the FAQ's understanding is trained, the console's process
        # starts a fresh interpreter.
        deadline = time.monotonic() + 4 * WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mleg serve exited:\n" + self.log.read_text())
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the web console did not come up:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _seed(tmp_path: Path, sqlite_url: str, student_address: str) -> tuple[AppContext, dict[str, str], int]:
    from core.app.clock import SystemClock

    ctx = build_ctx(make_settings(tmp_path, database_url=sqlite_url), make_engine(sqlite_url), SystemClock())  # type: ignore[arg-type]
    with unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box, email=student_address, first_name="Zofia", last_name="Przykładowa")
        credential = credentials.request_credential(ctx, session, student, channel="test", actor="test")
        credential_id = credential.id or 0
        _earlier_threads(ctx, session)
        secrets = {}
        for login, role in (("ola", staff.Role.AGENT), ("kasia", staff.Role.ADMIN)):
            staff.add_account(ctx, session, login, PASSWORD, role=role, actor="test")
            secrets[login] = staff.enrol_totp(ctx, session, login, actor="test").secret
    return ctx, secrets, credential_id


def _submit(browser: WebDriver, by: str, value: str) -> None:
    """Click a form's button and wait until the page it loads has replaced this one."""
    button = browser.find_element(by, value)
    button.click()
    WebDriverWait(browser, WAIT).until(_replaced(button))


def _replaced(element: Any) -> Any:
    """`staleness_of`, also when ChromeDriver says so in its own words: asked about a node of the
    page just replaced, it may answer "Node with given id does not belong to the document"."""
    def check(_driver: WebDriver) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one too
            return True
        return False
    return check


def _earlier_threads(ctx: AppContext, session: Session) -> None:
    """Threads from before, so the inbox and dashboard look like a working day (and one is overdue)."""
    now = ctx.clock.now()
    for hours, first, channel, subject, claimed, answer in (
            (30, "Jan", "telegram", "Kod aktywacyjny wygasł", "kasia", "Złóż wniosek ponownie w czacie."),
            (9, "Marek", "telegram", "Nie widzę legitymacji w aplikacji", None, None),
            (3, "Ewa", "email", "Zmiana telefonu", "kasia", None)):
        earlier = build_ctx(ctx.settings, ctx.engine, FixedClock(now - timedelta(hours=hours)))
        student, _ = add_student(session, ctx.box, first_name=first, last_name="Testowa")
        thread = support.open_thread(earlier, session, student_id=student.id, channel=channel,
                                     account_id=str(student.id) if channel == "telegram" else student.email,
                                     text=subject + ". Co mam zrobić?", language="pl", subject=subject)
        if claimed:
            support.claim_thread(earlier, session, thread.id or 0, staff=claimed)
        if answer:  # 40 minutes after the question came in
            later = build_ctx(ctx.settings, ctx.engine, FixedClock(now - timedelta(hours=hours, minutes=-40)))
            answers.staff_reply(later, session, thread.id or 0, text=answer, staff=claimed or "")
        credentials.request_credential(earlier, session, student, channel=channel, actor="test")


def _sign_in(browser: WebDriver, base: str, login: str, code: str) -> None:
    browser.get(base + "/sign-in")
    browser.find_element(By.ID, "login").send_keys(login)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "code").send_keys(code)
    _submit(browser, By.ID, "sign-in")


def _wrong_code(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    now = datetime.now(UTC)
    near = {totp.at(now.timestamp() + 30 * step) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in near)


def _student_mail(dovecot: DovecotServer, address: str, text: str) -> email.message.Message:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for raw in dovecot.fetch_all(address):
            message = email.message_from_bytes(raw)
            body = b"".join(part.get_payload(decode=True) or b"" for part in message.walk()
                            if part.get_content_type() == "text/plain")
            if text.encode() in body:
                return message
        time.sleep(0.3)
    raise AssertionError(f"no mail with {text!r} reached {address}")


def _activation_code(message: email.message.Message) -> str:
    text = b"".join(part.get_payload(decode=True) or b"" for part in message.walk()
                    if part.get_content_type() == "text/plain").decode()
    found = re.search(r"Kod aktywacyjny: (\S+)", text)
    assert found, text
    return found.group(1)


def test_the_help_desk_journey_in_a_browser(
    tmp_path: Path, sqlite_url: str, dovecot: DovecotServer, smtp_server: SmtpRelay, browser: WebDriver,
) -> None:
    support_box = dovecot.new_user(prefix="support")
    student_address = dovecot.new_user()
    ctx, secrets, credential_id = _seed(tmp_path, sqlite_url, student_address)
    pictures = DOCS if UPDATE_SCREENSHOTS else tmp_path / "screenshots"
    pictures.mkdir(exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cli_environment(
        tmp_path, sqlite_url,
        MLEG_IMAP__HOST=dovecot.host, MLEG_IMAP__PORT=str(dovecot.imap_port), MLEG_IMAP__SECURITY="none",
        MLEG_IMAP__USERNAME=support_box, MLEG_IMAP__PASSWORD=dovecot.password,
        MLEG_SMTP__HOST=smtp_server.host, MLEG_SMTP__PORT=str(smtp_server.port), MLEG_SMTP__SECURITY="none",
        MLEG_SMTP__SENDER=support_box, MLEG_UNIVERSITY__HELP_DESK_EMAIL=support_box,
        MLEG_WEB__PORT=str(port), MLEG_WEB__SECURE_COOKIES="false", MLEG_WEB__INBOX_REFRESH_SECONDS="1",
    )
    serve = Serve(env, tmp_path / "serve.log")
    try:
        serve.wait_ready(base)
        wait = WebDriverWait(browser, WAIT)

        # A wrong second factor is refused and counted; the right one signs the agent in.
        _sign_in(browser, base, "ola", _wrong_code(secrets["ola"]))
        assert "Zły kod z aplikacji" in browser.find_element(By.ID, "refused").text
        with Session(ctx.engine) as session:
            assert len(session.exec(select(GuessAttempt).where(GuessAttempt.kind == "web_sign_in")).all()) == 2
        _sign_in(browser, base, "ola", pyotp.TOTP(secrets["ola"]).now())
        wait.until(ec.url_to_be(base + "/inbox"))
        browser.execute_script("window.notReloaded = true;")

        # The student writes to the support mailbox; the inbox shows it without a reload.
        question = EmailMessage()
        question["From"], question["To"] = student_address, support_box
        question["Subject"], question["Message-ID"] = "Odbiór osobisty", make_msgid(domain="example.test")
        question.set_content("Dzień dobry, czy mogę przyjść osobiście do dziekanatu w czwartek?")
        dovecot.deliver(support_box, question.as_bytes())
        # Read in one script call: htmx may swap the rows between two WebDriver calls.
        read_rows = ("const rows = document.getElementById('inbox-rows'); const row = Array.from(rows.querySelectorAll("
                     "'tr[data-thread]')).find(r => r.innerText.includes('Odbiór osobisty'));"
                     "return [rows.innerText, row ? row.dataset.thread : null];")
        wait.until(lambda b: "Odbiór osobisty" in b.execute_script(read_rows)[0])
        assert browser.execute_script("return window.notReloaded === true;")
        row_text, thread_number = browser.execute_script(read_rows)
        assert "Zofia Przykładowa" in row_text
        thread_id = int(thread_number)
        browser.save_screenshot(str(pictures / "web-inbox.png"))

        # The agent claims, answers (the student gets it threaded on their mail) and closes.
        thread_url = f"{base}/threads/{thread_id}"
        browser.get(thread_url)
        _submit(browser, By.ID, "claim")
        assert browser.find_element(By.ID, "claimed-by").text == "ola"
        browser.find_element(By.ID, "reply-text").send_keys("Tak, zapraszamy w czwartek, pokój 12.")
        _submit(browser, By.ID, "send")
        assert "odpowiedziane" in browser.find_element(By.ID, "status").text
        answer = _student_mail(dovecot, student_address, "pokój 12")
        assert answer["In-Reply-To"] == question["Message-ID"]
        assert f"[MLEG-{thread_id}]" in answer["Subject"]
        browser.get(thread_url)
        browser.save_screenshot(str(pictures / "web-thread.png"))
        _submit(browser, By.ID, "close")
        assert "zamknięte" in browser.find_element(By.ID, "status").text
        with Session(ctx.engine) as session:
            thread = session.get(SupportThread, thread_id)
            assert thread is not None and thread.status == "closed" and thread.claimed_by == "ola"

        # An agent cannot open the credential pages.
        browser.get(base + "/credentials")
        assert "tylko dla administratorów" in browser.page_source
        # A forged POST carrying the agent's cookie but no CSRF token is refused.
        cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
        forged = httpx.post(f"{base}/threads/{thread_id}/claim", cookies=cookies, data={})
        assert forged.status_code == 403
        # Nor resend activation data, even with the session's own CSRF token.
        csrf = browser.find_element(By.CSS_SELECTOR, "input[name='csrf']").get_attribute("value")
        refused = httpx.post(f"{base}/credentials/{credential_id}/resend", cookies=cookies, data={"csrf": csrf})
        assert refused.status_code == 403
        _submit(browser, By.CSS_SELECTOR, "form[action='/sign-out'] button")

        # An admin revokes the credential with a reason; the student is told at the register address.
        _sign_in(browser, base, "kasia", pyotp.TOTP(secrets["kasia"]).now())
        wait.until(ec.url_to_be(base + "/inbox"))
        browser.get(base + "/credentials")
        browser.find_element(By.ID, "find").send_keys("Przykładowa")
        _submit(browser, By.CSS_SELECTOR, "form.filters button")
        _submit(browser, By.PARTIAL_LINK_TEXT, "Zofia")

        # The admin resends the activation data: new data reaches the register address over the real
        # SMTP server, with a note that it replaces the earlier data, whose code no longer works.
        old_code = _activation_code(_student_mail(dovecot, student_address, "Kod aktywacyjny:"))
        _submit(browser, By.ID, "resend")
        assert "wcześniejszy kod już nie działa" in browser.find_element(By.ID, "notice").text
        resent = _student_mail(dovecot, student_address, "zastępuje wysłane wcześniej")
        new_code = _activation_code(resent)
        assert new_code != old_code and student_address in resent["To"]
        with Session(ctx.engine) as session:
            credential = session.get(Credential, credential_id)
        assert credential is not None and credential.state == "pending_activation"
        assert credential.code_hash == ctx.box.keyed_hash("activation-code", new_code.replace("-", ""))

        Select(browser.find_element(By.ID, "reason")).select_by_value("lost_phone")
        _submit(browser, By.ID, "revoke")
        assert "unieważniona" in browser.find_element(By.ID, "notice").text
        deadline = time.monotonic() + WAIT
        while True:
            with Session(ctx.engine) as session:
                told = session.exec(select(OutboxMessage).where(OutboxMessage.credential_id == credential_id,
                                                                OutboxMessage.kind == "revoked")).first()
            if told is not None and told.status == "sent":
                break
            assert time.monotonic() < deadline, "the revocation notice was not sent"
            time.sleep(0.3)
        assert told.recipient == student_address
        assert any(student_address in m.rcpt_tos for m in smtp_server.messages)

        browser.get(base + "/dashboard")
        browser.set_window_size(1360, 1250)  # the whole dashboard in one picture
        browser.save_screenshot(str(pictures / "web-dashboard.png"))
    finally:
        serve.stop()
