"""A generation's clock: the prompt's prefill timed apart from the decode steps after it.

On a CPU the two are bound by different things: the prefill (one forward over the whole prompt)
by matmul speed, each decode step (one token) by reading every weight once from memory. So the
decode steps' tokens/s, not the whole call's, is what to hold against the bandwidth bound, and
what llama.cpp calls its eval rate. ``generate(..., timings=Timings())`` fills one in
(fast/generate.py); ``myllm101 generate`` prints its ``summary`` on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Timings:
    """One ``generate`` call's clock, filled in by the call: prompt tokens (all rows, padding not
    counted), generation steps, new tokens (all rows; ``first_step_tokens`` of them from the first
    step), and seconds from the call's start to its first new token (the prefill, and choosing
    that token) and to its end."""

    prompt_tokens: int = 0
    steps: int = 0
    new_tokens: int = 0
    first_step_tokens: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0

    def decode_tokens_per_s(self) -> float | None:
        """New tokens per second after the first step (the decode steps alone: what memory
        bandwidth bounds), or None when there were none."""
        later = self.total_s - self.first_token_s
        after_first = self.new_tokens - self.first_step_tokens
        return after_first / later if after_first > 0 and later > 0 else None

    def summary(self) -> str:
        """One line: 'prompt 24 tokens: first new token after 0.11 s; 64 new tokens in 1.47 s,
        the 63 after the first step at 46.6 tokens/s'."""
        if self.new_tokens == 0:
            return f"prompt {self.prompt_tokens} tokens: no new tokens ({self.total_s:.2f} s)"
        line = (
            f"prompt {self.prompt_tokens} tokens: first new token after "
            f"{self.first_token_s:.2f} s; {self.new_tokens} new token"
            f"{'' if self.new_tokens == 1 else 's'} in {self.total_s:.2f} s"
        )
        rate = self.decode_tokens_per_s()
        if rate is not None:
            after = self.new_tokens - self.first_step_tokens
            line += f", the {after} after the first step at {rate:.1f} tokens/s"
        return line
