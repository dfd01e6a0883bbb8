"""The assistant's configuration: one frozen dataclass, read by all its parts."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxline.providers.base import Deadlines
from voxline.providers.stt.guard import GuardConfig

from .prompts import APOLOGY, GREETING, REPAIR, SYSTEM_PROMPT

GOODBYE = "Thank you for calling. Goodbye!"  # end_call, when the model wrote no goodbye
TRANSFER_NOTICE = "Please hold while I transfer you."  # transfer, when the model said nothing

__all__ = ["AssistantConfig"]


@dataclass(frozen=True, slots=True)
class AssistantConfig:
    system_prompt: str = SYSTEM_PROMPT
    greeting: str | None = GREETING
    apology: str = APOLOGY
    # An answer the LLM broke off mid-stream is owned up to (this) and given
    # again in full, from whichever model the fallback chain now prefers; None:
    # the apology only.
    repair: str | None = REPAIR
    max_context_tokens: int = 1024
    barge_in_confirm: float = 0.6  # seconds of caller speech that make a pause an interruption
    preroll: float = 0.3  # audio before the VAD's onset that goes to the recogniser
    max_utterance: float = 30.0
    max_held_audio: float = 120.0  # reply audio kept for a resume after a false barge-in
    # On SpeechPaused, finalize the recogniser while the VAD's hangover runs and
    # hold later audio; the turn's end then finds the transcript (nearly) ready.
    speculative: bool = True
    # Start the reply on that speculative transcript, held until the turn ends.
    preemptive: bool = True
    # Once the first token is this old and no clause has ended, the first piece
    # may end at a phrase boundary (see agent/sentences.py); None: never.
    first_piece_wait: float | None = 0.1
    # After each reply, let the LLM evaluate the conversation so far (llama.cpp:
    # the next turn's prompt then starts warm).
    prepare_between_turns: bool = True
    # While the caller speaks, let the LLM evaluate their words so far (from the
    # recogniser's interim results), so the prompt of the reply is mostly warm.
    prefill_interims: bool = True
    deadlines: Deadlines = field(default_factory=Deadlines)
    goodbye: str = GOODBYE
    transfer_notice: str = TRANSFER_NOTICE
    # Rounds of one reply that may call tools; past it the model answers without them.
    max_tool_rounds: int = 3
    # Budgets per turn mark (seconds); see voxline.media.budget.
    budget_transcript: float = 0.40
    budget_first_token: float = 0.25
    budget_first_sentence: float = 0.25
    budget_first_tts_audio: float = 0.15
    # What makes a caller transcript invented (providers/stt/guard.py): the
    # listener's tests of the turn's voiced length and of the bot's echo.
    guard: GuardConfig = field(default_factory=GuardConfig)
