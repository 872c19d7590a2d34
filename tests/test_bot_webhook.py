"""Webhook mode: only requests carrying the secret token are taken, each update is handled once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from unittest import mock

import pytest
from sqlmodel import Session, select
from telegram import Update
from telegram.ext import Application

from core.app.context import AppContext
from core.storage.models import Conversation
from tests.bot_harness import TgStudent, bot_context, outbox_rows, running_bot, wait_until
from tests.cli_helpers import cli_environment, run
from tests.servers.botapi import BotApiStandIn, post_update_to_webhook
from tests.servers.ports import free_port

pytestmark = pytest.mark.timeout(30)
SECRET = "s3cret-token-for-tests_0123456789abcdef"


def _update(update_id: int, chat_id: int, text: str) -> dict[str, object]:
    user = {"id": chat_id, "is_bot": False, "first_name": "Mallory"}
    return {"update_id": update_id, "message": {
        "message_id": 1, "date": int(time.time()), "text": text, "from": user,
        "chat": {"id": chat_id, "type": "private", "first_name": "Mallory"}}}


async def test_forged_update_without_secret_refused(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    ctx = bot_context(tmp_path, sqlite_url, api, webhook_url=url, webhook_secret=SECRET,
                      webhook_listen="127.0.0.1", webhook_port=port)
    async with running_bot(ctx):
        assert api.webhook["url"] == url and api.webhook["secret_token"] == SECRET
        # Telegram (the stand-in) delivers with the secret: served.
        chat = TgStudent(api, ctx, 2121)
        await chat.say("/start")
        assert chat.last

        for secret in (None, "wrong"):
            status = await asyncio.to_thread(post_update_to_webhook, _update(9000, 2222, "/start"), url, secret)
            assert status == 403
        await asyncio.sleep(0.3)
    assert api.sent_messages(2222) == []
    with Session(ctx.engine) as session:
        accounts = [c.account_id for c in session.exec(select(Conversation)).all()]
    assert accounts == ["2121"]  # the forged update never reached the engine


async def test_retried_update_is_handled_once(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    """Telegram sends an update again when our answer did not reach it: twice at once, and once more later."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    ctx = bot_context(tmp_path, sqlite_url, api, webhook_url=url, webhook_secret=SECRET,
                      webhook_listen="127.0.0.1", webhook_port=port)
    handled: list[int] = []
    process_update = Application.process_update

    async def counting(app: Application, update: object) -> None:  # type: ignore[type-arg]
        if isinstance(update, Update):
            handled.append(update.update_id)
        await process_update(app, update)

    with mock.patch.object(Application, "process_update", counting):
        async with running_bot(ctx):
            update = _update(4242, 3131, "/start")
            statuses = await asyncio.gather(*(asyncio.to_thread(post_update_to_webhook, update, url, SECRET)
                                              for _ in range(2)))
            assert statuses == [200, 200]
            first = TgStudent(api, ctx, 3131)
            await first.replies()
            assert await asyncio.to_thread(post_update_to_webhook, update, url, SECRET) == 200
            # A later update of another student: once it is answered, a retry before it would have been too.
            assert await asyncio.to_thread(post_update_to_webhook, _update(4243, 3132, "/start"), url, SECRET) == 200
            await TgStudent(api, ctx, 3132).replies()
    assert handled.count(4242) == 1 and handled.count(4243) == 1
    assert len(api.sent_messages(3131)) == len(first.last)


async def test_stored_updates_go_before_polling(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    """Back from webhook mode to long polling: what the webhook stored and nobody handled goes first."""
    from core.storage import update_store
    from core.storage.models import StoredUpdate

    ctx = bot_context(tmp_path, sqlite_url, api)
    stored = _update(77, 5151, "/start")
    update_store.store(ctx.engine, ctx.box, channel="telegram", update_id=77, raw=json.dumps(stored).encode(),
                       now=ctx.clock.now())
    api.push_command(5152, 5152, "/start")  # newer, waiting at Telegram for getUpdates
    async with running_bot(ctx):
        await TgStudent(api, ctx, 5151).replies()
        await TgStudent(api, ctx, 5152).replies()
    rows = outbox_rows(ctx, channel="telegram")
    assert rows[0].recipient == "5151"
    with Session(ctx.engine) as session:
        [row] = session.exec(select(StoredUpdate)).all()
    assert row.handled_at is not None and row.payload is None  # marked, and what was typed wiped


@pytest.mark.process
async def test_status_shows_waiting_updates_and_the_webhooks_health(api: BotApiStandIn, tmp_path: Path,
                                                                     sqlite_url: str) -> None:
    from bot import webhook
    from core.storage import update_store
    from core.storage.models import WebhookState

    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    ctx = bot_context(tmp_path, sqlite_url, api, webhook_url=url, webhook_secret=SECRET,
                      webhook_listen="127.0.0.1", webhook_port=port)

    def telegram_error_recorded() -> bool:
        with Session(ctx.engine) as session:
            state = session.get(WebhookState, "telegram")
            return state is not None and bool(state.info_error)

    with mock.patch.object(webhook, "INFO_CHECK_SECONDS", 0.05):
        async with running_bot(ctx):
            api._webhook_error = (int(time.time()), "Wrong response from the webhook: 502 Bad Gateway")
            assert await asyncio.to_thread(post_update_to_webhook, _update(610, 6161, "/start"), url, SECRET) == 200
            await TgStudent(api, ctx, 6161).replies()
            await wait_until(telegram_error_recorded, what="getWebhookInfo's error recorded")
    # Acknowledged by a server that died before handling it:
    update_store.store(ctx.engine, ctx.box, channel="telegram", update_id=611, raw=b"{}", now=ctx.clock.now())
    env = cli_environment(tmp_path, sqlite_url, MLEG_TELEGRAM__TOKEN=api.token, MLEG_TELEGRAM__WEBHOOK_URL=url,
                          MLEG_TELEGRAM__WEBHOOK_SECRET=SECRET, MLEG_TELEGRAM__WEBHOOK_PORT=str(port))
    result = await asyncio.to_thread(run, ["status"], env)
    assert result.returncode == 0, result.stderr
    lines = {line[:16].strip(): line[16:] for line in result.stdout.splitlines()}
    assert lines["stored updates"].startswith("1 not handled yet, the oldest (update 611) received ")
    assert lines["webhook"].startswith(url)
    assert lines["last update"].startswith("received ")
    assert lines["setWebhook"].startswith("ok, ") and url in lines["setWebhook"]
    assert "last delivery error" in lines["Telegram says"] and "502 Bad Gateway" in lines["Telegram says"]
    assert lines["updates lock"].startswith("not used on SQLite")


async def test_updates_that_are_no_turn_are_marked_handled_too(api: BotApiStandIn, tmp_path: Path,
                                                               sqlite_url: str) -> None:
    """An edit, a message in a group: no engine turn marks them, the worker does once their handler returned."""
    from core.storage.models import StoredUpdate

    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    ctx = bot_context(tmp_path, sqlite_url, api, webhook_url=url, webhook_secret=SECRET,
                      webhook_listen="127.0.0.1", webhook_port=port)
    edit = _update(701, 7171, "poprawka")
    edit["edited_message"] = {**edit.pop("message"), "edit_date": int(time.time())}
    group = _update(702, -100777, "hej")
    group["message"]["chat"] = {"id": -100777, "type": "group", "title": "Rok 1"}

    def all_handled() -> bool:
        with Session(ctx.engine) as session:
            rows = session.exec(select(StoredUpdate)).all()
        return len(rows) == 2 and all(r.handled_at is not None and r.payload is None for r in rows)

    async with running_bot(ctx):
        for update in (edit, group):
            assert await asyncio.to_thread(post_update_to_webhook, update, url, SECRET) == 200
        await wait_until(all_handled, what="both stored updates marked handled")
        student = TgStudent(api, ctx, 7171)
        await student.replies()  # "send it anew", once
    assert len(api.sent_messages(7171)) == 1


@pytest.mark.process
def test_a_refused_set_webhook_is_one_error_line_and_shown_by_status(api: BotApiStandIn, tmp_path: Path,
                                                                     sqlite_url: str) -> None:
    port = free_port()
    url = f"ftp://bot.example.edu.pl:{port}/telegram/hook"  # Telegram: "Webhook can be set up only on HTTPS"
    env = cli_environment(tmp_path, sqlite_url, MLEG_TELEGRAM__TOKEN=api.token,
                          MLEG_TELEGRAM__API_BASE_URL=api.base_url, MLEG_TELEGRAM__WEBHOOK_URL=url,
                          MLEG_TELEGRAM__WEBHOOK_SECRET=SECRET, MLEG_TELEGRAM__WEBHOOK_PORT=str(port),
                          MLEG_SMTP__HOST="127.0.0.1", MLEG_SMTP__SECURITY="none")
    served = run(["serve", "--no-jobs"], env)
    assert served.returncode == 2, served.stderr[-2000:]
    errors = [line for line in served.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Telegram refused the webhook" in errors[0] and "https" in errors[0].lower()
    assert "Traceback" not in served.stderr and SECRET not in served.stderr
    status = run(["status"], env)
    [line] = [line for line in status.stdout.splitlines() if line.startswith("setWebhook")]
    assert "FAILED" in line and "https" in line.lower()


@pytest.mark.postgres
async def test_an_update_another_server_stored_is_handled_at_once(api: BotApiStandIn, tmp_path: Path,
                                                                  postgres_database: str) -> None:
    """PostgreSQL: the server handling updates hears of one stored elsewhere (NOTIFY), not at its next look."""
    from bot import webhook
    from core.storage import update_store
    from core.storage.db import make_engine as engine_for
    from tests.support.databases import truncate_all

    engine = engine_for(postgres_database)
    truncate_all(engine)
    engine.dispose()
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    ctx = bot_context(tmp_path, postgres_database, api, webhook_url=url, webhook_secret=SECRET,
                      webhook_listen="127.0.0.1", webhook_port=port)
    # Its own look at the table comes only after an hour: only the notification can wake it.
    with mock.patch.object(webhook, "IDLE_SECONDS", 3600.0):
        async with running_bot(ctx):
            await wait_until(lambda: _listening_for_stored_updates(ctx), what="the worker listens")
            await asyncio.sleep(0)  # let the worker reach its long wait
            other = bot_context(tmp_path, postgres_database, api)  # another server, same database
            update_store.store(other.engine, other.box, channel="telegram", update_id=880,
                               raw=json.dumps(_update(880, 8181, "/start")).encode(), now=other.clock.now())
            other.engine.dispose()
            await TgStudent(api, ctx, 8181).replies(timeout=10)
    ctx.engine.dispose()


def _listening_for_stored_updates(ctx: AppContext) -> bool:
    import sqlalchemy as sa

    with ctx.engine.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN mleg_stored_update%'")).scalar())
