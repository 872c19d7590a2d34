"""A Bot API request's parameters as Telegram reads them: query, JSON, form or multipart body.

PTB sends JSON-encoded values inside form fields and numbers as strings; they are decoded
here once, so a method sees the same ``Params`` whichever way the client sent them.
"""

from __future__ import annotations

import json
import re
from email.parser import BytesHeaderParser
from typing import Any
from urllib.parse import parse_qsl

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.records import UploadedFile

Params = dict[str, Any]
Files = dict[str, UploadedFile]

# Parameters PTB sends JSON-encoded inside form fields, and parameters that are integers.
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "reply_parameters",
        "allowed_updates",
        "commands",
        "scope",
        "link_preview_options",
        "entities",
        "caption_entities",
        "media",
        "rights",
        "menu_button",
    }
)
_INT_PARAMS = frozenset(
    {
        "message_id",
        "user_id",
        "message_thread_id",
        "offset",
        "limit",
        "timeout",
        "reply_to_message_id",
        "cache_time",
        "max_connections",
        "icon_color",
    }
)


def read_params(params: Params, query: str, content_type: str, body: bytes) -> Files:
    """Fill ``params`` from the query and body, return the uploaded files.

    ``params`` is filled as far as reading gets, so a refused request is recorded with what
    was read before the refusal.
    """
    params.update(parse_qsl(query, keep_blank_values=True))
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json" and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON") from None
        if not isinstance(decoded, dict):
            raise ApiError(400, "Bad Request: JSON object expected")
        params.update(decoded)
    elif ctype == "application/x-www-form-urlencoded" and body:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    elif ctype == "multipart/form-data":
        fields, files = _parse_multipart(body, content_type)
        params.update(fields)
        return files
    return {}


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, Any], Files]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ApiError(400, "Bad Request: multipart boundary not found")
    delimiter = b"--" + m.group(1).encode("latin-1")
    fields: dict[str, Any] = {}
    files: Files = {}
    header_parser = BytesHeaderParser()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = header_parser.parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = headers.get_filename()
        if filename is not None:
            files[name] = UploadedFile(
                field_name=name,
                filename=filename,
                content_type=headers.get_content_type(),
                data=content,
            )
        else:
            charset = headers.get_content_charset() or "utf-8"
            fields[name] = content.decode(charset, errors="replace")
    return fields, files


def normalize(params: Params) -> Params:
    """Decode the JSON-in-a-field and integer-as-string parameters to their values."""
    out = dict(params)
    for key in _JSON_PARAMS & out.keys():
        value = out[key]
        if isinstance(value, str):
            try:
                out[key] = json.loads(value) if value else None
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    for key in _INT_PARAMS & out.keys():
        value = out[key]
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            out[key] = int(value)
    if isinstance(out.get("chat_id"), str) and re.fullmatch(r"-?\d+", out["chat_id"].strip()):
        out["chat_id"] = int(out["chat_id"])
    return out


def as_bool(value: Any) -> bool:
    """A boolean parameter, whether it came as JSON ``true`` or as the form string "true"."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)
