"""Digest answers, checked against the RFCs' own worked examples, byte for byte."""

from __future__ import annotations

import pytest

from voxline.transports.sip.digest import (Challenge, Credentials, DigestError, Nonces, answer, parse_challenge,
                                           pick_challenge)

# RFC 2617 §3.5
RFC2617 = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
           'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
# RFC 7616 §3.9.1 (the same challenge, once per algorithm)
RFC7616 = ('Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
           'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
CNONCE_7616 = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def fields(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    out = {}
    for part in value[len("Digest "):].split(", "):
        k, _, v = part.partition("=")
        out[k] = v.strip('"')
    return out


def test_rfc2617_example() -> None:
    ch = parse_challenge(RFC2617)
    assert ch == Challenge("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "MD5", ("auth", "auth-int"),
                           "5ccc069c403ebaf9f0171e9517f40e41")
    got = fields(answer(ch, Credentials("Mufasa", "Circle Of Life"), "GET", "/dir/index.html", nc=1,
                        cnonce="0a4f113b"))
    assert got["response"] == "6629fae49393a05397450978507c4ef1"
    assert got["nc"] == "00000001" and got["qop"] == "auth" and got["cnonce"] == "0a4f113b"
    assert got["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41" and got["uri"] == "/dir/index.html"


@pytest.mark.parametrize("alg, response", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(alg: str, response: str) -> None:
    ch = parse_challenge(RFC7616.format(alg=alg))
    assert ch.algorithm == alg and ch.qop == ("auth", "auth-int")
    got = fields(answer(ch, Credentials("Mufasa", "Circle of Life"), "GET", "/dir/index.html", nc=1,
                        cnonce=CNONCE_7616))
    assert got["response"] == response and got["algorithm"] == alg and got["realm"] == "http-auth@example.org"


def test_rfc2069_without_qop_and_sess() -> None:
    # No qop: response = H(HA1:nonce:HA2), no nc/cnonce sent (RFC 2617 §3.2.2.1).
    ch = parse_challenge('Digest realm="r", nonce="n"')
    got = fields(answer(ch, Credentials("u", "p"), "REGISTER", "sip:example.com"))
    assert "nc" not in got and "qop" not in got
    import hashlib
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    assert got["response"] == md5(f"{md5('u:r:p')}:n:{md5('REGISTER:sip:example.com')}")
    sess = parse_challenge('Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess')
    got = fields(answer(sess, Credentials("u", "p"), "INVITE", "sip:a@b", nc=2, cnonce="c"))
    ha1 = md5(f"{md5('u:r:p')}:n:c")
    assert got["response"] == md5(f"{ha1}:n:00000002:c:auth:{md5('INVITE:sip:a@b')}")


@pytest.mark.parametrize("text, why", [
    ('Basic realm="r"', "not Digest"),
    ('Digest nonce="n"', "no realm"),
    ('Digest realm="r"', "no nonce"),
    ('Digest realm="r", nonce="n", algorithm=SHA-512-256', "not MD5 or SHA-256"),
    ('Digest realm="r", nonce="n", qop="auth-int"', "does not offer auth"),
    ('Digest realm="r", realm="s", nonce="n"', "given twice"),
    ('Digest realm="r, nonce="n"', "WWW-Authenticate"),
    ("Digest " + "a" * 5000, "longer than"),
])
def test_bad_challenges_say_what(text: str, why: str) -> None:
    with pytest.raises(DigestError, match=why):
        parse_challenge(text)


def test_strongest_challenge_and_realm() -> None:
    headers = ['Digest realm="a", nonce="1", algorithm=MD5', 'Digest realm="a", nonce="2", algorithm=SHA-256',
               'Digest realm="b", nonce="3"', "Digest broken"]
    assert pick_challenge(headers, proxy=False).nonce == "2"
    picked = pick_challenge(headers, proxy=True, realm="b")
    assert picked.nonce == "3" and picked.reply_header == "Proxy-Authorization"
    with pytest.raises(DigestError, match="realm 'c'"):
        pick_challenge(headers, proxy=False, realm="c")


def test_nonce_counts_rise_per_nonce_and_stay_bounded() -> None:
    nonces = Nonces(capacity=2)
    a, b, c = (Challenge("r", n) for n in "abc")
    assert [nonces.next(a), nonces.next(a), nonces.next(b), nonces.next(a)] == [1, 2, 1, 3]
    nonces.next(c)  # b is the least recently used: forgotten
    assert nonces.next(b) == 1
