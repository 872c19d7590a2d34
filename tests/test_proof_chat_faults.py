"""Fault injection on the Telegram side: `mleg serve` killed -9 mid-journeys, 429 storms, Telegram down.

At the issue's scale: 20 kills at random moments while 200 students journey at once
(/start to a queued activation e-mail, 8 updates each), then a second test with a 429 storm and the stand-in stopped
for a few seconds and started again on the same port. After each: every journey
completes (every student bound, an activation e-mail queued to the register address),
and nothing is answered twice: each chat got exactly its outbox rows, every row sent;
the only extra a kill may cause is one row sent again (sent, then killed before the
commit), at most one per kill and none without kills.

Each update is also counted per update id: the stand-in records each chat's updates and how
many times it handed each out (a kill before the offset was confirmed hands it out again), and
each chat's conversation must have handled each of its updates exactly once (a second handling
does not show as a second message: its reply is keyed like the first one's). Nor may a second
handling leave anything behind: one chat code mailed per student, one terms acceptance per
chat, one application, no wrong guess.
Both kill -9 runs also run on PostgreSQL, smaller (the marker `postgres`).

A row a killed process had leased stays leased for core.messaging.sending.LEASE (5 minutes) before
another drainer may take it; the test stands in for those minutes by expiring the dead
process's leases before the restart (the process is dead, so nothing else holds them).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.conversation.state import ConversationState
from core.messaging.outbox import open_body
from core.storage.db import make_engine, unit_of_work
from core.storage.models import (
    Application,
    BindingCode,
    ChatLink,
    Conversation,
    GuessAttempt,
    OutboxMessage,
    OutboxStatus,
    Student,
    TermsAcceptance,
)
from tests.bot_harness import wait_until
from tests.factories import TEST_SECRET, add_student, make_settings
from tests.servers.botapi import BotApiStandIn
from tests.servers.ports import free_port
from tests.support.databases import truncate_all
from tests.support.serve import ServeProcess

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]
JOURNEYS = 200
KILLS = 20
FIRST_CHAT = 910_000
STEP_TIMEOUT = 120.0  # a liveness bound (a step that never comes), not a speed target
POLL = 0.1  # 200 journeys poll the database at once: not too often


class Deployment:
    """`mleg serve` as a subprocess on a migrated database, with students in the register."""

    def __init__(self, tmp_path: Path, db_url: str, api: BotApiStandIn) -> None:
        self.api = api
        self.ctx = AppContext(settings=make_settings(tmp_path, database_url=db_url), engine=make_engine(db_url))
        env = {**os.environ, "MLEG_MODE": "production", "MLEG_SECRET_KEY": TEST_SECRET,
               "MLEG_DATABASE_URL": db_url, "MLEG_VAR_DIR": str(tmp_path / "var"),
               "MLEG_TELEGRAM__TOKEN": api.token, "MLEG_TELEGRAM__API_BASE_URL": api.base_url,
               "MLEG_TELEGRAM__MESSAGES_PER_CHAT_PER_SECOND": "100",
               "MLEG_SMTP__HOST": "127.0.0.1", "MLEG_SMTP__PORT": str(free_port()), "MLEG_SMTP__SECURITY": "none"}
        self.log = tmp_path / "serve.log"
        self.serve = ServeProcess(env, self.log)

    def students(self, count: int) -> list[tuple[Student, str]]:
        with unit_of_work(self.ctx.engine) as session:
            return [add_student(session, self.ctx.box) for _ in range(count)]

    def expire_dead_leases(self) -> None:
        with Session(self.ctx.engine) as session:
            session.execute(sa.update(OutboxMessage).where(col(OutboxMessage.status) == OutboxStatus.SENDING)
                            .values(lease_until=datetime.now(UTC)))
            session.commit()

    def kill_and_restart(self) -> None:
        self.serve.kill()
        self.expire_dead_leases()
        self.serve.start()

    def kill_before_the_offset_is_confirmed(self) -> None:
        """A kill after the bot handled updates whose confirmation (the next getUpdates offset) never
        reached Telegram: the next process gets them again and must not handle them twice."""
        self.api.confirm_offsets = False
        start = self._last_offset()
        deadline = time.monotonic() + STEP_TIMEOUT
        while self._last_offset() <= start:  # the bot handled a batch and asked for what comes after it
            assert time.monotonic() < deadline, "the bot handled nothing"
            time.sleep(0.01)
        self.serve.kill()
        self.api.confirm_offsets = True
        self.expire_dead_leases()
        self.serve.start()

    def _last_offset(self) -> int:
        offsets = [c.params.get("offset") for c in self.api.calls("getUpdates")]
        return max((o for o in offsets if isinstance(o, int)), default=0)

    def binding_code(self, student_id: int) -> str | None:
        with Session(self.ctx.engine) as session:
            rows = session.exec(select(OutboxMessage).where(
                OutboxMessage.kind == "binding-code", OutboxMessage.student_id == student_id,
            ).order_by(col(OutboxMessage.id))).all()
            if not rows:
                return None
            match = re.search(r"\b(\d{6})\b", open_body(self.ctx.box, rows[-1]).text)
            return match.group(1) if match else None


async def until(predicate: Any, what: str) -> Any:
    return await wait_until(predicate, STEP_TIMEOUT, what, interval=POLL)


async def journey(d: Deployment, chat: int, student: Student, pesel: str) -> None:
    """/start to "Wniosek przyjęty", each step waiting for what the student needs for the next one."""
    api = d.api

    def texts() -> str:
        return "\n".join(m.plain_text or "" for m in api.sent_messages(chat))

    def button(data: str) -> int | None:
        for message in reversed(api.sent_messages(chat)):
            if any(b.get("callback_data") == data for b in message.buttons):
                return message.message_id
        return None

    async def press(data: str) -> None:
        message_id = await until(lambda: button(data), f"chat {chat}: button {data}")
        api.push_callback(chat, chat, data, message_id)

    async def say_when(text: str, needle: str) -> None:
        await until(lambda: needle in texts(), f"chat {chat}: {needle!r}")
        api.push_text(chat, chat, text)

    api.push_command(chat, chat, "/start")
    await press("lang:pl")
    await press("terms:accept")
    await say_when(pesel, "PESEL")
    await say_when(student.album, "album")
    code = await until(lambda: d.binding_code(student.id or 0), f"chat {chat}: binding code")
    await say_when(code, "@student.example.edu.pl")
    await press("menu:request")
    await press("confirm:yes:request")
    await until(lambda: "Wniosek przyjęty" in texts(), f"chat {chat}: request accepted")


def assert_nothing_lost_nothing_doubled(d: Deployment, chats: dict[int, Student], *, max_resends: int) -> int:
    """Every journey complete, every outbox row sent, no reply doubled; returns the resends seen.

    A resend is the one thing a kill -9 may cause: the process sent a message and died
    before committing "sent", so the next process sends that row again (Telegram has no
    idempotency key to stop it). It shows as the same message twice in a row, at most one
    per kill; anything else (a second different answer, a lost row) fails.
    """
    with Session(d.ctx.engine) as session:
        links = {int(link.account_id): link.student_id for link in session.exec(select(ChatLink)).all()}
        activations = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "activation")).all()
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.channel == "telegram")).all()
    assert links == {chat: s.id for chat, s in chats.items()}, "every student ends bound"
    assert sorted(r.recipient for r in activations) == sorted(s.email for s in chats.values())
    per_chat: dict[str, list[OutboxMessage]] = {}
    for row in rows:
        per_chat.setdefault(row.recipient, []).append(row)
    resends = 0
    doubled: list[str] = []
    for chat in chats:
        sent = d.api.sent_messages(chat)
        mine = per_chat[str(chat)]
        assert {r.status for r in mine} == {"sent"}, f"chat {chat}: rows left {[r.status for r in mine]}"
        texts = [m.plain_text for m in sent]
        distinct = [text for i, text in enumerate(texts) if i == 0 or text != texts[i - 1]]
        assert len(distinct) == len(mine), (f"chat {chat}: {len(distinct)} distinct messages for {len(mine)} "
                                            f"outbox rows: {[(t or '')[:40] for t in texts]}")
        resends += len(texts) - len(distinct)
        doubled += [f"chat {chat}: {(texts[i] or '')[:60]!r}" for i in range(1, len(texts)) if texts[i] == texts[i - 1]]
    assert resends <= max_resends, f"{resends} messages sent twice, more than {max_resends}: {doubled}"
    return resends


def assert_each_update_handled_once(d: Deployment, chats: dict[int, Student]) -> int:
    """What a second handling of one update would leave behind, absent; returns the updates handed out again."""
    with Session(d.ctx.engine) as session:
        codes = Counter(r.student_id for r in session.exec(select(BindingCode)).all())
        accepted = Counter(r.account_id for r in session.exec(select(TermsAcceptance)).all())
        applications = Counter(r.student_id for r in session.exec(select(Application)).all())
        guesses = Counter(r.kind for r in session.exec(select(GuessAttempt)).all())
    assert codes == {s.id: 1 for s in chats.values()}, "a chat code mailed twice: the album handled twice"
    assert accepted == {str(chat): 1 for chat in chats}, "terms accepted twice"
    assert applications == {s.id: 1 for s in chats.values()}
    assert set(guesses) <= {"code_mail"}, f"wrong guesses (an update handled again at the next step): {guesses}"
    deliveries = d.api.deliveries()
    with Session(d.ctx.engine) as session:
        handled = {row.account_id: Counter(ConversationState.from_json(row.state).handled)
                   for row in session.exec(select(Conversation).where(Conversation.channel == "telegram")).all()}
    for chat in chats:
        pushed = d.api.updates_for(chat)
        assert len(pushed) == 8 and all(deliveries.get(uid, 0) >= 1 for uid in pushed)
        # Handling per update id: the chat's conversation handled each of its updates exactly once.
        twice = {uid: n for uid, n in handled[str(chat)].items() if n > 1}
        assert not twice, f"chat {chat}: updates handled more than once: {twice}"
        assert handled[str(chat)] == Counter(f"tg:{uid}" for uid in pushed), f"chat {chat}"
    return sum(1 for n in deliveries.values() if n > 1)


async def _kill_9_run(d: Deployment, journeys: int, kills: int, seed: int) -> None:
    students = d.students(journeys)
    chats = {FIRST_CHAT + i: s for i, (s, _) in enumerate(students)}
    rng = random.Random(seed)
    d.serve.start()
    done = 0
    try:
        await d.api.await_calls("deleteWebhook", 1, timeout=30)
        running = asyncio.gather(*(journey(d, FIRST_CHAT + i, s, p) for i, (s, p) in enumerate(students)))
        for n in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 2.0))
            if running.done():
                break
            # Every third kill lands between handling and confirming: updates handed out again for sure.
            await asyncio.to_thread(d.kill_before_the_offset_is_confirmed if n % 3 == 2 else d.kill_and_restart)
            done += 1
        await asyncio.wait_for(running, 300)
        await wait_until(lambda: _drained(d), STEP_TIMEOUT, "outbox drained")
        assert d.serve.kill(signal.SIGTERM) == 0
    finally:
        if d.serve.proc is not None:
            d.serve.kill()
    assert done >= kills // 2, "the journeys outran the kills"
    resends = assert_nothing_lost_nothing_doubled(d, chats, max_resends=done)
    replayed = assert_each_update_handled_once(d, chats)
    assert replayed >= 1, "no update was handed out again: the redelivery was not exercised"
    print(f"{len(chats)} journeys, {done} kills -9: every journey complete, {resends} message(s) resent, "
          f"{replayed} update(s) handed out again and handled once")
    d.ctx.engine.dispose()


async def test_kill_9_during_concurrent_journeys(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    await _kill_9_run(Deployment(tmp_path, sqlite_url, api), JOURNEYS, KILLS, seed=20260401)


@pytest.mark.postgres
async def test_kill_9_during_concurrent_journeys_on_postgres(api: BotApiStandIn, tmp_path: Path,
                                                             postgres_database: str) -> None:
    engine = make_engine(postgres_database)
    truncate_all(engine)
    engine.dispose()
    await _kill_9_run(Deployment(tmp_path, postgres_database, api), journeys=24, kills=4, seed=20261206)


def _drained(d: Deployment) -> bool:
    return all(r.status == "sent" for r in _telegram_rows(d))


def _telegram_rows(d: Deployment) -> list[OutboxMessage]:
    with Session(d.ctx.engine) as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.channel == "telegram")).all())


async def test_429_storm_and_telegram_down(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    d = Deployment(tmp_path, sqlite_url, api)
    students = d.students(12)
    chats = {FIRST_CHAT + i: s for i, (s, _) in enumerate(students)}
    d.serve.start()
    try:
        await api.await_calls("deleteWebhook", 1, timeout=30)
        journeys = asyncio.gather(*(journey(d, FIRST_CHAT + i, s, p) for i, (s, p) in enumerate(students)))
        await asyncio.sleep(1.0)
        api.force_retry_after(count=15, retry_after=1)  # every sendX and answerCallbackQuery, for a while
        await asyncio.sleep(2.0)
        port = api.port
        await asyncio.to_thread(api.restart, down_seconds=4.0)  # Telegram down, then back on the same port
        assert api.port == port
        await asyncio.wait_for(journeys, 120)
        await wait_until(lambda: _drained(d), STEP_TIMEOUT, "outbox drained")
        assert api.too_many_requests_sent >= 1
        assert d.serve.kill(signal.SIGTERM) == 0
    finally:
        if d.serve.proc is not None:
            d.serve.kill()
    # A message carried out while Telegram went down, its answer cut off, is the one resend
    # allowed: the bot cannot know it arrived (no idempotency key). Nothing else may double.
    resends = assert_nothing_lost_nothing_doubled(d, chats, max_resends=api.answers_lost)
    assert_each_update_handled_once(d, chats)
    print(f"\n429 storm + Telegram down 4 s: {resends} resent, {api.answers_lost} answer(s) cut off")
    d.ctx.engine.dispose()
