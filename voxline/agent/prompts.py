"""Default words: the system prompt, the greeting, the apology."""

__all__ = ["SYSTEM_PROMPT", "GREETING", "APOLOGY", "REPAIR"]

SYSTEM_PROMPT = (
    "You are a helpful voice assistant on a phone call. Answer in one or two short "
    "sentences of plain spoken English: no lists, no markdown, no emoji. If you did "
    "not understand, ask the caller to repeat."
)
GREETING = "Hello! How can I help you today?"
APOLOGY = "Sorry, I'm having trouble answering right now. Please try again in a moment."
# Said when an answer broke off mid-sentence, before it is given again in full.
REPAIR = "Sorry, I lost my words there. Let me say that again."
