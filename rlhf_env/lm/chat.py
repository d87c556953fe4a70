"""Prompts as conversations: chat templates, stop tokens and truncation, written once.

A prompt is a string or a list of chat messages (``{"role": ..., "content": ...}``).
:class:`PromptEncoder` turns prompts and responses into the token ids one model reads,
the way it was trained to read them:

* **Chat template.** A tokenizer with a chat template (``tokenizer.chat_template``) gets
  it applied, with the generation prompt, wherever a policy samples, scores or is
  trained, and wherever a reward model built on it scores (``chat_template=None``, the
  default, uses it when there is one; ``False`` turns it off for base models; ``True``
  requires one). The rendered text is tokenized without adding special tokens, as TRL
  does, so a template that writes its own BOS gets exactly one. Without a template the
  prompt's text is tokenized as it is (special tokens added as the tokenizer does).
* **Strings and messages.** A list of messages is used as given. A string in HH-RLHF's
  dialogue format (``"\\n\\nHuman: ... \\n\\nAssistant: ... \\n\\nHuman: ...
  \\n\\nAssistant:"``) is read as its turns (:func:`as_messages`); any other string is one
  user message. Without a template a list of messages is written in that dialogue format
  (:func:`messages_to_text`).
* **Stop tokens.** Every id of ``generation_config.eos_token_id`` (an int or a list),
  the tokenizer's EOS and the template's end-of-turn token end a response
  (:attr:`PromptEncoder.stop_ids`). A complete response is scored as its tokens followed
  by :attr:`PromptEncoder.terminator`, the token the model emits there: the template's
  end of the assistant turn (``<|im_end|>``, ``<end_of_turn>``, ``</s>``), else the EOS.
* **Boundaries.** A response's tokens are what follows the common prefix of the encoded
  prompt and the encoded prompt + response, so a response whose first characters merge
  with the prompt's last token is scored on the merged token.
* **Truncation.** A prompt longer than its limit is cut from the left but keeps its
  *head*: the leading special tokens (BOS) and, with a template, the template's fixed
  opening (its default system turn and the first user header), so a cut prompt still
  starts the way every prompt the model saw started.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rlhf_env.errors import InvalidArgumentError

__all__ = ["Message", "Prompt", "as_messages", "messages_to_text", "prompt_key",
           "PromptEncoder", "model_stop_ids", "special_ids"]

Message = Mapping[str, str]
Prompt = str | Sequence[Message]

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}
_SENTINEL = "RLHFENVSENTINEL"


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """``prompt`` as a list of chat messages (see the module docstring).

    An HH-style dialogue string becomes its turns (a trailing empty ``Assistant:`` turn,
    the generation prompt, is dropped; contents are stripped of surrounding white space);
    any other string is one user message.
    """
    if isinstance(prompt, str):
        parts = _TURN.split(prompt)
        if len(parts) < 3:
            return [{"role": "user", "content": prompt}]
        head, out = parts[0].strip(), []
        for who, text in zip(parts[1::2], parts[2::2]):
            out.append({"role": _ROLES[who], "content": text.strip()})
        if out and out[-1]["role"] == "assistant" and not out[-1]["content"]:
            out.pop()
        if head:
            if out and out[0]["role"] == "user":
                out[0] = {"role": "user", "content": f"{head}\n\n{out[0]['content']}"}
            else:
                out.insert(0, {"role": "user", "content": head})
        return out
    if isinstance(prompt, Sequence) and prompt and all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise InvalidArgumentError(
        f"a prompt is a string or a non-empty list of {{'role': str, 'content': str}} messages, "
        f"got {str(prompt)[:80]!r}")


def messages_to_text(messages: Sequence[Message]) -> str:
    """Messages in HH-RLHF's dialogue format, ending with the ``\\n\\nAssistant:`` cue."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    text = "".join(f"\n\n{names.get(m['role'], m['role'].title())}: {m['content']}"
                   for m in messages)
    return text + "\n\nAssistant:"


def prompt_key(prompt: Prompt) -> str:
    """A hashable key for a prompt (the string itself, or the messages as JSON)."""
    return prompt if isinstance(prompt, str) else json.dumps(as_messages(prompt),
                                                             sort_keys=True)


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def special_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's special tokens: the named ones (BOS, EOS, pad, ...) and every added
    token marked special (chat markers such as ``<|im_end|>`` or ``<end_of_turn>``)."""
    out = set(int(i) for i in getattr(tokenizer, "all_special_ids", []))
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            out.add(int(i))
    return out


def model_stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a response: ``generation_config.eos_token_id`` (int or list), then
    ``config.eos_token_id``, then the tokenizer's EOS, without repeats."""
    gen = getattr(model, "generation_config", None)
    found = (_ids(getattr(gen, "eos_token_id", None)) + _ids(getattr(model.config, "eos_token_id",
                                                                     None))
             + _ids(tokenizer.eos_token_id))
    return list(dict.fromkeys(found))


class PromptEncoder:
    """How one tokenizer encodes prompts and responses; see the module docstring.

    Args:
        tokenizer: the model's tokenizer (it needs an EOS token).
        stop_ids: ids that end a response besides the tokenizer's EOS and the template's
            end of turn (usually :func:`model_stop_ids`).
        chat_template: None (use the tokenizer's when it has one), True (require it) or
            False (raw text).
    """

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int] = (), *,
                 chat_template: bool | None = None) -> None:
        if tokenizer.eos_token_id is None:
            raise InvalidArgumentError("the tokenizer has no eos_token; set one before use")
        if chat_template not in (None, True, False):
            raise InvalidArgumentError(
                f"chat_template must be None, True or False, got {chat_template!r}")
        has = bool(getattr(tokenizer, "chat_template", None))
        if chat_template and not has:
            raise InvalidArgumentError(
                f"chat_template=True, but the tokenizer ({type(tokenizer).__name__}, "
                f"{getattr(tokenizer, 'name_or_path', '') or 'built in memory'}) has no chat "
                "template: pass chat_template=None or False, or set tokenizer.chat_template")
        self.tokenizer = tokenizer
        self.use_template = has if chat_template is None else bool(chat_template)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)
        self.bos_id = int(tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                          else self.eos_id)
        self.special = special_ids(tokenizer)
        turn_end = self._template_turn_end() if self.use_template else None
        self.terminator = turn_end if turn_end is not None else self.eos_id
        stops = [self.terminator, *map(int, stop_ids), self.eos_id]
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys(stops))
        self.head: tuple[int, ...] = tuple(self._template_head()) if self.use_template else ()
        self._cache: dict[str, tuple[int, ...]] = {}

    # -- templates -----------------------------------------------------------------------
    def render(self, messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
        """The chat template applied to ``messages`` (text, not tokens)."""
        try:
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as e:  # noqa: BLE001 - jinja raises its own errors (role order, ...)
            raise InvalidArgumentError(
                f"the tokenizer's chat template refused the conversation "
                f"({type(e).__name__}: {e}); roles were {[m['role'] for m in messages]}") from e
        if not isinstance(text, str):
            raise InvalidArgumentError(
                f"apply_chat_template(tokenize=False) returned a {type(text).__name__}")
        return text

    def _encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=not self.use_template)["input_ids"])

    def _template_turn_end(self) -> int | None:
        """The first special (or stop) token the template writes after an assistant turn."""
        msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}]
        try:
            text = self.render(msgs, generation_prompt=False)
        except InvalidArgumentError:
            return None
        if _SENTINEL not in text:
            return None
        tail = text[text.index(_SENTINEL) + len(_SENTINEL):]
        for tok in self.tokenizer(tail, add_special_tokens=False)["input_ids"]:
            if int(tok) in self.special or int(tok) == self.eos_id:
                return int(tok)
        return None

    def _template_head(self) -> list[int]:
        """The template's fixed opening: the tokens before the first user message's text."""
        try:
            text = self.render([{"role": "user", "content": _SENTINEL}])
        except InvalidArgumentError:
            return []
        if _SENTINEL not in text:
            return []
        return self._encode_text(text[: text.index(_SENTINEL)])

    # -- prompts -------------------------------------------------------------------------
    def prompt_text(self, prompt: Prompt) -> str:
        """The text the model reads for ``prompt`` (template applied, generation prompt
        included), before tokenization."""
        if self.use_template:
            return self.render(as_messages(prompt))
        return prompt if isinstance(prompt, str) else messages_to_text(as_messages(prompt))

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids, not truncated (cached per prompt)."""
        key = prompt_key(prompt)
        ids = self._cache.get(key)
        if ids is None:
            ids = tuple(self._encode_text(self.prompt_text(prompt))) or (self.bos_id,)
            if len(self._cache) < 100_000:
                self._cache[key] = ids
        return list(ids)

    def head_length(self, ids: Sequence[int]) -> int:
        """How many leading tokens of ``ids`` truncation keeps: the template's opening if
        ``ids`` starts with it, else the leading special tokens (BOS)."""
        h = len(self.head)
        if h and tuple(ids[:h]) == self.head:
            return h
        n = 0
        while n < len(ids) and int(ids[n]) in self.special:
            n += 1
        return n

    def truncate_prompt(self, ids: Sequence[int], limit: int) -> tuple[list[int], bool]:
        """``ids`` cut to ``limit`` tokens from the left, keeping the head; returns ``(ids,
        whether it was cut)``. The head is kept whole only if it leaves room for a token."""
        ids = list(ids)
        if len(ids) <= limit:
            return ids, False
        if limit < 1:
            raise InvalidArgumentError(f"a prompt must keep at least one token, got limit {limit}")
        h = min(self.head_length(ids), limit - 1)
        return ids[:h] + ids[len(ids) - (limit - h):], True

    # -- responses -----------------------------------------------------------------------
    def split(self, prompt: Prompt, response: str) -> tuple[list[int], list[int]]:
        """``(context ids, response ids + terminator)``, cut at the common prefix of the
        encoded prompt and the encoded prompt + response (not truncated)."""
        text = self.prompt_text(prompt)
        p_ids = self.prompt_ids(prompt)
        f_ids = self._encode_text(text + response)
        k = 0
        for a, b in zip(p_ids, f_ids):
            if a != b:
                break
            k += 1
        ctx, resp = f_ids[:k], f_ids[k:]
        # a tokenizer that appends a special token (EOS) to every encoding would put it
        # inside the response: the terminator is added once, below
        if not self.use_template and p_ids and p_ids[-1] in self.special and resp and (
                resp[-1] == p_ids[-1]):
            resp = resp[:-1]
        return (ctx or [self.bos_id]), resp + [self.terminator]

    def fit(self, ctx: Sequence[int], resp: Sequence[int], *, max_length: int,
            max_prompt_length: int | None = None) -> tuple[list[int], list[int], int]:
        """``(ctx, resp, cuts)``: the prompt cut to ``max_prompt_length`` and the pair to
        ``max_length`` tokens (the prompt from the left, keeping its head, down to one
        token, then the response from the right); ``cuts`` is 1 if anything was cut."""
        cut = False
        if max_prompt_length is not None:
            ctx, cut = self.truncate_prompt(ctx, max_prompt_length)
        ctx, resp = list(ctx), list(resp)
        if len(ctx) + len(resp) > max_length:
            cut = True
            ctx, _ = self.truncate_prompt(ctx, max(1, max_length - len(resp)))
            resp = resp[: max_length - len(ctx)]
        return ctx, resp, int(cut)
