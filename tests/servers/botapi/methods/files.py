"""Photos and documents: sendPhoto, sendDocument, getFile, and the file download URL.

An upload is kept in memory under a new file_id; a download (GET /file/bot<token>/<path>)
serves the same bytes back.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.flood import check_rate
from tests.servers.botapi.methods.messages import check_send_allowed, check_thread, reply_target, store_bot_message
from tests.servers.botapi.state import TOKEN_RE, StandInState
from tests.servers.botapi.text import MAX_CAPTION_LENGTH, checked_text
from tests.servers.botapi.wire import Files, Params


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from a PNG or JPEG header; 320x320 for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            seg_len = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(width), int(height)
            i += 2 + seg_len
    return 320, 320


def new_file_id(s: StandInState, data: bytes, folder: str, suffix: str) -> tuple[str, str]:
    """Keep ``data`` for getFile and download; (file_id, file_unique_id)."""
    number = next(s._file_ids)
    file_id = f"AgACAgIAAxkDAAI{number:06d}standin"
    s._files[file_id] = (data, f"{folder}/file_{number}{suffix}")
    return file_id, f"AQAD{number:06d}"


def resolve_upload(
    name: str, params: dict[str, Any], files: Files
) -> tuple[bytes | None, str | None, str | None]:
    """(bytes, filename, reference) for a file parameter: upload, attach://, or id/URL."""
    if name in files:
        up = files[name]
        return up.data, up.filename, None
    value = params.get(name)
    if isinstance(value, str) and value.startswith("attach://"):
        up_ref = files.get(value.removeprefix("attach://"))
        if up_ref is None:
            raise ApiError(400, f"Bad Request: file {value} not found in the request")
        return up_ref.data, up_ref.filename, None
    if isinstance(value, str) and value:
        return None, None, value
    return None, None, None


def _send_file(s: StandInState, p: Params, f: Files, token: str, kind: str) -> Any:
    method = "sendPhoto" if kind == "photo" else "sendDocument"
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        check_send_allowed(s, chat)
        data, filename, ref = resolve_upload(kind, p, f)
        if data is None and ref is None:
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        caption = p.get("caption")
        plain = (
            checked_text(s, caption, p.get("parse_mode"), MAX_CAPTION_LENGTH, "message caption")
            if caption
            else None
        )
        check_thread(s, chat, p.get("message_thread_id"))
        reply_target(s, chat, p)
        check_rate(s, chat)
        payload = data if data is not None else b""
        if data is None and ref in s._files:
            payload = s._files[str(ref)][0]
        if kind == "photo":
            file_id, unique = new_file_id(s, payload, "photos", ".jpg")
            width, height = image_size(payload)
            extra: dict[str, Any] = {
                "photo": [
                    {
                        "file_id": file_id,
                        "file_unique_id": unique,
                        "file_size": len(payload),
                        "width": width,
                        "height": height,
                    }
                ]
            }
            record: dict[str, Any] = {"photo": data, "photo_ref": ref, "filename": filename}
        else:
            file_id, unique = new_file_id(s, payload, "documents", "")
            extra = {
                "document": {
                    "file_id": file_id,
                    "file_unique_id": unique,
                    "file_name": filename or "file",
                    "file_size": len(payload),
                }
            }
            record = {"document": data, "photo_ref": ref, "filename": filename}
        message = store_bot_message(
            s, token, chat, p, method, str(caption) if caption else None, plain, extra, record
        )
        s._cond.notify_all()
        return message


def _api_sendPhoto(s: StandInState, p: Params, f: Files, token: str) -> Any:
    return _send_file(s, p, f, token, "photo")


def _api_sendDocument(s: StandInState, p: Params, f: Files, token: str) -> Any:
    return _send_file(s, p, f, token, "document")


def _api_getFile(s: StandInState, p: Params, f: Files, token: str) -> Any:
    file_id = str(p.get("file_id") or "")
    with s._cond:
        if file_id not in s._files:
            raise ApiError(400, "Bad Request: invalid file_id")
        data, path = s._files[file_id]
    return {
        "file_id": file_id,
        "file_unique_id": f"AQAD{file_id[-13:-7]}",
        "file_size": len(data),
        "file_path": path,
    }


def serve_file(s: StandInState, token: str, path: str) -> tuple[int, bytes, str]:
    """The bytes behind a getFile ``file_path``: (HTTP status, body, content type)."""
    with s._cond:
        for data, file_path in s._files.values():
            if file_path == path and TOKEN_RE.match(token):
                return 200, data, "application/octet-stream"
    body = {"ok": False, "error_code": 404, "description": "Not Found"}
    return 404, json.dumps(body).encode(), "application/json"


METHODS = (_api_sendPhoto, _api_sendDocument, _api_getFile)
