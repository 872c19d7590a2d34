"""Generated test data: settings, an application context, students, credentials, chat links.

Plain functions without pytest, so that `bench/` builds its data the same way the tests do
without importing a test module. Every PESEL here is generated (core.students.demo_register.make_pesel).
"""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.app.clock import FixedClock, RandomSource
from core.app.context import AppContext
from core.app.settings import Settings, load_settings
from core.credentials import service
from core.security.secrets_box import SecretBox
from core.storage.db import unit_of_work
from core.storage.models import ChatLink, Student
from core.students.demo_register import make_pesel
from core.students.pesel import mask_pesel

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
UNIVERSITY_DOMAIN = "student.example.edu.pl"


# --- settings and context ----------------------------------------------------------------

def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Production settings on a SQLite file under `tmp_path`; `overrides` as load_settings takes them."""
    values: dict[str, Any] = {
        "mode": "production",
        "secret_key": TEST_SECRET,
        "var_dir": tmp_path / "var",
        "database_url": f"sqlite:///{tmp_path / 'var' / 'test.db'}",
    }
    values.update(overrides)
    return load_settings(**values)


class SeededRandom(RandomSource):
    """Reproducible codes for tests."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        super().__init__(choice=rng.choice)


def build_ctx(settings: Settings, engine: Engine, clock: FixedClock) -> AppContext:
    return AppContext(settings=settings, engine=engine, clock=clock, random=SeededRandom())


# --- students ----------------------------------------------------------------------------

_counter = iter(range(1, 10**6))


def student_pesel(n: int, female: bool = False) -> str:
    """A valid, generated PESEL; `n` makes it distinct."""
    return make_pesel(date(2001, 1, 1 + n % 28), serial=100 + n, female=female)


def wrong_pesels(right: str, count: int) -> list[str]:
    """Valid PESELs of the same birth date as `right`, other serials: what an attacker would try."""
    born = date(2000 + int(right[:2]), int(right[2:4]) - 20, int(right[4:6]))
    return [p for p in (make_pesel(born, serial=900 + n, female=False) for n in range(count + 1)) if p != right][:count]


def add_student(session: Session, box: SecretBox, **overrides: Any) -> tuple[Student, str]:
    """Insert a student; returns it with its clear (generated) PESEL for the test to type."""
    n = next(_counter)
    pesel = overrides.pop("pesel", student_pesel(n))
    now = datetime(2026, 9, 1, tzinfo=UTC)
    values: dict[str, Any] = {
        "album": str(500000 + n),
        "first_name": "Anna",
        "last_name": "Testowa",
        "email": f"anna.testowa.{n}@{UNIVERSITY_DOMAIN}",
        "study_level": "first_cycle",
        "status": "active",
        "els_number": f"ELS-{n:08d}",
        "els_valid_until": date(2027, 3, 31),
        "removed_on": None,
        "row_digest": "x",
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    if pesel:
        values.setdefault("pesel_hash", box.pesel_hash(pesel))
        values.setdefault("pesel_masked", mask_pesel(pesel))
    student = Student(**values)
    session.add(student)
    session.flush()
    return student, pesel


# --- credentials and chats ---------------------------------------------------------------

def issue(ctx: AppContext, **student: Any) -> tuple[int, int]:
    """A student in the register and a credential requested for them: (student id, credential id)."""
    with unit_of_work(ctx.engine) as session:
        row, _ = add_student(session, ctx.box, **student)
        credential = service.request_credential(ctx, session, row, channel="console", actor="student")
        return row.id or 0, credential.id or 0


def link_chat(ctx: AppContext, student_id: int, language: str = "pl", account_id: str = "4242", *,
              channel: str = "telegram", blocked_at: datetime | None = None) -> None:
    """A chat bound to the student, as the chat's binding code would leave it."""
    with unit_of_work(ctx.engine) as session:
        session.add(ChatLink(channel=channel, account_id=account_id, student_id=student_id,
                             language=language, bound_at=ctx.clock.now(), blocked_at=blocked_at))


# --- mails -------------------------------------------------------------------------------

_ACTIVATION_CODE = re.compile(r"(?:Kod aktywacyjny|Activation code): (\S+)")


def activation_code(text: str) -> str:
    """The activation code an activation e-mail (either language) gives the student to type."""
    found = _ACTIVATION_CODE.search(text)
    assert found, "the activation e-mail carries its code"
    return found.group(1)
