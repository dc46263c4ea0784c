"""Streamers: receive tokens while `generate()` makes them.

`generate(..., streamer=s)` calls `s.put(prompt_ids)` once, then `s.put(new_ids)` with the
ids of each step (one per sequence; streaming needs batch size 1 for text), then `s.end()`.
"""
from __future__ import annotations

import queue
from typing import Any, Optional

import torch


class BaseStreamer:
    """The streamer interface: `put(token_ids)` and `end()`."""

    def put(self, value: torch.Tensor) -> None:
        """Receive the prompt ids (first call) or one step's new ids."""
        raise NotImplementedError

    def end(self) -> None:
        """Generation has finished."""
        raise NotImplementedError


class TextStreamer(BaseStreamer):
    """Prints text as soon as it is complete words (Hugging Face's `TextStreamer`).

    Decodes everything made so far and prints the new part up to the last space or newline,
    so multi-token words and byte-level pieces are never printed half made.

    Args:
        tokenizer: anything with `decode(ids, **kwargs) -> str` (a libai tokenizer).
        skip_prompt: do not print the prompt.
        decode_kwargs: passed to `tokenizer.decode` (e.g. `skip_special_tokens=True`).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []
        self.print_len = 0
        self.next_tokens_are_prompt = True

    def put(self, value: torch.Tensor) -> None:
        """Add ids (batch size 1) and print what has become complete text."""
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError("TextStreamer streams one sequence: generate with batch size 1 and num_beams=1")
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        self.token_cache.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            printable, self.token_cache, self.print_len = text[self.print_len :], [], 0
        elif text.endswith("\ufffd"):
            printable = ""  # an incomplete UTF-8 character: wait for its other bytes
        else:
            cut = max(text.rfind(" "), text.rfind("\n")) + 1
            printable = text[self.print_len : max(cut, self.print_len)]
            self.print_len = max(cut, self.print_len)
        self.on_finalized_text(printable)

    def end(self) -> None:
        """Print what is left."""
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs) if self.token_cache else ""
        printable = text[self.print_len :]
        self.token_cache, self.print_len, self.next_tokens_are_prompt = [], 0, True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Where text goes: stdout (override to send it elsewhere)."""
        print(text, flush=True, end=None if stream_end else "")


class TextIteratorStreamer(TextStreamer):
    """A `TextStreamer` that hands text pieces to an iterator (for another thread or a UI).

    Args:
        tokenizer, skip_prompt, decode_kwargs: as `TextStreamer`.
        timeout: seconds an iteration waits for the next piece (None: forever).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: Optional[float] = None, **decode_kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: queue.Queue = queue.Queue()
        self.stop_signal = object()
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self) -> "TextIteratorStreamer":
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration()
        return value
