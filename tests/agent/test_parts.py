import pytest

from voxline.agent.context import Conversation, estimate_tokens
from voxline.agent.sentences import SentenceSplitter
from voxline.agent.turns import Action, Event, State, TurnMachine


def split(text: str, chunk: int = 3, **kw: int) -> list[str]:
    s = SentenceSplitter(**kw)
    out: list[str] = []
    for i in range(0, len(text), chunk):  # streamed in small pieces, as tokens come
        out += s.feed(text[i : i + chunk])
    return out + list(s.flush())


def test_first_piece_is_a_clause_then_whole_sentences() -> None:
    text = "Well, I think the answer is yes, but only on Tuesdays. After that it changes. Bye."
    assert split(text) == [
        "Well, I think the answer is yes,",
        "but only on Tuesdays.",
        "After that it changes.",
        "Bye.",  # streamed: the sentence before it was already out when it came
    ]


def hurried(tokens: list[str], hurry_from: int = 0) -> list[str]:
    s = SentenceSplitter()
    out: list[str] = []
    for i, token in enumerate(tokens):
        out += s.feed(token, hurry=i >= hurry_from)
    return out + list(s.flush())


def test_a_hurried_first_piece_ends_at_a_phrase_boundary() -> None:
    tokens = ["The", " capital", " of", " France", " is", " Paris", "."]
    assert hurried(tokens) == ["The capital of France", "is Paris."]
    assert hurried(["There", " are", " 7", " days", " in", " a", " week", "."]) == ["There are 7 days", "in a week."]
    # Not before three words; and a sentence that ends first stays whole.
    assert hurried(["A", " spider", " has", " 8", " legs", "."]) == ["A spider has 8 legs."]
    assert hurried(["Bees", " make", " honey", "."]) == ["Bees make honey."]
    # Only the first piece; later ones are sentences ("is blue." alone is too short).
    two = hurried(["The", " sky", " today", " is", " blue", ".", " It", " is", " nice", " out", " there", "."])
    assert two == ["The sky today", "is blue. It is nice out there."]


def test_a_phrase_cut_is_at_a_word_boundary_even_if_the_word_grows() -> None:
    s = SentenceSplitter()
    assert list(s.feed("The capital of France", hurry=True)) == []
    assert list(s.feed(" is", hurry=True)) == ["The capital of France"]  # at once, not a token later
    assert list(s.feed("land", hurry=True)) == []
    assert list(s.feed(" nearby.", hurry=True)) == []  # "island nearby." is too short alone
    assert list(s.flush()) == ["island nearby."]


def test_a_hurried_sentence_ends_with_its_mark_not_with_the_next_token() -> None:
    s = SentenceSplitter()
    assert list(s.feed("Bees make honey", hurry=True)) == []
    assert list(s.feed(".", hurry=True)) == ["Bees make honey."]  # not waiting for the end of the answer
    s = SentenceSplitter()
    assert list(s.feed("Is it blue?", hurry=True)) == ["Is it blue?"]
    # A number, an abbreviation or an initial may go on: wait for the next token.
    for start, rest, whole in (("It equals 4.", "5", "It equals 4.5"),
                               ("Ask Dr.", " Smith", "Ask Dr. Smith"),
                               ("It was J.", " R.", "It was J. R.")):
        s = SentenceSplitter()
        assert list(s.feed(start, hurry=True)) == []
        assert list(s.feed(rest, hurry=True)) == []
        assert " ".join(s.flush()) == whole
    # Not hurried: the sentence ends when the next token shows it.
    s = SentenceSplitter()
    assert list(s.feed("Bees make honey.")) == []
    assert list(s.flush()) == ["Bees make honey."]


def test_no_phrase_cut_unless_hurried() -> None:
    tokens = ["The", " capital", " of", " France", " is", " Paris", "."]
    assert hurried(tokens, hurry_from=99) == ["The capital of France is Paris."]
    # Hurried late: the cut is the first boundary still in the buffer.
    assert hurried(tokens, hurry_from=5) == ["The capital of France", "is Paris."]


def test_abbreviations_initials_and_decimals_do_not_end_sentences() -> None:
    text = "Dr. Smith met J. R. Jones at 3.5 p.m. today. They talked for ages about things."
    assert split(text, first_min_words=50) == [
        "Dr. Smith met J. R. Jones at 3.5 p.m. today.",
        "They talked for ages about things.",
    ]


def test_short_clauses_are_not_spoken_alone_and_unpunctuated_text_still_flows() -> None:
    assert split("Yes, it is.") == ["Yes, it is."]
    long = "word " * 150
    pieces = split(long, chunk=7)
    assert len(pieces) >= 2 and all(len(p) <= 400 for p in pieces)
    assert " ".join(pieces).split() == long.split()


def test_conversation_is_bounded_by_tokens_and_keeps_the_system_prompt() -> None:
    conv = Conversation("You are terse.", max_tokens=60)
    for i in range(20):
        conv.add_user(f"question number {i} about something")
        conv.add_assistant(f"answer number {i}")
    assert conv.tokens <= 60
    msgs = conv.messages()
    assert msgs[0] == {"role": "system", "content": "You are terse."}
    assert msgs[-1] == {"role": "assistant", "content": "answer number 19"}
    assert len(msgs) < 41
    conv.add_assistant("   ")
    assert msgs[-1] == conv.messages()[-1]  # empty replies are not history
    assert estimate_tokens("abcd" * 10) == 10 + 4


L, C, T, S = State.LISTENING, State.CALLER_SPEAKING, State.THINKING, State.SPEAKING
E = Event
A = Action


def machine(state: State, paused: bool = False, replying: bool = False) -> TurnMachine:
    m = TurnMachine()
    m.state, m.paused, m.replying = state, paused, replying
    return m


@pytest.mark.parametrize(
    "state,paused,replying,event,text,new_state,actions",
    [
        (L, False, False, E.SPEECH_STARTED, "", C, []),
        (L, False, False, E.SAY, "hi", T, [A.START_SAY]),
        (C, False, False, E.SPEECH_ENDED, "", T, [A.FINALIZE_STT]),
        (C, False, False, E.TRANSCRIPT, "early words", C, []),
        (C, True, True, E.TRANSCRIPT, "stop", C, [A.CANCEL_REPLY]),
        (C, True, True, E.BARGE_IN_CONFIRMED, "", C, [A.CANCEL_REPLY]),
        (C, False, False, E.BARGE_IN_CONFIRMED, "", C, []),
        (T, False, False, E.TRANSCRIPT, "what time is it", T, [A.START_REPLY]),
        (T, False, False, E.TRANSCRIPT, "", L, []),
        (T, True, True, E.TRANSCRIPT, "", S, [A.RESUME_REPLY]),
        (T, True, True, E.TRANSCRIPT, "no wait", T, [A.CANCEL_REPLY, A.START_REPLY]),
        (T, False, True, E.SPEECH_STARTED, "", C, [A.CANCEL_REPLY]),
        (T, False, False, E.SPEECH_STARTED, "", C, []),
        (T, False, True, E.REPLY_AUDIO, "", S, []),
        (T, False, True, E.REPLY_FAILED, "", L, []),
        (T, False, True, E.SAY, "x", T, [A.CANCEL_REPLY, A.START_SAY]),
        (S, False, True, E.SPEECH_STARTED, "", C, [A.PAUSE_REPLY, A.START_CONFIRM_TIMER]),
        (S, False, True, E.REPLY_PLAYED, "", L, []),
        (S, False, True, E.REPLY_FAILED, "", L, []),
        (S, False, True, E.SAY, "x", T, [A.CANCEL_REPLY, A.START_SAY]),
    ],
)
def test_every_transition(
    state: State, paused: bool, replying: bool, event: Event, text: str,
    new_state: State, actions: list[Action],
) -> None:
    m = machine(state, paused, replying)
    got = m.handle(event, text)
    assert m.state is new_state
    assert [a for a, _ in got] == actions


def test_words_said_during_speech_are_answered_with_the_rest() -> None:
    m = machine(C)
    m.handle(E.TRANSCRIPT, "book a table")
    m.handle(E.SPEECH_ENDED)
    assert m.handle(E.TRANSCRIPT, "for two") == [(A.START_REPLY, "book a table for two")]
    assert m.pending_text == ""


def test_events_without_a_row_are_counted_not_acted_on() -> None:
    m = machine(L)
    assert m.handle(E.REPLY_AUDIO) == []
    assert m.handle(E.SPEECH_ENDED) == []
    assert m.state is L and m.ignored == {"listening:reply_audio": 1, "listening:speech_ended": 1}
