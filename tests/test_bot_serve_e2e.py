"""End to end: `mleg serve` as a subprocess against the Bot API stand-in, killed -9 mid-journey.

A student goes from /start to a queued activation e-mail, the process is killed in the
middle (and a message arrives while it is down), and a staff answer given in the staff
chat reaches the student. The test reads the same SQLite database the process writes.
"""

from __future__ import annotations

import os
import signal
from datetime import date
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.storage.db import make_engine
from core.storage.models import Credential, SupportThread
from core.students.demo_register import make_pesel
from tests.bot_harness import STAFF_CHAT, TgStudent, outbox_rows, wait_until
from tests.factories import TEST_SECRET, make_settings
from tests.servers.botapi import BotApiStandIn
from tests.servers.ports import free_port
from tests.support.serve import ServeProcess

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]
STUDENT_CHAT, STAFF_MEMBER = 31337, 4711
HEADER = "album,pesel,first_name,last_name,email,study_level,status,els_number,els_valid_until,removed_on"


async def test_serve_journey_restart_and_staff_answer(api: BotApiStandIn, tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    pesel = make_pesel(date(2003, 5, 17), serial=421, female=False)
    register = tmp_path / "register.csv"
    register.write_text(f"{HEADER}\n300001,{pesel},Jan,Kowalski_<&>,jan.kowalski@student.example.edu.pl,"
                        "first_cycle,active,,,\n", encoding="utf-8")
    api.add_chat(STAFF_CHAT, chat_type="supergroup", title="Biuro")
    env = {**os.environ, "MLEG_MODE": "production", "MLEG_SECRET_KEY": TEST_SECRET,
           "MLEG_DATABASE_URL": f"sqlite:///{db}", "MLEG_VAR_DIR": str(tmp_path / "var"),
           "MLEG_TELEGRAM__TOKEN": api.token, "MLEG_TELEGRAM__API_BASE_URL": api.base_url,
           "MLEG_TELEGRAM__STAFF_CHAT_ID": str(STAFF_CHAT),
           "MLEG_TELEGRAM__MESSAGES_PER_CHAT_PER_SECOND": "100",
           # Mail goes nowhere: e-mails stay queued (with their bodies) whether or not mail/ is installed.
           "MLEG_SMTP__HOST": "127.0.0.1", "MLEG_SMTP__PORT": str(free_port()), "MLEG_SMTP__SECURITY": "none"}
    serve = ServeProcess(env, tmp_path / "serve.log")
    serve.run("registry", "import", str(register))
    ctx = AppContext(settings=make_settings(tmp_path, database_url=f"sqlite:///{db}"),
                     engine=make_engine(f"sqlite:///{db}"))
    chat = TgStudent(api, ctx, STUDENT_CHAT)
    serve.start()
    try:
        # Polling begins (a getUpdates is recorded only once answered, 25 s later).
        await api.await_calls("deleteWebhook", 1, timeout=30)
        await chat.say("/start")
        await chat.press("lang:pl")
        await chat.press("terms:accept")
        await chat.say(pesel)
        assert "album" in chat.text

        # kill -9 mid-journey; the student writes while the process is down.
        assert serve.kill() == -signal.SIGKILL
        api.push_text(STUDENT_CHAT, STUDENT_CHAT, "300001")
        serve.start()
        await chat.replies(timeout=30)
        assert "j***@student.example.edu.pl" in chat.text  # resumed at the album step, nothing lost
        await chat.say(chat.binding_code())
        await chat.press("menu:request")
        await chat.press("confirm:yes:request")
        assert "Wniosek przyjęty" in chat.text
        [activation] = outbox_rows(ctx, kind="activation")
        assert activation.recipient == "jan.kowalski@student.example.edu.pl" and activation.status == "pending"

        # The student asks the help desk; a staff member answers in the staff chat.
        await chat.say("/support")
        await chat.say("Nie mam maila z kodem QR")
        [escalation] = await api.await_messages(STAFF_CHAT, 1, timeout=10)
        await wait_until(lambda: outbox_rows(ctx, channel="staff", status="sent"))  # as a human would, later
        assert "Kowalski_<&>" in (escalation.plain_text or "")
        api.push_group_text(STAFF_CHAT, STAFF_MEMBER, "Wysłaliśmy ponownie, sprawdź spam.",
                            reply_to_message_id=escalation.message_id)
        await chat.replies(timeout=10)
        assert "Wysłaliśmy ponownie" in chat.text
        assert serve.kill(signal.SIGTERM) == 0
    finally:
        if serve.proc is not None:
            serve.kill()
    texts = [m.plain_text or "" for m in api.sent_messages(STUDENT_CHAT)]
    assert len(outbox_rows(ctx, channel="telegram")) == len(texts)  # each reply sent once: none lost, none doubled
    with Session(ctx.engine) as session:
        assert session.exec(select(Credential)).one().state == "pending_activation"
        assert session.exec(select(SupportThread)).one().status == "answered"
    log = (tmp_path / "serve.log").read_text(encoding="utf-8", errors="replace")
    assert pesel not in log and api.token.split(":")[1] not in log
    ctx.engine.dispose()
