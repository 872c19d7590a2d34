"""Which FAQ entry a support e-mail gets, or none (a person answers): the QA review's cases.

Each case goes the way `core.support.mailbox_rules` takes a mail: the sender's own words
(`core.support.mail_text.question_text`), their language (`Faq.language`), then `Faq.match`
(core.understanding, trained from config/intents.toml).
"""

from __future__ import annotations

import pytest

from core.support.faq import Faq
from core.support.mail_text import is_forward, own_text, question_text, strip_signature


def _answer(faq: Faq, subject: str, body: str) -> tuple[str, str | None]:
    """(language, FAQ entry id or None) for one mail, as the mailbox decides it."""
    question = question_text(subject, body)
    language = faq.language(question, "pl")
    match = faq.match(question, language)
    return language, match.entry.id if match else None


NO_ANSWER = None
CASES: list[tuple[str, str, str | None]] = [
    # 1. Not about the mobile student ID: a generic phrase alone is not enough.
    ("", "nie dostałem jeszcze maila w sprawie stypendium rektora", NO_ANSWER),
    ("", "Zgubiłem plastikową legitymację, jak wyrobić duplikat?", NO_ANSWER),
    ("", "Czy parking przy wydziale jest bezpłatny?", NO_ANSWER),
    ("", "My bike was stolen near the library", NO_ANSWER),
    ("", "Who can I talk to about my scholarship?", NO_ANSWER),
    ("", "Room 204 was not found on the campus map.", NO_ANSWER),
    ("", "W USOS nie istnieje mój przedmiot", NO_ANSWER),
    ("", "Is there a fee for the dormitory?", NO_ANSWER),
    ("", "Jak przedłużyć plastikową legitymację?", NO_ANSWER),
    ("", "Kiedy zaczyna się nowy semestr?", NO_ANSWER),
    ("", "Jak dodać przedmiot w USOS?", NO_ANSWER),
    ("", "Nie mogę się zalogować do USOS", NO_ANSWER),
    ("", "Steps to apply for the dormitory?", NO_ANSWER),
    # ... and the same phrases about us still answered.
    ("", "Dzień dobry, nie dostałem maila z kodem aktywacyjnym.", "email_not_arrived"),
    ("", "Hello, the activation email did not arrive. I checked spam.", "email_not_arrived"),
    ("", "Zgubiłem telefon, co robić?", "new_phone"),
    ("", "I lost my phone yesterday, what now?", "new_phone"),
    ("", "My phone was stolen, what about my mLegitymacja?", "new_phone"),
    ("", "Kupiłem nowy telefon, jak przenieść mLegitymację?", "new_phone"),
    ("", "Ile kosztuje mLegitymacja?", "cost"),
    ("", "Czy mLegitymacja jest bezpłatna?", "cost"),
    ("Price", "Hello, how much does it cost? Is it free of charge?", "cost"),
    ("", "mLegitymacja nie istnieje - taki komunikat widzę w aplikacji", "does_not_exist"),
    ("", "The app says mLegitymacja does not exist", "does_not_exist"),
    ("", "Jestem doktorantem, czy mogę mieć mLegitymację?", "not_eligible"),
    ("", "Who can get a mobile student ID?", "not_eligible"),
    ("", "Zmieniłam nazwisko, co z mLegitymacją?", "changed_data"),
    ("", "Jak aktywować mLegitymację w mObywatelu?", "how_to_activate"),
    ("", "Nie mogę się zalogować do mObywatela", "mobywatel_app"),
    ("Status wniosku", "Jaki jest status wniosku? Czy mam już legitymację?", "status"),
    # 2. Words in between and another order.
    ("", "Kod aktywacyjny mi wygasł, co teraz?", "code_expired"),
    ("", "Wygasł mi kod, co teraz?", "code_expired"),
    ("", "Mój kod wygasł, minęło 30 dni. Co mam zrobić?", "code_expired"),
    ("", "The activation code has expired", "code_expired"),
    ("Re: Kod", "Kod mi wygasł, co teraz?\n\n> Dzień dobry,\n> nie dostałem maila z kodem aktywacyjnym.\n",
     "code_expired"),
    ("Re: Kod", "Kod mi wygasł, co teraz?\n\nW dniu pon., 5 paź 2026 o 10:00 Biuro <biuro@example.edu.pl>\n"
     "napisał(a):\nDzień dobry, nie dostałem maila z kodem aktywacyjnym.\n", "code_expired"),
    # 3. A signature decides neither the language nor the answer.
    ("", "How do I renew my student ID?\n\nRegards,\nPaweł Łęcki\nPolitechnika Łódzka", "renewal"),
    ("", "How do I renew my student ID?\n\nPaweł Łęcki / Politechnika Łódzka", "renewal"),
    ("", "How do I renew my student ID?\n\nSent from my iPhone", "renewal"),
    ("", "Jak przedłużyć mLegitymację?\n\nWysłane z iPhone'a", "renewal"),
    ("", "Jak przedłużyć mLegitymację na nowy semestr?\n\n-- \nJan Kowalski\niPhone 15, Android fan", "renewal"),
    ("", "Nie dostałem maila z kodem.\nPozdrawiam, Paweł\nTel. 600 000 000 (Android)", "email_not_arrived"),
    # 4. Outlook and forwarded quotes are not the question.
    ("RE: Pytanie", "Kod mi wygasł, co teraz?\n\nFrom: Biuro <biuro@example.edu.pl>\nSent: Monday, October 5, 2026\n"
     "To: jan@example.org\nSubject: nie dostałem maila\n\nZgubiłem telefon.\n", "code_expired"),
    ("ODP: Pytanie", "Kod mi wygasł, co teraz?\n\nOd: Biuro <biuro@example.edu.pl>\nWysłano: poniedziałek\n"
     "Do: jan@example.org\nTemat: telefon\n\nZgubiłem telefon.\n", "code_expired"),
    ("RE: Pytanie", "Dziękuję, a kod mi wygasł.\n\n-----Original Message-----\nFrom: x\nZgubiłem telefon\n",
     "code_expired"),
    ("Re: Question", "My code expired, what now?\n\nOn Mon, 5 Oct 2026 at 10:00, Help <help@example.edu.pl> wrote:\n"
     "I lost my phone\n", "code_expired"),
    ("Fwd: Nie dostałem maila z kodem", "Proszę o pomoc.\n\n---------- Forwarded message ---------\n"
     "From: Jan <jan@example.org>\nDzień dobry, nie dostałem maila z kodem aktywacyjnym.\n", NO_ANSWER),
    ("Nie dostałem maila z kodem", "FYI\n\n---------- Forwarded message ---------\nFrom: Jan <jan@example.org>\n"
     "Dzień dobry, nie dostałem maila z kodem aktywacyjnym.\n", NO_ANSWER),
    ("PD: Kod wygasł", "Kod mi wygasł.", NO_ANSWER),
    # 5. Polish inflection.
    ("", "nie mam numeru PESEL", "not_eligible"),
    ("", "działa na iPhonie", "ios_android"),
    ("", "Czy mLegitymacja działa na iPhonie?", "ios_android"),
    ("", "Czy aplikacja działa na Androidzie?", "ios_android"),
]


@pytest.mark.parametrize(("subject", "body", "expected"), CASES, ids=[c[1][:50] for c in CASES])
def test_mail_question_gets_the_right_faq_entry_or_none(faq: Faq, subject: str, body: str,
                                                        expected: str | None) -> None:
    assert _answer(faq, subject, body)[1] == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("How do I renew my student ID?\n\nPaweł Łęcki / Politechnika Łódzka", "en"),
    ("Hello, my code expired. Łukasz Żółć", "en"),
    ("Kod aktywacyjny mi wygasł, co teraz?", "pl"),
    ("Kod mi wygasl, co teraz?", "pl"),  # no Polish letters at all
    ("działa na iPhonie", "pl"),
    ("Nie dostałem maila", "pl"),
    ("The activation email did not arrive", "en"),
])
def test_language_is_told_by_words_not_by_one_letter(faq: Faq, text: str, expected: str) -> None:
    assert faq.language(text, default="pl") == expected


def test_language_tie_gives_the_default(faq: Faq) -> None:
    assert faq.language("123", default="en") == "en"
    assert faq.language("", default="pl") == "pl"


@pytest.mark.parametrize(("body", "expected"), [
    ("Pytanie?\n-- \nJan Kowalski", "Pytanie?"),
    ("Pytanie?\n--\nJan Kowalski", "Pytanie?"),
    ("Question?\n\nSent from my iPhone", "Question?"),
    ("Pytanie?\n\nWysłane z iPhone'a", "Pytanie?"),
    ("Pytanie?\nPozdrawiam,\nJan Kowalski\nWydział Fizyki", "Pytanie?"),
    ("Pytanie?\nZ poważaniem\nJan", "Pytanie?"),
    ("Question?\nBest regards, Jan Kowalski", "Question?"),
    ("Question?\nThanks,\nJan", "Question?"),
    # A sentence that starts like a closing is not one.
    ("Thanks, the code expired yesterday.", "Thanks, the code expired yesterday."),
    # A closing far from the end is not a signature.
    ("Pozdrawiam\n" + "\n".join(f"linia {n}" for n in range(8)), "Pozdrawiam\n" +
     "\n".join(f"linia {n}" for n in range(8))),
])
def test_signature_is_cut(body: str, expected: str) -> None:
    assert strip_signature(body) == expected


def test_quote_headers_end_the_own_text() -> None:
    assert own_text("Mine\n> quoted\nmore mine") == "Mine\nmore mine"
    assert own_text("Mine\nOn Mon, 5 Oct 2026, Jan <j@x.pl> wrote:\ntheirs") == "Mine"
    assert own_text("Mine\nDnia 05.10.2026 Jan pisze:\ntheirs") == "Mine"
    assert own_text("Mine\n-----Original Message-----\ntheirs") == "Mine"
    assert own_text("Mine\n\nFrom: Jan\nSent: today\ntheirs") == "Mine\n"
    # "Od:" in a sentence, with no Outlook header after it, is the student's own text.
    assert own_text("Od: kiedy działa?\nDziękuję") == "Od: kiedy działa?\nDziękuję"


@pytest.mark.parametrize(("subject", "body", "forward"), [
    ("Fwd: kod", "", True),
    ("FW: kod", "", True),
    ("PD: kod", "", True),
    ("Re: Fwd: kod", "", True),
    ("kod", "x\n-------- Forwarded Message --------\ny", True),
    ("kod", "x\n---------- Wiadomość przekazana dalej ---------\ny", True),
    ("kod", "x\nBegin forwarded message:\ny", True),
    ("Re: kod", "x\n-----Original Message-----\ny", False),
    ("Fwd jest OK?", "", False),
])
def test_forward_is_recognised(subject: str, body: str, forward: bool) -> None:
    assert is_forward(subject, body) is forward


def test_forward_gives_no_question() -> None:
    assert question_text("Fwd: Nie dostałem maila z kodem", "Dzień dobry, nie dostałem maila z kodem.") == ""


# --- FAQ questions the audit found unanswered ------------------------------------------------------

@pytest.mark.parametrize(("question", "expected"), [
    ("Ukradli mi telefon", "new_phone"),
    ("Ukradziono mi telefon z mLegitymacją", "new_phone"),
    ("Mój kod QR jest już nieważny", "code_expired"),
    ("Kod aktywacyjny jest nieważny", "code_expired"),
    ("I didn't activate within 30 days, what now?", "code_expired"),
    ("I did not activate it in time", "code_expired"),
    ("The email with the QR code never came.", "email_not_arrived"),
    ("The activation e-mail never arrived", "email_not_arrived"),
    ("My surname changed, mLegitymacja shows the old one", "changed_data"),
    ("My name changed, the mobile ID shows my old name", "changed_data"),
    # No new false positives.
    ("Ukradli mi rower spod akademika", None),
    ("My surname changed, how do I update it in the dean's office records?", None),
    ("My bike was stolen and never came back", None),
    ("Mój bilet miesięczny jest już nieważny", None),
])
def test_audit_questions_reach_the_right_faq_entry(faq: Faq, question: str, expected: str | None) -> None:
    lang = faq.language(question, "pl")
    match = faq.match(question, lang)
    assert (match.entry.id if match else None) == expected
