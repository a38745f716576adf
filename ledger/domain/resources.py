"""Resource URIs of Authority Set entries: validation, normalisation and coverage.

Normalisation follows RFC 3986 section 6.2.2 (syntax-based) plus the two scheme-based rules
for ``http``/``https`` (default port, empty path = ``/``). It is used to *compare* URIs only;
hashes always cover the URI exactly as submitted.

Prefix matching (``resource_match: prefix``) covers the base URI and anything below it at a
path-segment boundary. ``%2F`` stays encoded, so it never acts as a separator. A request with a
query string is covered by a prefix only when it equals the base exactly (fail closed).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ledger.domain.errors import InvalidRequest

MAX_URI_LENGTH = 2048

EXACT = "exact"
PREFIX = "prefix"
MATCH_MODES = frozenset({EXACT, PREFIX})

_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*"
# RFC 3986 characters: unreserved, reserved (gen-delims minus '#', sub-delims) and pct-encoded.
_URI = re.compile(
    rf"^(?P<scheme>{_SCHEME}):(?P<rest>(?:[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{{2}})+)\Z"
)
_HIERARCHICAL = re.compile(rf"^{_SCHEME}://[^/?#]+(?:/[^?#]*)?\Z")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class _Parts:
    """A normalised URI split into its RFC 3986 components (no fragment)."""

    scheme: str
    authority: str | None
    path: str
    query: str | None

    def text(self) -> str:
        return self._text

    @functools.cached_property
    def _text(self) -> str:
        out = self.scheme + ":"
        if self.authority is not None:
            out += "//" + self.authority
        out += self.path
        if self.query is not None:
            out += "?" + self.query
        return out


def is_absolute_uri(value: object) -> bool:
    """True for an absolute URI of RFC 3986 characters, no fragment, at most 2048 characters."""
    return isinstance(value, str) and len(value) <= MAX_URI_LENGTH and _URI.match(value) is not None


def validate_resource(value: object, pointer: str, *, hierarchical: bool) -> str:
    """Check a resource URI and return it unchanged.

    ``hierarchical`` (required for ``resource_match: prefix``) additionally demands the form
    ``scheme://authority[/path]`` with no query, so that "below" is well defined.
    """
    if not isinstance(value, str):
        raise InvalidRequest.at(pointer, "must be a URI string")
    if len(value) > MAX_URI_LENGTH:
        raise InvalidRequest.at(pointer, f"must be at most {MAX_URI_LENGTH} characters")
    if "#" in value:
        raise InvalidRequest.at(pointer, "must not contain a fragment")
    if _URI.match(value) is None:
        raise InvalidRequest.at(
            pointer, f"{value[:64]!r} is not an absolute URI (RFC 3986 characters only)"
        )
    if hierarchical and _HIERARCHICAL.match(value) is None:
        raise InvalidRequest.at(
            pointer,
            "a prefix resource must be hierarchical (scheme://authority/path) without a query",
        )
    return value


def _normalize_pct(text: str) -> str:
    """Uppercase percent-encoding hex digits and decode percent-encoded unreserved octets."""

    def repl(match: re.Match[str]) -> str:
        char = chr(int(match[1], 16))
        return char if char in _UNRESERVED else "%" + match[1].upper()

    return _PCT.sub(repl, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4."""
    output: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith(("./", "/./")):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if output:
                output.pop()
        elif rest == "/..":
            rest = "/"
            if output:
                output.pop()
        elif rest in (".", ".."):
            rest = ""
        else:
            start = 1 if rest.startswith("/") else 0
            end = rest.find("/", start)
            if end == -1:
                end = len(rest)
            output.append(rest[:end])
            rest = rest[end:]
    return "".join(output)


def _normalize_authority(authority: str, scheme: str) -> str:
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):
        close = hostport.find("]")
        host, port_part = hostport[: close + 1], hostport[close + 1 :]
    else:
        host, sep, port = hostport.partition(":")
        port_part = sep + port
    host = _normalize_pct(_normalize_pct(host).lower())
    port = port_part[1:] if port_part.startswith(":") else ""
    if port.isdigit():
        port = str(int(port))
    port_part = "" if port in ("", _DEFAULT_PORTS.get(scheme)) else ":" + port
    prefix = _normalize_pct(userinfo) + "@" if at else ""
    return prefix + host + port_part


def _parts(uri: str) -> _Parts | None:
    """Parse and normalise; ``None`` when ``uri`` is not an acceptable absolute URI."""
    if not is_absolute_uri(uri):
        return None
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    rest, qmark, query = rest.partition("?")
    authority: str | None = None
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        if slash == -1:
            authority, path = rest[2:], ""
        else:
            authority, path = rest[2:slash], rest[slash:]
        authority = _normalize_authority(authority, scheme)
    else:
        path = rest
    path = _normalize_pct(path)
    if path.startswith("/"):
        path = _remove_dot_segments(path)
    if authority is not None and path == "" and scheme in _DEFAULT_PORTS:
        path = "/"
    return _Parts(scheme, authority, path, _normalize_pct(query) if qmark else None)


def normalize(uri: str) -> str:
    """The comparison form of ``uri``. Raises ``ValueError`` when it is not an absolute URI."""
    parts = _parts(uri)
    if parts is None:
        msg = f"{uri[:64]!r} is not an absolute URI"
        raise ValueError(msg)
    return parts.text()


def _extends(base: _Parts, request: _Parts) -> bool:
    """``request`` is ``base`` or lies below it at a path-segment boundary."""
    if base.text() == request.text():
        return True
    if base.query is not None or request.query is not None:
        return False
    if (base.scheme, base.authority) != (request.scheme, request.authority):
        return False
    if not request.path.startswith(base.path) or len(request.path) == len(base.path):
        return False
    return base.path.endswith("/") or request.path[len(base.path)] == "/"


RequestURI = _Parts
"""A request URI parsed once (``parse_request``) for matching against many entries."""


@functools.lru_cache(maxsize=8192)
def parse_request(uri: str) -> RequestURI | None:
    """The comparison form of a request URI, or ``None`` when it is not an absolute URI.

    Cached: enforcement points ask about the same resources over and over, and the
    parsed form is immutable."""
    return _parts(uri)


@dataclass(frozen=True)
class ResourceMatcher:
    """An entry's resource and match mode, normalised once, for repeated evaluation."""

    base: _Parts | None
    match: str
    text: str | None

    @classmethod
    def of(cls, entry_resource: str, entry_match: str) -> ResourceMatcher:
        base = _parts(entry_resource)
        return cls(base, entry_match, None if base is None else base.text())

    def covers(self, request: RequestURI | None) -> bool:
        """Anything unparseable, or an unknown match mode, is not covered (fail closed)."""
        if self.base is None or request is None:
            return False
        if self.match == EXACT:
            return self.text == request.text()
        if self.match == PREFIX:
            return _extends(self.base, request)
        return False


def resource_covers(entry_resource: str, entry_match: str, request_uri: str) -> bool:
    """Whether an entry's resource (with its match mode) covers one concrete request URI.

    Anything unparseable, or an unknown match mode, is not covered (fail closed).
    """
    return ResourceMatcher.of(entry_resource, entry_match).covers(_parts(request_uri))


def resources_meet(a_uri: str, a_match: str, b_uri: str, b_match: str) -> bool:
    """Whether two resource sets (each a URI with its match mode) share at least one URI:
    equal, or one lies within the other's prefix. Unparseable input, or an unknown match
    mode, never meets anything."""
    if a_match not in MATCH_MODES or b_match not in MATCH_MODES:
        return False
    a, b = parse_request(a_uri), parse_request(b_uri)
    if a is None or b is None:
        return False
    if a.text() == b.text():
        return True
    return (a_match == PREFIX and _extends(a, b)) or (b_match == PREFIX and _extends(b, a))


def is_hierarchical(uri: str) -> bool:
    """``scheme://authority[/path]`` without a query: a URI that can have anything below it."""
    return _HIERARCHICAL.match(uri) is not None


def resource_within(cand_uri: str, cand_match: str, ceil_uri: str, ceil_match: str) -> bool:
    """Whether the candidate's resource set lies inside the ceiling's.

    exact in prefix: when the ceiling covers it; prefix in exact: never; prefix in prefix: when
    the candidate base is covered by the ceiling base; exact in exact: equal after normalisation.
    """
    if cand_match not in MATCH_MODES or ceil_match not in MATCH_MODES:
        return False
    if ceil_match == EXACT:
        return cand_match == EXACT and resource_covers(ceil_uri, EXACT, cand_uri)
    return resource_covers(ceil_uri, PREFIX, cand_uri)
