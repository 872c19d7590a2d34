"""The local Bot API stand-in works with the real python-telegram-bot Application and Bot."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.servers.botapi import (
    BotApiStandIn,
    check_html,
    check_markdown_v2,
    post_update_to_webhook,
)

pytestmark = [
    pytest.mark.timeout(30),
    # RetryAfter.retry_after warns about its future timedelta type; both are accepted below
    pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning"),
]

SUBPROCESS_BOT = """
import os
from telegram.ext import ApplicationBuilder, MessageHandler, filters

async def echo(update, context):
    await update.effective_message.reply_text("pong: " + update.effective_message.text)

app = ApplicationBuilder().token(os.environ["BOT_TOKEN"]).base_url(os.environ["BOT_API"]).build()
app.add_handler(MessageHandler(filters.TEXT, echo))
app.run_polling(poll_interval=0, timeout=1)
"""


@pytest.fixture
def api() -> Iterator[BotApiStandIn]:
    standin = BotApiStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
async def bot(api: BotApiStandIn) -> AsyncIterator[Bot]:
    async with Bot(api.token, base_url=api.base_url, base_file_url=api.base_file_url) as b:
        yield b


def _png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _build_app(api: BotApiStandIn) -> Application:
    app = (
        ApplicationBuilder()
        .token(api.token)
        .base_url(api.base_url)
        .base_file_url(api.base_file_url)
        .build()
    )

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        keyboard = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("Tak", callback_data="yes"),
                    InlineKeyboardButton("Nie", callback_data="no"),
                ]
            ]
        )
        await update.effective_message.reply_text(
            f"<b>Witaj</b> {' '.join(context.args or [])}".strip(),
            parse_mode="HTML",
            reply_markup=keyboard,
        )

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_message.text
        await update.effective_message.reply_text(f"echo: {update.effective_message.text}")

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("ok")
        await query.edit_message_text(f"wybrano: {query.data}")

    app.add_handler(CommandHandler("start", start))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    app.add_handler(CallbackQueryHandler(button))
    return app


@pytest.fixture
async def running_app(api: BotApiStandIn) -> AsyncIterator[Application]:
    app = _build_app(api)
    async with app:
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        await app.start()
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


async def test_polling_echo_command_and_callback(
    api: BotApiStandIn,
    running_app: Application,
) -> None:
    assert running_app.bot.id == api.bot_id
    assert running_app.bot.username == api.bot_username

    api.push_text(1001, 1001, "cześć")
    [reply] = await api.await_messages(1001, 1, timeout=3)
    assert reply.text == "echo: cześć"
    assert reply.reply_to_message_id is None  # PTB quotes only in groups by default

    api.push_command(1001, 1001, "start", "Jan")
    messages = await api.await_messages(1001, 2, timeout=3)
    welcome = messages[1]
    assert welcome.text == "<b>Witaj</b> Jan"
    assert welcome.plain_text == "Witaj Jan"
    assert welcome.parse_mode == "HTML"
    assert welcome.button_texts == ["Tak", "Nie"]
    assert welcome.message_id > messages[0].message_id

    api.push_callback(1001, 1001, welcome.callback_data("Tak"), welcome.message_id)
    [answer] = await api.await_calls("answerCallbackQuery", 1, timeout=3)
    assert answer.ok and answer.params["text"] == "ok"
    [edit] = await api.await_calls("editMessageText", 1, timeout=3)
    assert edit.ok
    assert welcome.text == "wybrano: yes"
    assert welcome.reply_markup is None
    assert welcome.edits[0]["text"] == "<b>Witaj</b> Jan"
    await asyncio.sleep(0.05)
    assert api.updates_pending() <= 1  # the last batch is confirmed on the next poll


async def test_send_photo_records_the_uploaded_bytes(api: BotApiStandIn, bot: Bot) -> None:
    png = _png(5, 4)
    message = await bot.send_photo(2002, photo=png, caption="Twój kod QR")
    assert message.caption == "Twój kod QR"
    assert message.photo[-1].width == 5 and message.photo[-1].height == 4
    [sent] = api.sent_messages(2002)
    assert sent.method == "sendPhoto" and sent.photo == png and sent.caption == "Twój kod QR"
    file = await bot.get_file(message.photo[-1].file_id)
    assert bytes(await file.download_as_bytearray()) == png


async def test_limits_and_errors_surface_as_ptb_exceptions(api: BotApiStandIn, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(3003, "x" * 4097)
    await bot.send_message(3003, "x" * 4096)
    with pytest.raises(BadRequest, match=r"(?i)message caption is too long"):
        await bot.send_photo(3003, photo=_png(), caption="y" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(3003, "<b>unclosed", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)character '.' is reserved"):
        await bot.send_message(3003, "Koniec.", parse_mode="MarkdownV2")
    await bot.send_message(
        3003, "Koniec\\. *gruby* [link](https://a.pl/x\\)y)", parse_mode="MarkdownV2"
    )

    api.block_chat(3003)
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(3003, "hej")

    api.force_retry_after(2, retry_after=7)
    for _ in range(2):
        with pytest.raises(RetryAfter) as info:
            await bot.get_me()
        assert info.value.retry_after in (7, dtm.timedelta(seconds=7))
    await bot.get_me()
    assert api.rate_limited_count() == 2

    api.check_lengths = False
    await bot.send_message(3004, "z" * 5000)


async def test_rate_limit_enforced_per_chat(api: BotApiStandIn, bot: Bot) -> None:
    api.enforce_rate_limits = True
    outcomes: list[str] = []
    for n in range(3):
        try:
            await bot.send_message(4004, f"msg {n}")
            outcomes.append("ok")
        except RetryAfter as exc:
            outcomes.append(f"429:{exc.retry_after}")
    # Refused at once, each call answered (not held back and let through later): three calls, three answers.
    assert [c.status for c in api.calls("sendMessage")] == [200, 429, 429]
    assert outcomes[0] == "ok" and outcomes.count("ok") == 1
    assert api.rate_limited_count(4004) == 2
    await bot.send_message(4005, "another chat is fine")
    [call] = api.calls("sendMessage")[1:2]
    assert call.status == 429
    assert call.response["parameters"]["retry_after"] == 1
    assert call.response["description"] == "Too Many Requests: retry after 1"

    api.global_limit = 3  # the bot-wide window (30/s by default) counts every chat
    with pytest.raises(RetryAfter):
        for chat_id in range(4100, 4110):
            await bot.send_message(chat_id, "fan-out")
    assert api.rate_limited_count() == 3


async def test_commands_members_forum_and_misc(api: BotApiStandIn, bot: Bot) -> None:
    from telegram import BotCommand, BotCommandScopeAllPrivateChats, ChatMember

    await bot.set_my_commands([BotCommand("start", "Początek")], language_code="pl")
    await bot.set_my_commands([BotCommand("help", "Help")], scope=BotCommandScopeAllPrivateChats())
    assert api.commands(language_code="pl") == [{"command": "start", "description": "Początek"}]
    assert [
        c.command for c in await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats())
    ] == ["help"]
    await bot.delete_my_commands(language_code="pl")
    assert await bot.get_my_commands(language_code="pl") == ()

    api.push_group_text(-100500, 77, "hello staff")
    api.set_member_status(-100500, 78, "administrator")
    assert (await bot.get_chat_member(-100500, 77)).status == ChatMember.MEMBER
    assert (await bot.get_chat_member(-100500, 78)).status == ChatMember.ADMINISTRATOR
    assert (await bot.get_chat_member(-100500, 79)).status == ChatMember.LEFT
    api.set_member_status(-100500, 77, "kicked")
    assert (await bot.get_chat_member(-100500, 77)).status == ChatMember.BANNED
    chat = await bot.get_chat(-100500)
    assert chat.type == "supergroup" and not chat.is_forum

    with pytest.raises(BadRequest, match=r"(?i)not a forum"):
        await bot.create_forum_topic(-100500, "Wątek")
    api.make_forum(-100500)
    topic = await bot.create_forum_topic(-100500, "Wątek 1")
    sent = await bot.send_message(-100500, "w wątku", message_thread_id=topic.message_thread_id)
    assert sent.message_thread_id == topic.message_thread_id and sent.is_topic_message
    with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
        await bot.send_message(-100500, "x", message_thread_id=999)

    assert await bot.send_chat_action(-100500, "typing")
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("w wątku", chat_id=-100500, message_id=sent.message_id)
    await bot.edit_message_reply_markup(
        -100500,
        sent.message_id,
        reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="a")]]),
    )
    assert api.sent_messages(-100500)[-1].button_texts == ["A"]
    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(-100500, "x", reply_to_message_id=12345)
    assert await bot.delete_message(-100500, sent.message_id)
    assert api.sent_messages(-100500)[-1].deleted
    assert await bot.close()
    assert await bot.log_out()

    # raw protocol: unknown method, bad token, GET with a query string, JSON bodies
    def raw(path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            api.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, body = await asyncio.to_thread(raw, f"/bot{api.token}/noSuchMethod")
    assert (status, body) == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )
    status, body = await asyncio.to_thread(raw, "/botnot-a-token/getMe")
    assert status == 404 and body["ok"] is False
    status, body = await asyncio.to_thread(raw, f"/bot{api.token}/getme?x=1")
    assert status == 200 and body["result"]["id"] == api.bot_id
    status, body = await asyncio.to_thread(
        raw, f"/bot{api.token}/sendMessage", {"chat_id": 5, "text": "json body"}
    )
    assert status == 200 and body["result"]["text"] == "json body"
    assert body["result"]["chat"] == {"id": 5, "type": "private", "first_name": "User5"}

    with pytest.raises(InvalidToken):
        async with Bot("123:abc", base_url=api.url + "/nothing/"):
            pass


async def test_webhook_mode_with_real_ptb_webhook_server(api: BotApiStandIn) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = _build_app(api)
    async with app:
        assert app.updater is not None
        await app.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="tg",
            webhook_url=f"http://127.0.0.1:{port}/tg",
            secret_token="s3cret",
        )
        await app.start()
        try:
            assert api.webhook["url"] == f"http://127.0.0.1:{port}/tg"
            assert api.webhook["secret_token"] == "s3cret"
            api.push_text(6006, 6006, "przez webhook")  # delivered by the stand-in
            [reply] = await api.await_messages(6006, 1, timeout=3)
            assert reply.text == "echo: przez webhook"
            update = {
                "update_id": 999,
                "message": {
                    "message_id": 50,
                    "date": int(time.time()),
                    "text": "ręcznie",
                    "chat": {"id": 6006, "type": "private", "first_name": "J"},
                    "from": {"id": 6006, "is_bot": False, "first_name": "J"},
                },
            }
            url = f"http://127.0.0.1:{port}/tg"
            assert await asyncio.to_thread(post_update_to_webhook, update, url, "wrong") == 403
            assert await asyncio.to_thread(post_update_to_webhook, update, url, "s3cret") == 200
            await api.await_messages(6006, 2, timeout=3)
        finally:
            await app.updater.stop()
            await app.stop()


def test_blocking_wait_from_another_thread_and_checkers(api: BotApiStandIn) -> None:
    def send_later() -> None:
        time.sleep(0.1)
        request = urllib.request.Request(
            f"{api.base_url}{api.token}/sendMessage",
            data=b"chat_id=7007&text=later",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        urllib.request.urlopen(request, timeout=3).close()

    thread = threading.Thread(target=send_later)
    thread.start()
    [message] = api.wait_for_messages(7007, 1, timeout=3)
    thread.join()
    assert message.text == "later"
    with pytest.raises(TimeoutError):
        api.wait_for_messages(7007, 2, timeout=0.1)

    assert check_html('a &lt; b <i>x</i> <a href="https://x.pl">l</a>') == "a < b x l"
    for bad in ("<b>x</i>", "x</b>", "<foo>x</foo>", "1 < 2", "<span>s</span>"):
        with pytest.raises(ValueError):
            check_html(bad)
    assert check_markdown_v2("*b _i_* ~s~ ||sp|| `c.d` \\- ok") == "b i s sp c.d - ok"
    for bad in ("a-b", "*open", "(x)", "a|b", "_x*y_*", "x!"):
        with pytest.raises(ValueError):
            check_markdown_v2(bad)


async def test_legacy_markdown_is_refused_not_passed_unchecked(api: BotApiStandIn, bot: Bot) -> None:
    """Nothing in the stand-in checks legacy Markdown, so it must not answer as if Telegram took it."""
    with pytest.raises(BadRequest, match=r"(?i)unsupported parse_mode"):
        await bot.send_message(3005, "*gruby* i _pochyły_", parse_mode="Markdown")
    assert api.sent_messages(3005) == []


@pytest.mark.process
def test_bot_in_a_separate_process_is_served(api: BotApiStandIn) -> None:
    env = {**os.environ, "BOT_TOKEN": api.token, "BOT_API": api.base_url}
    proc = subprocess.Popen([sys.executable, "-c", SUBPROCESS_BOT], env=env)
    try:
        api.wait_for_calls("getUpdates", 1, timeout=10)
        api.push_text(8008, 8008, "ping")
        [reply] = api.wait_for_messages(8008, 1, timeout=5)
        assert reply.text == "pong: ping"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
