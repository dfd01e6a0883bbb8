"""name-addr / addr-spec with header parameters: From, To, Contact, Route, ...

RFC 3261 §25.1:

    from-spec    = ( name-addr / addr-spec ) *( SEMI from-param )
    name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
    addr-spec    = SIP-URI / SIPS-URI / absoluteURI
    display-name = *(token LWS)/ quoted-string
    contact-param = (name-addr / addr-spec) *(SEMI contact-params)
    Contact      = ("Contact" / "m" ) HCOLON ( STAR / (contact-param *(COMMA contact-param)))

§20.10: when the URI is not enclosed in angle brackets, any semicolon-separated
parameters are header parameters, not URI parameters; a URI that contains a
comma, question mark or semicolon must be enclosed (RFC 4475 §3.1.2.13, regbadct).
No whitespace inside the brackets (§3.1.2.14, badaspec).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SipParseError
from .grammar import TOKEN_RE, Params, Scanner, format_params, param_get, param_set, split_list, unquote
from .uri import Uri, parse_uri

__all__ = ["NameAddr", "parse_name_addr", "parse_name_addr_list"]

_WS = " \t"


@dataclass(slots=True)
class NameAddr:
    """A URI with an optional display name and header parameters (tag, q, expires...).

    ``display`` is the raw display-name text (quotes included when quoted);
    ``display_name`` is its unquoted value.
    """

    uri: Uri
    display: str | None = None
    params: Params = field(default_factory=list)

    @property
    def display_name(self) -> str | None:
        return None if self.display is None else unquote(self.display)

    @property
    def tag(self) -> str | None:
        return param_get(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display, param_set(self.params, "tag", tag))

    def param(self, name: str) -> str | None:
        return param_get(self.params, name)

    def __str__(self) -> str:
        head = f"{self.display} " if self.display else ""
        return f"{head}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str, header: str) -> NameAddr:
    """One (name-addr / addr-spec) *(SEMI generic-param)."""
    s = Scanner(text, header)
    s.skip_ws()
    display: str | None = None
    bracketed = False
    if s.peek() == '"':
        display = s.quoted_string()
        s.skip_ws()
        if s.peek() != "<":
            raise s.error("expected '<' after display name")
        bracketed = True
    elif s.peek() == "<":
        bracketed = True
    else:
        # *(token LWS) followed by "<" is a display name; anything else is addr-spec.
        start = s.pos
        while True:
            m = TOKEN_RE.match(s.text, s.pos)
            if m is None:
                break
            s.pos = m.end()
            s.skip_ws()
        if s.peek() == "<" and s.pos > start:
            display = s.text[start : s.pos].rstrip(_WS)
            bracketed = True
        else:
            s.pos = start
    if bracketed:
        end = s.text.find(">", s.pos)
        if end < 0:
            raise s.error("unterminated '<'")
        inner = s.text[s.pos + 1 : end]
        if not inner or any(c in inner for c in " \t"):
            raise s.error("whitespace or nothing inside '<>'")
        uri = parse_uri(inner, header)
        s.pos = end + 1
    else:
        start = s.pos
        while not s.at_end() and s.peek() not in " \t;":
            s.pos += 1
        spec = s.text[start : s.pos]
        if not spec:
            raise s.error("expected addr-spec")
        if "," in spec or "?" in spec:
            raise s.error("a URI with ',' or '?' must be enclosed in '<>'")
        uri = parse_uri(spec, header)
    params = s.params()
    s.expect_end()
    return NameAddr(uri, display, params)


def parse_name_addr_list(text: str, header: str) -> list[NameAddr]:
    """A comma-separated list of name-addr (Contact, Route, Record-Route...)."""
    out: list[NameAddr] = []
    for part in split_list(text):
        if not part:
            raise SipParseError(f"{header}: empty element in list", header=header)
        out.append(parse_name_addr(part, header))
    return out
