"""The register CSV: read and validate a whole file, or refuse it with every bad line listed.

A file with any bad line is refused entirely, so the register is never left half-updated.
Line numbers are the file's own (a quoted cell may span lines), and a problem never quotes a
PESEL in clear: a cell is masked before it is shown, since shifted columns can put a PESEL
anywhere. What Excel does to PESEL numbers (dropped leading zeros, scientific notation) is
recognised and explained once per file.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from core.app.errors import RegisterImportError
from core.security.redact import redact_personal
from core.security.secrets_box import SecretBox
from core.storage.models import Student, StudentStatus, StudyLevel
from core.students.pesel import PeselProblem, check_pesel, mask_pesel

__all__ = ["HEADER", "MAX_LENGTHS", "RegisterRow", "masked_cell", "parse_register"]

HEADER = (
    "album", "pesel", "first_name", "last_name", "email", "study_level",
    "status", "els_number", "els_valid_until", "removed_on",
)
_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
_PESEL_REASONS = {
    PeselProblem.LENGTH: "PESEL must have 11 digits",
    PeselProblem.DIGITS: "PESEL must contain digits only",
    PeselProblem.CHECKSUM: "PESEL check digit is wrong",
    PeselProblem.DATE: "PESEL encodes an impossible birth date",
}
# A header cell is quoted back only if it looks like a column name: the first line of a file
# without a header is a student row, and a digit in it may belong to a PESEL.
_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z_ \-]{0,39}$")
# Ten digits or more: a PESEL (11), one whose leading zero Excel dropped (born in the 2000s), or
# a piece of one. A register cell holds no other number that long worth showing in clear.
_PESEL_LIKE = re.compile(r"\d{10,}")
# A number Excel turned into scientific notation ("4.25063E+10", "4,25063E+10" in Polish).
_SCIENTIFIC = re.compile(r"(?i)(?<![\d.,])(\d)([.,])(\d+)(E\+?)(\d+)")
_SCIENTIFIC_CELL = re.compile(r"(?i)^\d(?:[.,]\d+)?E\+?\d+$")
_SHOWN_MAX = 60


def _model_length(column: str) -> int:
    length = getattr(Student.__table__.c[column].type, "length", None)  # type: ignore[attr-defined]
    assert isinstance(length, int), column
    return length


# The longest value each free-text column may hold (the database's own limits).
MAX_LENGTHS: dict[str, int] = {
    column: _model_length(column) for column in ("album", "first_name", "last_name", "email", "els_number")
}
_EXCEL_HINT = (
    "Excel dropped the leading zeros of PESEL numbers or wrote them in scientific notation "
    "({count} line(s), the first here): format the pesel column as Text (or open the export "
    "with that column as Text) and save the file again"
)




@dataclass(frozen=True)
class RegisterRow:
    """A validated line; `pesel_hash`/`pesel_masked` replace the clear number at once."""

    album: str
    pesel_hash: str | None
    pesel_masked: str | None
    first_name: str
    last_name: str
    email: str
    study_level: str
    status: str
    els_number: str | None
    els_valid_until: date | None
    removed_on: date | None
    digest: str
    line: int = 0  # where the row starts in the file (a quoted cell may span lines)




def _valid_pesel(number: str) -> bool:
    return check_pesel(number)[1] is None


def masked_cell(value: str) -> str:
    """Every PESEL-like number in a value masked: valid ones in any spelling (core.security.redact), any run
    of ten digits or more (an 11-digit one, one that lost its leading zero, a piece of one), and
    Excel's scientific notation (which keeps the first digits: the birth date)."""
    masked = redact_personal(value)
    masked = _PESEL_LIKE.sub(lambda m: mask_pesel(m.group()), masked)
    masked = _SCIENTIFIC.sub(lambda m: m.group(1) + m.group(2) + "*" * len(m.group(3)) + m.group(4) + m.group(5),
                             masked)
    return masked if len(masked) <= _SHOWN_MAX else masked[:_SHOWN_MAX] + "..."


def _shown(value: str) -> str:
    """A cell as quoted in a problem: shifted columns can put a PESEL anywhere, so mask it."""
    return repr(masked_cell(value))


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _control_character(value: str) -> str | None:
    """What control character `value` holds, in words, or None."""
    for ch in value:
        if ch in "\r\n\u2028\u2029":
            return "a line break"
        if ch == "\x00":
            return "a NUL character"
        if ch == "\t":
            return "a tab"
        if unicodedata.category(ch) == "Cc":
            return f"a control character (U+{ord(ch):04X})"
    return None


def _parse_date(value: str, column: str, problems: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"{column} {_shown(value)} is not an ISO date (YYYY-MM-DD)")
        return None


def _header_problem(header: list[str]) -> str | None:
    """None for the right header, else what is wrong with it, naming columns, never quoting data."""
    names = [cell.strip() for cell in header]
    if tuple(names) == HEADER:
        return None
    expected = f"header must be exactly: {','.join(HEADER)}"
    return f"{expected}; {_header_hint(names)}"


def _header_hint(names: list[str]) -> str:
    for separator, kind in ((";", "semicolon"), ("\t", "tab")):
        if len(names) < len(HEADER) and any(separator in name for name in names):
            return f"the file looks {kind}-separated: save it as CSV UTF-8 with commas"
    if not any(name.lower() in HEADER for name in names):
        return ("the first line has none of these column names: the file seems to have no header "
                "line (add it as the first line; `mleg registry header` prints it)")
    if [name.lower() for name in names] == list(HEADER):
        return "column names must be lower case"
    parts: list[str] = []
    missing = [column for column in HEADER if column not in names]
    if missing:
        parts.append("missing " + ", ".join(missing))
    unexpected = [name for name in names if name not in HEADER]
    shown = [name for name in unexpected if _COLUMN_NAME.match(name)]
    if shown:
        parts.append("unexpected " + ", ".join(shown))
    if len(unexpected) > len(shown):
        parts.append(f"{len(unexpected) - len(shown)} unexpected column(s) not shown (not column names)")
    repeated = sorted({name for name in names if name in HEADER and names.count(name) > 1})
    if repeated:
        parts.append("repeated " + ", ".join(repeated))
    if not parts:
        position, found = next((i, name) for i, name in enumerate(names) if name != HEADER[i])
        parts.append(
            f"columns out of order: column {position + 1} is {found}, expected {HEADER[position]}"
        )
    return "; ".join(parts)


def _domain_allowed(email: str, domains: Iterable[str]) -> bool:
    domain = email.rpartition("@")[2].lower()
    return any(domain == d or domain.endswith("." + d) for d in domains)


def _trim_trailing_empty(cells: list[str], keep: int = 0) -> list[str]:
    """`cells` without the empty cells Excel leaves after the last column (never fewer than `keep`)."""
    end = len(cells)
    while end > keep and not cells[end - 1].strip():
        end -= 1
    return cells[:end]


def _csv_error(exc: csv.Error, start: int) -> str:
    if "field limit" in str(exc):
        return ("a quoted cell starting on this line never ends (an unbalanced quote \"?): the rest "
                "of the file was read as one cell, so nothing after this line was checked; close or "
                "remove the quote")
    return f"not readable as CSV ({exc}); nothing after line {start} was checked"


def _spanned(start: int, end: int) -> str:
    return f" (this line's quoted cell runs on to line {end}: an unbalanced quote \"?)" if end > start else ""


def _pesel_problem(raw: str) -> tuple[str | None, str | None, bool]:
    """(valid PESEL, problem, whether Excel did it) for the pesel cell."""
    if _SCIENTIFIC_CELL.match(raw):
        return None, (f"PESEL {_shown(raw)} is a number in scientific notation: its last digits are lost"), True
    number, problem = check_pesel(raw)
    if problem is None and number is not None:
        return number, None, False
    digits = "".join(ch for ch in raw if ch not in " -\t")
    if problem is PeselProblem.LENGTH and len(digits) == 10 and _valid_pesel("0" + digits):
        return None, "PESEL must have 11 digits: it has 10, and a leading 0 would make it valid", True
    return None, _PESEL_REASONS[problem or PeselProblem.CHECKSUM], False


@dataclass
class _Lines:
    """What checking one line needs to know of the lines before it."""

    box: SecretBox
    email_domains: list[str]
    seen_album: dict[str, int] = field(default_factory=dict)
    seen_pesel: dict[str, int] = field(default_factory=dict)
    excel_count: int = 0  # lines whose PESEL Excel mangled

    def check(self, line_number: int, values: dict[str, str]) -> tuple[RegisterRow | None, list[str], int | None]:
        """(the row, or None with its problems, and which problem is a PESEL Excel mangled) for one line."""
        problems: list[str] = []
        for column, limit in MAX_LENGTHS.items():
            if len(values[column]) > limit:
                problems.append(f"{column} is longer than {limit} characters ({len(values[column])})")
        album = values["album"]
        if not album:
            problems.append("album is empty")
        elif album in self.seen_album:
            problems.append(f"duplicate album {_shown(album)} (first on line {self.seen_album[album]})")
        else:
            self.seen_album[album] = line_number
        pesel_hash, pesel_masked, excel_at = self._pesel(line_number, values["pesel"], problems)
        for name in ("first_name", "last_name"):
            if not values[name]:
                problems.append(f"{name} is empty")
        email = values["email"].lower()
        problems += _email_problems(values["email"], self.email_domains)
        for column, allowed in (("study_level", _LEVELS), ("status", _STATUSES)):
            if values[column] not in allowed:
                problems.append(f"{column} {_shown(values[column])} is not one of {', '.join(sorted(allowed))}")
        els_valid_until = _parse_date(values["els_valid_until"], "els_valid_until", problems)
        removed_on = _parse_date(values["removed_on"], "removed_on", problems)
        if values["status"] == StudentStatus.REMOVED and not values["removed_on"]:
            problems.append("removed_on is required when status is removed")
        if problems:
            return None, problems, excel_at
        canonical = "\x1f".join(
            [values[h] if h != "pesel" else (pesel_hash or "") for h in HEADER]
        ).replace(values["email"], email)
        return RegisterRow(
            album=album,
            pesel_hash=pesel_hash,
            pesel_masked=pesel_masked,
            first_name=values["first_name"],
            last_name=values["last_name"],
            email=email,
            study_level=values["study_level"],
            status=values["status"],
            els_number=values["els_number"] or None,
            els_valid_until=els_valid_until,
            removed_on=removed_on,
            digest=self.box.keyed_hash("register-row", canonical),
            line=line_number,
        ), [], None

    def _pesel(self, line_number: int, raw: str, problems: list[str]) -> tuple[str | None, str | None, int | None]:
        """(keyed hash, masked form, where in `problems` Excel's mangling is) of a PESEL cell."""
        if not raw:
            return None, None, None
        number, problem, by_excel = _pesel_problem(raw)
        if problem is not None or number is None:
            excel_at = len(problems) if by_excel else None
            self.excel_count += by_excel
            problems.append(problem or _PESEL_REASONS[PeselProblem.CHECKSUM])
            return None, None, excel_at
        pesel_hash = self.box.pesel_hash(number)
        if pesel_hash in self.seen_pesel:
            problems.append(
                f"same PESEL as line {self.seen_pesel[pesel_hash]} (a student is on one line only: "
                "for a student's new album, leave the old one out of the file and import with --sync)"
            )
        else:
            self.seen_pesel[pesel_hash] = line_number
        return pesel_hash, mask_pesel(number), None


_LEVELS = frozenset(level.value for level in StudyLevel)
_STATUSES = frozenset(status.value for status in StudentStatus)


def _email_problems(value: str, domains: list[str]) -> list[str]:
    email = value.lower()
    if not _EMAIL.match(email):
        return [f"e-mail {_shown(value)} is malformed"]
    if not _domain_allowed(email, domains):
        return [f"e-mail domain of {_shown(value)} is not a university domain ({', '.join(domains)})"]
    return []


def _control_problems(values: dict[str, str]) -> list[str]:
    """A NUL or a line break in a cell: nothing else said about the line is reliable."""
    problems = []
    for column in HEADER:
        control = _control_character(values[column])
        if control is not None:
            problems.append(f"{column} contains {control}: a cell must be one line of plain text")
    return problems


def _decoded(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RegisterImportError(
            [(line, "file is not UTF-8 (save it as CSV UTF-8); byte "
              f"0x{data[exc.start]:02x} at offset {exc.start}")]
        ) from exc


def _check_header(reader: Iterator[list[str]]) -> None:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RegisterImportError([(1, _csv_error(exc, 1))]) from None
    if header is None:
        raise RegisterImportError([(1, "file is empty")])
    # Excel saves "...,removed_on,," when cells right of the table were ever touched.
    header_problem = _header_problem(_trim_trailing_empty(header))
    if header_problem is not None:
        raise RegisterImportError([(1, header_problem)])


def parse_register(
    data: bytes, *, box: SecretBox, email_domains: list[str]
) -> list[RegisterRow]:
    """Validate the whole file; raise RegisterImportError listing every bad line."""
    reader = csv.reader(io.StringIO(_decoded(data), newline=""))
    _check_header(reader)
    problems: list[tuple[int, str]] = []
    rows: list[RegisterRow] = []
    lines = _Lines(box, email_domains)
    excel_first = -1  # the problem that gets the Excel hint
    previous_end = reader.line_num
    while True:
        # reader.line_num counts the file's lines: a quoted cell may hold line breaks.
        line_number = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append((line_number, _csv_error(exc, line_number)))
            break
        previous_end = end = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        record = _trim_trailing_empty(record, keep=len(HEADER))
        if len(record) != len(HEADER):
            problems.append((line_number, f"expected {len(HEADER)} columns, found {len(record)}"
                             + _spanned(line_number, end)))
            continue
        values = dict(zip(HEADER, (cell.strip() for cell in record), strict=True))
        if _CONTROL.search("".join(values.values())):
            spanned = _spanned(line_number, end)
            problems.extend((line_number, problem + spanned) for problem in _control_problems(values))
            continue
        row, line_problems, excel_at = lines.check(line_number, values)
        if excel_at is not None and excel_first < 0:
            excel_first = len(problems) + excel_at
        problems.extend((line_number, problem) for problem in line_problems)
        if row is not None:
            rows.append(row)
    if excel_first >= 0:  # once for the file, on the first line it concerns
        line, message = problems[excel_first]
        problems[excel_first] = (line, f"{message}; {_EXCEL_HINT.format(count=lines.excel_count)}")
    if problems:
        raise RegisterImportError(problems)
    return rows
