"""RFC 3261 §25 lexical rules shared by the header and URI parsers.

The grammar the scanner follows (§25.1):

    LWS     = [*WSP CRLF] 1*WSP      ; linear whitespace (folding is undone earlier)
    SWS     = [LWS]                  ; sep whitespace
    HCOLON  = *( SP / HTAB ) ":" SWS
    SEMI    = SWS ";" SWS            EQUAL  = SWS "=" SWS
    COMMA   = SWS "," SWS            SLASH  = SWS "/" SWS
    LAQUOT  = SWS "<"                RAQUOT = ">" SWS
    token   = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
    quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
    qdtext  = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
    quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F)
    generic-param = token [ EQUAL gen-value ]
    gen-value     = token / host / quoted-string

Header values reach this module already unfolded (CRLF + WSP became one SP), so
LWS is plain SP/HTAB here.
"""

from __future__ import annotations

import re

from .errors import SipParseError

__all__ = [
    "TOKEN_RE",
    "Params",
    "Scanner",
    "format_params",
    "is_token",
    "quote",
    "split_list",
    "unquote",
]

TOKEN_CHARS = "A-Za-z0-9\\-.!%*_+`'~"
TOKEN_RE = re.compile(f"[{TOKEN_CHARS}]+")
_TOKEN_FULL = re.compile(f"[{TOKEN_CHARS}]+\\Z")
# gen-value when not quoted: token or host (IPv6 references bring "[", "]", ":").
_GEN_VALUE_RE = re.compile(f"[{TOKEN_CHARS}\\[\\]:]+")
_WS = " \t"

# Parameters keep their order and their raw text (a quoted value keeps its quotes),
# so a parsed header serializes back to what was received. Names compare
# case-insensitively through the helpers below.
Params = list[tuple[str, str | None]]


def is_token(text: str) -> bool:
    return _TOKEN_FULL.match(text) is not None


class Scanner:
    """A cursor over one header value, with the §25 separators as methods."""

    __slots__ = ("text", "pos", "header")

    def __init__(self, text: str, header: str) -> None:
        self.text = text
        self.pos = 0
        self.header = header

    def error(self, what: str) -> SipParseError:
        return SipParseError(f"{self.header}: {what} at offset {self.pos}", header=self.header)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos > start

    def sep(self, char: str) -> bool:
        """SWS char SWS: consume it if next (after whitespace), else leave the cursor."""
        save = self.pos
        self.skip_ws()
        if self.peek() == char:
            self.pos += 1
            self.skip_ws()
            return True
        self.pos = save
        return False

    def expect_sep(self, char: str, what: str) -> None:
        if not self.sep(char):
            raise self.error(f"expected {what}")

    def token(self, what: str = "token") -> str:
        m = TOKEN_RE.match(self.text, self.pos)
        if m is None:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group()

    def regex(self, pattern: re.Pattern[str], what: str) -> str:
        m = pattern.match(self.text, self.pos)
        if m is None or m.end() == self.pos:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group()

    def quoted_string(self) -> str:
        """Return the raw quoted string, quotes included; the cursor is on the DQUOTE."""
        if self.peek() != '"':
            raise self.error("expected quoted-string")
        start = self.pos
        i = self.pos + 1
        text = self.text
        while i < len(text):
            c = text[i]
            if c == "\\":
                if i + 1 >= len(text) or text[i + 1] in "\r\n":
                    raise self.error("bad quoted-pair")
                i += 2
                continue
            if c == '"':
                self.pos = i + 1
                return text[start : self.pos]
            if c in "\r\n":
                break
            i += 1
        raise self.error("unterminated quoted-string")

    def gen_value(self) -> str:
        if self.peek() == '"':
            return self.quoted_string()
        return self.regex(_GEN_VALUE_RE, "parameter value")

    def params(self) -> Params:
        """*( SEMI generic-param )"""
        out: Params = []
        while self.sep(";"):
            name = self.token("parameter name")
            value: str | None = None
            if self.sep("="):
                value = self.gen_value()
            out.append((name, value))
        return out

    def expect_end(self) -> None:
        self.skip_ws()
        if not self.at_end():
            raise self.error(f"unexpected {self.peek()!r}")


def unquote(value: str) -> str:
    """A quoted-string's content with quoted-pairs resolved; a token is returned as is."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
            else:
                out.append(inner[i])
                i += 1
        return "".join(out)
    return value


def quote(text: str) -> str:
    """A quoted-string carrying ``text`` (backslash and DQUOTE escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, not inside quotes or angle brackets.

    Empty elements are kept (as ""), so the caller can reject ``a,,b`` by name.
    """
    parts: list[str] = []
    start = 0
    depth = 0
    in_quote = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            parts.append(value[start:i].strip(_WS))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(_WS))
    return parts


def param_get(params: Params, name: str) -> str | None:
    """The value of the first parameter called ``name`` (case-insensitive)."""
    lname = name.lower()
    for n, v in params:
        if n.lower() == lname:
            return v
    return None


def param_has(params: Params, name: str) -> bool:
    lname = name.lower()
    return any(n.lower() == lname for n, _ in params)


def param_set(params: Params, name: str, value: str | None) -> Params:
    """A copy with ``name`` set (replaced in place if present, else appended)."""
    lname = name.lower()
    out: Params = []
    done = False
    for n, v in params:
        if n.lower() == lname:
            if not done:
                out.append((n, value))
                done = True
        else:
            out.append((n, v))
    if not done:
        out.append((name, value))
    return out


__all__ += ["param_get", "param_has", "param_set"]
