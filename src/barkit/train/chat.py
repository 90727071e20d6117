"""Chats to tokens with the loss on assistant tokens only, for any Hugging Face chat template.

A template with `{% generation %}` markers gives the assistant mask directly. Released models' templates
(Olmo 2, Tulu 3, Llama 3, Qwen 2.5 / 3, Mistral) have none, so each assistant turn is located by rendering:

1. Prefix rendering (open-instruct's method): the turn is what rendering the conversation up to it adds to
   rendering the conversation before it with the generation prompt, i.e. exactly what the model generates
   after that prompt: its content and end-of-turn token. Valid when both renders are prefixes of the whole.
2. Templates that render earlier turns differently once later turns follow (Qwen 3 drops the empty think
   block from past turns; Mistral moves the system prompt into the last user turn) fail that check. Then the
   turn is located in the full render by what changes when only its content changes, and widened by the
   turn frame (text between the generation prompt and the content, and the end-of-turn text after it) that
   the template gives a one-turn chat. The mask is over the conversation as the template renders it.

A template that drops an earlier turn's content, or whose end-of-turn text is not where the frame says,
cannot be masked this way: it is refused with one line naming the file and row.
"""

from __future__ import annotations

import re
from functools import lru_cache

from barkit.errors import BarkitError

_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")
ROLES = ("system", "user", "assistant", "tool")
_PROBE = "barkit probe answer"


def check_messages(where: str, messages: object, need_assistant: bool) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise BarkitError(f"{where}: 'messages' must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BarkitError(f"{where}: each message needs a role ({'/'.join(ROLES)}) and string content")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise BarkitError(f"{where}: chat has no assistant turn (nothing to train on)")
    return messages


def check_template(tokenizer) -> None:
    if not tokenizer.chat_template:
        raise BarkitError("the model's tokenizer has no chat template, so chats cannot be rendered; add one")


def has_generation_markers(tokenizer) -> bool:
    return bool(_GENERATION_TAG.search(tokenizer.chat_template or ""))


def render(tokenizer, messages: list[dict], generation_prompt: bool, kwargs: dict) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         **kwargs)


def _prefix_span(messages: list[dict], i: int, text: str, tokenizer, kwargs: dict) -> tuple[int, int] | None:
    """Turn i's span by prefix rendering, or None if the template re-renders this part of the history."""
    before = render(tokenizer, messages[:i], True, kwargs)
    upto = render(tokenizer, messages[:i + 1], False, kwargs)
    if upto.startswith(before) and text.startswith(upto):
        return len(before), len(upto.rstrip())
    return None


def _changed(text: str, other: str) -> tuple[int, int]:
    """[start, end) in `text` of the one stretch where `text` and `other` differ (common prefix and suffix)."""
    start = 0
    limit = min(len(text), len(other))
    while start < limit and text[start] == other[start]:
        start += 1
    tail = 0
    while tail < limit - start and text[-1 - tail] == other[-1 - tail]:
        tail += 1
    return start, len(text) - tail


@lru_cache(maxsize=16)
def _frame(tokenizer, template: str) -> tuple[str, str]:
    """(lead, trail): the text a template puts between its generation prompt and an assistant turn's content,
    and after the content up to the end-of-turn token, read off a one-turn chat."""
    chat = [{"role": "user", "content": "barkit probe question"}, {"role": "assistant", "content": _PROBE}]
    before, upto = render(tokenizer, chat[:1], True, {}), render(tokenizer, chat, False, {}).rstrip()
    at = upto.find(_PROBE, len(before))
    if not upto.startswith(before) or at < 0:
        return "", ""
    return upto[len(before):at], upto[at + len(_PROBE):]


def _located_span(where: str, messages: list[dict], i: int, text: str, tokenizer, kwargs: dict) -> tuple[int, int]:
    """Turn i's span in the full render `text` for a template that re-renders history (see module doc)."""
    emptied = [dict(m, content="") if k == i else m for k, m in enumerate(messages)]
    start, end = _changed(text, render(tokenizer, emptied, False, kwargs))
    content = messages[i]["content"]
    if content and content.strip() and start >= end:
        raise BarkitError(f"{where}: the chat template drops assistant turn {i + 1} from the conversation once "
                          "later turns follow, so it cannot be trained on; add {% generation %} markers to it")
    for at in range(max(0, end - len(content)), start + 1):  # the verbatim content covering what changed
        if content and text.startswith(content, at):
            start, end = at, at + len(content)
            break
    lead, trail = _frame(tokenizer, tokenizer.chat_template)
    if lead and text[:start].endswith(lead):
        start -= len(lead)
    if not text.startswith(trail, end):
        raise BarkitError(f"{where}: the chat template renders assistant turn {i + 1} differently once later "
                          "turns follow and its end-of-turn text cannot be located; add {% generation %} "
                          "markers to it")
    return start, end + len(trail)


def assistant_spans(where: str, messages: list[dict], tokenizer, kwargs: dict) -> tuple[str, list]:
    """(rendered chat, character span of each assistant turn) for a template without generation markers."""
    text = render(tokenizer, messages, False, kwargs)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            spans.append(_prefix_span(messages, i, text, tokenizer, kwargs)
                         or _located_span(where, messages, i, text, tokenizer, kwargs))
    return text, spans


def masked_tokens(text: str, spans: list, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of `text` and 1 for each token that lies inside an assistant span."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(start <= a and b <= end and b > a for start, end in spans)) for a, b in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def assistant_mask(where: str, messages: list[dict], tokenizer, kwargs: dict) -> tuple[list[int], list[int]]:
    """(token ids of the rendered chat, 1 on each assistant token: content and end-of-turn)."""
    try:
        if has_generation_markers(tokenizer):
            enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True, **kwargs)
            ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        else:
            ids, mask = masked_tokens(*assistant_spans(where, messages, tokenizer, kwargs), tokenizer)
    except BarkitError:
        raise
    except Exception as exc:  # jinja errors surface as several exception types
        raise BarkitError(f"{where}: chat template failed ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from None
    if not any(mask):
        raise BarkitError(f"{where}: the chat template marked no assistant tokens")
    return ids, mask
