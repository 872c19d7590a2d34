"""Generated (fictional) students for the demo register, tests and benchmarks.

PESELs are built from the published rules (date with century in the month, weights
1-3-7-9, check digit), so they validate, but they belong to nobody we know of: the names are
drawn from short lists at random and the serial numbers are random.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from datetime import date, timedelta

from core.students.register_csv import HEADER

__all__ = ["DEMO_DOMAIN", "generate_rows", "make_pesel", "rows_to_csv"]

DEMO_DOMAIN = "student.example.edu.pl"
_WEIGHTS = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
_FIRST_F = ["Anna", "Zofia", "Maja", "Julia", "Zuzanna", "Hanna", "Łucja", "Aleksandra", "Oliwia", "Natalia"]
_FIRST_M = ["Jan", "Antoni", "Franciszek", "Jakub", "Aleksander", "Szymon", "Filip", "Mikołaj", "Wojciech", "Kacper"]
_LAST = [
    "Nowak", "Wiśniewsk", "Wójcik", "Kowalczyk", "Kamińsk", "Lewandowsk", "Zielińsk", "Szymańsk", "Woźniak", "Dąbrowsk",
]
_ASCII = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "acelnoszzACELNOSZZ")


def make_pesel(born: date, serial: int, female: bool) -> str:
    """A PESEL that validates: YYMMDD (century in the month), serial, sex digit, check digit."""
    century_offset = {18: 80, 19: 0, 20: 20, 21: 40, 22: 60}[born.year // 100]
    sex_digit = (serial % 5) * 2 + (0 if female else 1)
    body = f"{born.year % 100:02d}{born.month + century_offset:02d}{born.day:02d}{serial % 1000:03d}{sex_digit}"
    check = (10 - sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 10) % 10
    return body + str(check)


def _surname(stem: str, female: bool) -> str:
    if stem.endswith("sk"):
        return stem + ("a" if female else "i")
    return stem


def generate_rows(count: int, *, seed: int = 2026, start_album: int = 100001) -> Iterator[dict[str, str]]:
    """`count` register rows covering every study level, status and ELS edge."""
    rng = random.Random(seed)
    levels = ["first_cycle"] * 5 + ["second_cycle"] * 3 + ["long_cycle"] * 2 + ["doctoral", "postgraduate"]
    statuses = ["active"] * 14 + ["removed", "graduated", "suspended"]
    used: set[str] = set()
    for index in range(count):
        album = str(start_album + index)
        female = rng.random() < 0.55
        first = rng.choice(_FIRST_F if female else _FIRST_M)
        last = _surname(rng.choice(_LAST), female)
        while True:  # a register never has one PESEL twice
            born = date(1996, 1, 1) + timedelta(days=rng.randrange(0, 365 * 12))
            pesel = make_pesel(born, rng.randrange(0, 1000), female)
            if pesel not in used:
                used.add(pesel)
                break
        level = levels[index % len(levels)] if index < 40 else rng.choice(levels)
        status = statuses[index % len(statuses)] if index < 40 else rng.choice(statuses)
        has_pesel = index % 23 != 22
        els_until = rng.choice(
            [date(2026, 10, 31), date(2027, 3, 31), date(2027, 10, 31), date(2026, 11, 30), date(2025, 10, 31)]
        )
        local = f"{first}.{last}.{album}".translate(_ASCII).lower()
        yield {
            "album": album,
            "pesel": pesel if has_pesel else "",
            "first_name": first,
            "last_name": last,
            "email": f"{local}@{DEMO_DOMAIN}",
            "study_level": level,
            "status": status,
            "els_number": f"ELS-{rng.randrange(10**7, 10**8)}",
            "els_valid_until": els_until.isoformat(),
            "removed_on": "2026-10-15" if status == "removed" else "",
        }


def rows_to_csv(rows: Iterator[dict[str, str]] | list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(HEADER), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
