"""The built-in `offline` model: deterministic, local, free (SPEC §2).

It answers like a real model would for each stage, so every parser and report is exercised
without a network or a key: drafts carry `<thinking>`, staged `<essay-idea>` blocks and an
`<essay>` block; essays an `<essay>` block; evaluations a short judgement ending in a
`SCORE: n` line (n in 1..9, valid on both a 0-9 and a 1-10 scale). The same prompt, model and
replicate always give the same reply; replicates of one document (same prompt) get different
replies and scores, as a sampling model's would, so a rehearsal's replicate statistics are not
degenerate. Replicate 1 gets the reply it always had. `DAYDREAM_OFFLINE_LATENCY_S` makes each call take that long, to
rehearse a run's concurrency and resumption with calls in flight.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import time
from collections.abc import Callable

from daydream import stages

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOP = frozenset("""this that with from your their about into what when which will would
there these those have been must each more most only other some such than then they them
write essay draft concept concepts score stage block blocks line lines your text""".split())

_OPENERS = ("Consider how", "It is striking that", "One way to see it:", "Suppose that",
            "The useful question is whether", "Notice that")
_LINKS = ("borrows its structure from", "can be read as a case of", "quietly depends on",
          "turns out to mirror", "puts pressure on", "offers a test for")


def _seed(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()


_TAG = re.compile(r"<[^>]+>")
_PHRASE = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+){1,3}\b")
_TERM = re.compile(r"\b[a-z]+(?:-[a-z]+){1,3}\b")


def _keywords(prompt: str) -> list[str]:
    """The prompt's topics: Title Case phrases and hyphenated terms (concept names and ids),
    else its longer words, so replies talk about the concepts the prompt is about."""
    text = _TAG.sub(" ", prompt)
    seen: dict[str, str] = {}
    for phrase in _PHRASE.findall(text) + [t.replace("-", " ").title() for t in _TERM.findall(text)]:
        seen.setdefault(phrase.lower(), phrase)
    if len(seen) < 2:
        for word in _WORD.findall(text):
            if word.lower() not in _STOP:
                seen.setdefault(word.lower(), word.lower())
    return list(seen.values()) or ["idea", "pattern"]


def _sentences(words: list[str], seed: bytes, count: int) -> list[str]:
    out = []
    for i in range(count):
        first = seed[i % 32] % len(words)
        second = (first + 1 + seed[(i + 7) % 32] % max(1, len(words) - 1)) % len(words)
        a, b = words[first], words[second]
        opener, link = _OPENERS[seed[(i + 3) % 32] % len(_OPENERS)], _LINKS[seed[(i + 5) % 32] % len(_LINKS)]
        out.append(f"{opener} {a} {link} {b}.")
    return out


def _paragraph(words: list[str], seed: bytes, count: int) -> str:
    return " ".join(_sentences(words, seed, count))


def _lines(words: list[str], seed: bytes, count: int) -> str:
    return "\n".join(_sentences(words, seed, count))


def draft_reply(words: list[str], seed: bytes) -> str:
    """Idea and essay blocks one sentence a line, so a draft parses to at least 3 lines."""
    return "\n".join([
        "<thinking>", _paragraph(words, seed[1:], 2), "</thinking>",
        '<essay-idea stage="1">', _lines(words, seed[2:], 3), "</essay-idea>",
        '<essay-idea stage="2">', _lines(words, seed[3:], 4), "</essay-idea>",
        "<essay>", _lines(words, seed[4:], 5), "</essay>",
    ])


def essay_reply(words: list[str], seed: bytes) -> str:
    body = "\n\n".join(_paragraph(words, seed[i:], 4) for i in range(3))
    return "\n".join(["<thinking>", _paragraph(words, seed[5:], 2), "</thinking>",
                      "<essay>", body, "</essay>"])


def evaluation_reply(words: list[str], seed: bytes) -> str:
    score = 1 + seed[0] % 9
    return "\n".join(["Assessment:", _paragraph(words, seed[1:], 3), "",
                      f"Strength: {_sentences(words, seed[2:], 1)[0]}", f"SCORE: {score}"])


def reply_function(name: str) -> Callable[[list[str], bytes], str]:
    """A stage's `offline_reply`: a function of this module, or `module:function` for a stage an
    experiment registers itself (`stages.STAGES_ENV`)."""
    if ":" not in name:
        return globals()[name]
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def reply_text(prompt: str, *, stage: str, model: str, replicate: int = 1) -> str:
    """The reply to `prompt` for this replicate of the document, at once (no latency); the
    stage registry names the reply function of each stage. The cohort checkpoint uses it for
    realistic parent texts."""
    reply = reply_function(stages.get(stage).offline_reply)
    parts = (model, stage, prompt) if replicate == 1 else (model, stage, prompt, f"replicate {replicate}")
    return reply(_keywords(prompt), _seed(*parts))


def generate(prompt: str, *, stage: str, model: str, replicate: int = 1) -> tuple[str, dict]:
    """The reply text and its usage (`prompt_tokens`, `completion_tokens`, `total_tokens`)."""
    latency = float(os.environ.get("DAYDREAM_OFFLINE_LATENCY_S") or 0)
    if latency > 0:
        time.sleep(latency)
    text = reply_text(prompt, stage=stage, model=model, replicate=replicate)
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return text, usage
