"""The paid-reply ledger: a reply is paid for once, saved before anything else, and reused."""

import json

import pytest

from daydream import documents, ledger
from daydream.prompts import Prompt, sha256_text
from tests.conftest import calls_made, first_draft


def test_a_new_prompt_is_paid_once_and_saved_with_the_prompt_before_it_is_returned(rt):
    member = first_draft(rt)
    prompt = documents.document_prompt(rt, member)
    first = ledger.answer(rt, member, prompt)
    saved = json.loads(rt.paths.reply_path(member.stage, member.gen_id, prompt.sha256).read_text())
    assert first.source == "called" and saved["text"] == first.completion.text
    assert saved["prompt"] == prompt.text and saved["prompt_sources"] == prompt.sources
    again = ledger.answer(rt, member, prompt)
    assert again.source == "saved" and again.completion == first.completion
    assert [c["gen_id"] for c in calls_made(rt)] == [member.gen_id]


def test_a_changed_prompt_gets_the_paid_record_back_and_costs_nothing(rt):
    member = first_draft(rt)
    paid = documents.document_prompt(rt, member)
    first = ledger.answer(rt, member, paid)
    restored = ledger.answer(rt, member, Prompt("another prompt", sha256_text("another prompt")))
    assert restored.source == "restored" and restored.prompt == paid and restored.completion == first.completion
    assert len(calls_made(rt)) == 1


def test_a_record_without_its_prompt_refuses_a_silent_second_payment(rt):
    member = first_draft(rt)
    prompt = documents.document_prompt(rt, member)
    ledger.answer(rt, member, prompt)
    path = rt.paths.reply_path(member.stage, member.gen_id, prompt.sha256)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in record.items() if k not in ledger.PROMPT_KEYS}))
    with pytest.raises(ledger.RepaymentRefused, match=rf"scripts/regenerate.py --data-root .* {member.gen_id}"):
        ledger.answer(rt, member, Prompt("changed", sha256_text("changed")))
    assert len(calls_made(rt)) == 1


def test_the_saved_reply_of_exactly_this_prompt_is_found(rt):
    member = first_draft(rt)
    prompt = documents.document_prompt(rt, member)
    assert ledger.saved_reply(rt.paths, member, prompt.sha256) is None
    done = ledger.answer(rt, member, prompt).completion
    assert ledger.saved_reply(rt.paths, member, prompt.sha256) == done
    assert ledger.earlier_replies(rt.paths, member, sha256_text("other")) != []
    assert ledger.earlier_replies(rt.paths, member, prompt.sha256) == []


def test_saved_texts_are_every_readable_reply_of_the_document_by_prompt_hash(rt):
    member = first_draft(rt)
    assert ledger.saved_texts(rt.paths, member.stage, member.gen_id) == {}
    prompt = documents.document_prompt(rt, member)
    first = ledger.answer(rt, member, prompt)
    broken = rt.paths.reply_path(member.stage, member.gen_id, "f" * 64)
    broken.write_text("{not json")
    assert ledger.saved_texts(rt.paths, member.stage, member.gen_id) == {prompt.sha256[:16]: first.completion.text}
