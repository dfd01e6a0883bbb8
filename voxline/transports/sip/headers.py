"""Header names, the header container, and the simple header grammars.

Names are case-insensitive and many have a compact form (RFC 3261 §7.3.3,
§20); ``canonical_name`` maps both to one spelling. ``HEADER_SPECS`` says, as
data, how each known header is checked: whether it is a comma list, whether it
may appear only once, and the parser of one value. Unknown headers are carried
verbatim (RFC 3261 §8.2.2: a UAS ignores what it does not understand).

    CSeq          = "CSeq" HCOLON 1*DIGIT LWS Method
    Max-Forwards  = "Max-Forwards" HCOLON 1*DIGIT         ; 0-255 (§8.1.1.6)
    Content-Length = ( "Content-Length" / "l" ) HCOLON 1*DIGIT
    Call-ID       = ( "Call-ID" / "i" ) HCOLON callid
    callid        = word [ "@" word ]
    Require       = "Require" HCOLON option-tag *(COMMA option-tag)
    Content-Type  = ( "Content-Type" / "c" ) HCOLON media-type
    media-type    = m-type SLASH m-subtype *(SEMI m-parameter)
    Date          = "Date" HCOLON SIP-date    ; rfc1123-date, "GMT" only
    Warning       = "Warning" HCOLON warning-value *(COMMA warning-value)
    warning-value = warn-code SP warn-agent SP warn-text   ; warn-code = 3DIGIT
    Expires       = "Expires" HCOLON delta-seconds
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .address import parse_name_addr
from .errors import SipParseError
from .grammar import Params, Scanner, split_list
from .uri import parse_uri
from .via import parse_via

__all__ = [
    "HEADER_SPECS",
    "MAX_CSEQ",
    "CSeq",
    "HeaderSpec",
    "Headers",
    "MediaType",
    "canonical_name",
    "parse_cseq",
    "parse_delta_seconds",
    "parse_int",
    "parse_max_forwards",
    "parse_media_type",
    "parse_tokens",
]

# RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
MAX_CSEQ = 2**31 - 1
# RFC 4475 §3.1.2.4: an overlarge delta-seconds is taken as the largest there is.
MAX_DELTA_SECONDS = 2**32 - 1

_CANONICAL = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires",
    "Organization", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "RAck", "Server",
    "Session-Expires", "Subject", "Supported", "Timestamp", "To", "Unsupported", "User-Agent",
    "Via", "Warning", "WWW-Authenticate",
]  # fmt: skip
_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events",
    "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
_BY_LOWER = {n.lower(): n for n in _CANONICAL} | _COMPACT


def canonical_name(name: str) -> str:
    """The long form in its usual spelling for a known header; else the name as given."""
    return _BY_LOWER.get(name.lower(), name)


class Headers:
    """Ordered header fields as (canonical name, unfolded value) pairs.

    Order is kept (Via and Route order matter; so does a byte-exact serialization
    of what we build). Lookups are by any spelling of the name.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items or []]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def get(self, name: str) -> str | None:
        cname = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == cname:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every line's value for ``name`` (not split at commas)."""
        cname = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == cname]

    def values(self, name: str) -> list[str]:
        """Every element of a comma-list header, over all its lines (§7.3.1)."""
        return [p for v in self.get_all(name) for p in split_list(v) if p]

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def insert(self, index: int, name: str, value: str) -> None:
        self._items.insert(index, (canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first line of ``name`` (a new top Via), else at the top."""
        cname = canonical_name(name).lower()
        for i, (n, _) in enumerate(self._items):
            if n.lower() == cname:
                self._items.insert(i, (canonical_name(name), value))
                return
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line, where the first one was."""
        cname = canonical_name(name)
        out: list[tuple[str, str]] = []
        done = False
        for n, v in self._items:
            if n.lower() == cname.lower():
                if not done:
                    out.append((cname, value))
                    done = True
            else:
                out.append((n, v))
        if not done:
            out.append((cname, value))
        self._items = out

    def remove(self, name: str) -> None:
        cname = canonical_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != cname]

    def replace_all(self, name: str, values: list[str]) -> None:
        """Replace ``name`` by ``values``, one line each, where the first line was."""
        cname = canonical_name(name)
        idx = next((i for i, (n, _) in enumerate(self._items) if n.lower() == cname.lower()), None)
        self.remove(name)
        at = len(self._items) if idx is None else idx
        self._items[at:at] = [(cname, v) for v in values]


# -- simple grammars -------------------------------------------------------------

_DIGITS_RE = re.compile(r"[0-9]+\Z")
_CALLID_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALLID_RE = re.compile(rf"{_CALLID_WORD}(?:@{_CALLID_WORD})?\Z")
_WKDAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DATE_RE = re.compile(rf"{_WKDAY}, [0-9]{{2}} {_MONTH} [0-9]{{4}} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} GMT\Z")
_WARNING_RE = re.compile(r"[0-9]{3} \S+ \"(?:[^\"\\]|\\.)*\"\Z")


def parse_int(text: str, header: str, *, limit: int) -> int:
    t = text.strip()
    if not _DIGITS_RE.match(t):
        raise SipParseError(f"{header}: not a number: {text!r}", header=header)
    # The length check first keeps a 10**100 digit string from costing a bignum.
    if len(t.lstrip("0")) > len(str(limit)) or int(t) > limit:
        raise SipParseError(f"{header}: {t} is out of range (max {limit})", header=header)
    return int(t)


def parse_max_forwards(text: str, header: str = "Max-Forwards") -> int:
    return parse_int(text, header, limit=255)


def parse_delta_seconds(text: str, header: str = "Expires") -> int:
    t = text.strip()
    if not _DIGITS_RE.match(t):
        raise SipParseError(f"{header}: not a number: {text!r}", header=header)
    return MAX_DELTA_SECONDS if len(t) > 10 else min(int(t), MAX_DELTA_SECONDS)


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str, header: str = "CSeq") -> CSeq:
    number, sep, method = text.strip().partition(" ")
    if not sep:
        number, sep, method = text.strip().partition("\t")
    s = Scanner(method.strip(), header)
    m = s.token("method")
    s.expect_end()
    return CSeq(parse_int(number, header, limit=MAX_CSEQ), m)


# Headers whose list may be empty (RFC 3261 §20.5, §20.37: "Allow" HCOLON [Method
# *(COMMA Method)], "Supported" HCOLON [option-tag *(COMMA option-tag)]); baresip
# sends "Supported:" with nothing after it.
_MAY_BE_EMPTY = frozenset({"allow", "supported", "k"})


def parse_tokens(text: str, header: str) -> list[str]:
    out: list[str] = []
    if not text.strip(" \t") and header.lower() in _MAY_BE_EMPTY:
        return out
    for part in split_list(text):
        s = Scanner(part, header)
        out.append(s.token("option-tag"))
        s.expect_end()
    return out


@dataclass(frozen=True, slots=True)
class MediaType:
    type: str
    subtype: str
    params: Params

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}".lower()

    def param(self, name: str) -> str | None:
        for n, v in self.params:
            if n.lower() == name.lower():
                return v
        return None


def parse_media_type(text: str, header: str = "Content-Type") -> MediaType:
    s = Scanner(text, header)
    s.skip_ws()
    t = s.token("m-type")
    s.expect_sep("/", "'/' in media type")
    sub = s.token("m-subtype")
    params = s.params()
    s.expect_end()
    return MediaType(t, sub, params)


def _check_accept(text: str, header: str) -> None:
    for part in split_list(text):
        if part:
            parse_media_type(part, header)


def _check_callid(text: str, header: str) -> None:
    if not _CALLID_RE.match(text.strip()):
        raise SipParseError(f"{header}: bad callid {text!r}", header=header)


def _check_date(text: str, header: str) -> None:
    # RFC 3261 §20.17: rfc1123-date, and the time zone MUST be GMT (RFC 4475 baddate).
    if not _DATE_RE.match(text.strip()):
        raise SipParseError(f"{header}: not an RFC 1123 GMT date: {text!r}", header=header)


def _check_warning(text: str, header: str) -> None:
    for part in split_list(text):
        if not _WARNING_RE.match(part):
            raise SipParseError(f"{header}: bad warning-value {part!r}", header=header)


def _check_retry_after(text: str, header: str) -> None:
    s = Scanner(text, header)
    s.skip_ws()
    digits = s.regex(re.compile(r"[0-9]+"), "delta-seconds")
    parse_int(digits, header, limit=MAX_DELTA_SECONDS)


def _check_uri_list(text: str, header: str) -> None:
    for part in split_list(text):
        if not part:
            raise SipParseError(f"{header}: empty element in list", header=header)
        parse_name_addr(part, header)


def _check_contact(text: str, header: str) -> None:
    if text.strip() == "*":
        return
    _check_uri_list(text, header)


def _check_cseq(text: str, header: str) -> None:
    parse_cseq(text, header)


def _check_via(text: str, header: str) -> None:
    for part in split_list(text):
        if not part:
            raise SipParseError(f"{header}: empty via-parm", header=header)
        parse_via(part, header)


def _check_addr(text: str, header: str) -> None:
    parse_name_addr(text, header)


def _check_max_forwards(text: str, header: str) -> None:
    parse_max_forwards(text, header)


def _check_expires(text: str, header: str) -> None:
    parse_delta_seconds(text, header)


def _check_tokens(text: str, header: str) -> None:
    parse_tokens(text, header)


def _check_media_type(text: str, header: str) -> None:
    parse_media_type(text, header)


def _check_refer_to(text: str, header: str) -> None:
    na = parse_name_addr(text, header)
    parse_uri(str(na.uri), header)


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    single: bool  # at most one value (RFC 4475 §3.3.8, multi01)
    check: Callable[[str, str], None]


HEADER_SPECS: dict[str, HeaderSpec] = {
    "Via": HeaderSpec(False, _check_via),
    "From": HeaderSpec(True, _check_addr),
    "To": HeaderSpec(True, _check_addr),
    "Call-ID": HeaderSpec(True, _check_callid),
    "CSeq": HeaderSpec(True, _check_cseq),
    "Max-Forwards": HeaderSpec(True, _check_max_forwards),
    "Contact": HeaderSpec(False, _check_contact),
    "Route": HeaderSpec(False, _check_uri_list),
    "Record-Route": HeaderSpec(False, _check_uri_list),
    "Reply-To": HeaderSpec(True, _check_addr),
    "Refer-To": HeaderSpec(True, _check_refer_to),
    "Expires": HeaderSpec(True, _check_expires),
    "Min-Expires": HeaderSpec(True, _check_expires),
    "Retry-After": HeaderSpec(True, _check_retry_after),
    "Require": HeaderSpec(False, _check_tokens),
    "Proxy-Require": HeaderSpec(False, _check_tokens),
    "Supported": HeaderSpec(False, _check_tokens),
    "Unsupported": HeaderSpec(False, _check_tokens),
    "Allow": HeaderSpec(False, _check_tokens),
    "Content-Type": HeaderSpec(True, _check_media_type),
    "Accept": HeaderSpec(False, _check_accept),
    "Date": HeaderSpec(True, _check_date),
    "Warning": HeaderSpec(False, _check_warning),
}
