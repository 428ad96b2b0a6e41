"""Pure normalisers and validators for ThreatConnect indicator values.

Every function here takes one value as Assemblyline reported it and returns
the form ThreatConnect expects, or raises ``ValueRejected`` with a stable
machine-readable ``reason`` and a human ``detail``. Nothing here knows about
settings, submissions or batch files (that is ``lib.indicators``).

Decisions (see also the module constants):

* **Defanged values are refanged**, deterministically and only for tokens that
  cannot occur in a valid host: ``[.]`` ``(.)`` ``{.}`` ``[dot]`` ``(dot)``
  ``{dot}`` -> ``.``, ``[:]`` -> ``:``, ``[@]`` ``(@)`` ``[at]`` ``(at)`` -> ``@``,
  ``[://]`` -> ``://`` and the schemes ``hxxp``/``hxxps``/``fxp`` (any case).
  In URLs only the scheme and the authority (userinfo, host, port) are
  refanged; the path, query and fragment stay byte for byte. Any other bracket
  in a host is invalid and rejected.
* **Host names** are lower-case ASCII with one trailing dot removed;
  internationalised names go through UTS #46 + IDNA 2008 (``idna``) to
  punycode. Labels are 1-63 characters of ``a-z 0-9 - _`` (``_`` occurs in
  real C2 and dynamic-DNS names and resolves) not starting or ending with
  ``-``; the top-level label is letters and digits only and not all-numeric;
  ``xn--`` labels must decode; a name over 253 characters is ``too_long``.
  E-mail domains keep the stricter LDH rule (no ``_``).
* **IPv4** addresses must be dotted quads without leading zeros (ambiguous
  octal, refused on every Python version, not only on patched ones).
  **IPv6** addresses are written as ThreatConnect stores them: eight groups,
  lower-case, no leading zeros, no ``::`` compression
  (``2001:DB8::1`` -> ``2001:db8:0:0:0:0:0:1``), like its CIDR value rule.
  Zone ids (``fe80::1%eth0``) are refused. IPv4-mapped IPv6
  (``::ffff:1.2.3.4``) becomes the IPv4 address.
* **Non-public addresses** are decided by the fixed tables below (IANA
  special-purpose registries), not by ``ipaddress.is_private``, whose answer
  changed between Python patch releases: the same input must give the same
  output on 3.8 and 3.11.
* **Speed**: addresses are parsed by the C ``socket.inet_pton`` first (for
  IPv4 only after the digits/leading-zero checks above); whatever it refuses
  goes to ``ipaddress``, which has the final word. ASCII host names are
  checked with whole-string ``str`` methods (no regular expressions);
  ``idna`` runs only for non-ASCII names and ``xn--`` labels (memoised).
* **URLs**: schemes http, https, ftp, ftps, sftp, ws, wss (others are
  ``unsupported_scheme``); ``scheme://host`` required; no white space or
  control characters anywhere. The authority is read as a browser reads it: a
  ``\\`` ends it like ``/`` (so ``http://evil.com\\@good.com/`` is a URL on
  ``evil.com``, and the private-address filter sees that host), the last ``@``
  separates userinfo (RFC 3986 characters only), port 0-65535, the scheme's
  default port (``:80`` for http/ws, ``:443`` for https/wss, ``:21`` for ftp)
  and an empty port are dropped. Path, query and fragment are kept as they are
  (non-ASCII path characters included).
* **E-mail addresses**: unquoted dot-atom local part (case kept, at most 64),
  domain as a host name (no address literals).
* **Length limits** (ThreatConnect does not document them; these are the
  assumptions): host 253 (DNS), e-mail address 254 (RFC 5321 path), URL text
  500 characters (``MAX_URL_LENGTH``), tag name 128, hashes exact length.
"""
import functools
import ipaddress
from bisect import bisect_right as _bisect_right
from socket import AF_INET as _AF_INET, AF_INET6 as _AF_INET6, inet_pton as _inet_pton
from typing import Callable, Dict, Set, Tuple

import idna

MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
MAX_EMAIL_LENGTH = 254
MAX_EMAIL_LOCAL_LENGTH = 64
MAX_URL_LENGTH = 500  # assumption: ThreatConnect's URL text limit is not documented
MAX_TAG_LENGTH = 128

URL_SCHEMES = frozenset(("http", "https", "ftp", "ftps", "sftp", "ws", "wss"))
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}
# RFC 3986 userinfo: unreserved, pct-encoded ("%"), sub-delims and ":"
_USERINFO_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                            "-._~%!$&'()*+,;=:")

HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}

# Names that only make sense inside one network. Single-label names are local too.
LOCAL_HOST_NAMES = frozenset(("localhost", "localhost.localdomain"))
LOCAL_HOST_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".lan", ".home.arpa")


class ValueRejected(ValueError):
    """A value ThreatConnect would refuse; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__("{}: {}".format(reason, detail))
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- refanging

_HOST_FANGS = (("[.]", "."), ("(.)", "."), ("{.}", "."), ("[dot]", "."), ("(dot)", "."),
               ("{dot}", "."), ("[:]", ":"), ("[@]", "@"), ("(@)", "@"), ("[at]", "@"),
               ("(at)", "@"))
_SCHEME_FANGS = {"hxxp": "http", "hxxps": "https", "fxp": "ftp", "fxps": "ftps"}


def refang(value: str) -> str:
    """Undo the usual defanging tokens anywhere in a host, address or e-mail."""
    if "[" not in value and "(" not in value and "{" not in value:
        return value
    lowered = value.lower()
    for token, plain in _HOST_FANGS:
        if token in lowered:
            value = _replace_ci(value, token, plain)
            lowered = value.lower()
    return value


def _replace_ci(value: str, token: str, plain: str) -> str:
    lowered = value.lower()
    out = []
    start = 0
    while True:
        index = lowered.find(token, start)
        if index < 0:
            out.append(value[start:])
            return "".join(out)
        out.append(value[start:index])
        out.append(plain)
        start = index + len(token)


def refang_url(value: str) -> str:
    """Refang the scheme and the authority of a URL; leave path, query and fragment alone."""
    if "[" not in value and "(" not in value and "{" not in value \
            and value[:3].lower() not in ("hxx", "fxp"):
        return value
    head, sep, rest = value.partition("[://]")
    if not sep or "/" in head:
        head, sep, rest = value.partition("[:]//")
        if not sep or "/" in head:
            head, sep, rest = value.partition("://")
    if not sep:
        return value
    scheme = _SCHEME_FANGS.get(head.lower(), head)
    # The authority ends at the first / ? or #.
    end = len(rest)
    for char in "/?#":
        index = rest.find(char)
        if 0 <= index < end:
            end = index
    authority = refang(rest[:end])
    return scheme + "://" + authority + rest[end:]


# --------------------------------------------------------------------------- IP addresses

def _ranges(networks):
    """Sorted, merged (first, last) integer ranges and the list of starts for bisect."""
    spans = sorted((int(n.network_address), int(n.broadcast_address))
                   for n in map(ipaddress.ip_network, networks))
    merged = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return [first for first, _ in merged], [last for _, last in merged]


# IPv4 addresses that are not globally reachable (IANA IPv4 special-purpose
# registry, RFC 6890 and successors). Whole blocks, deliberately simple.
NON_PUBLIC_IPV4 = (
    "0.0.0.0/8",          # "this network", includes the unspecified address
    "10.0.0.0/8",         # private
    "100.64.0.0/10",      # shared address space (carrier-grade NAT)
    "127.0.0.0/8",        # loopback
    "169.254.0.0/16",     # link-local
    "172.16.0.0/12",      # private
    "192.0.0.0/24",       # IETF protocol assignments
    "192.0.2.0/24",       # documentation (TEST-NET-1)
    "192.88.99.0/24",     # deprecated 6to4 relay anycast
    "192.168.0.0/16",     # private
    "198.18.0.0/15",      # benchmarking
    "198.51.100.0/24",    # documentation (TEST-NET-2)
    "203.0.113.0/24",     # documentation (TEST-NET-3)
    "224.0.0.0/4",        # multicast
    "240.0.0.0/4",        # reserved, includes the limited broadcast address
)
# IPv6: everything outside global unicast 2000::/3 is non-public (unspecified,
# loopback, IPv4-compatible, NAT64, discard, unique local, link-local,
# site-local, multicast, reserved); inside it these blocks are non-public too.
NON_PUBLIC_IPV6_IN_GLOBAL = (
    "2001::/23",          # IETF protocol assignments (Teredo, benchmarking, ORCHID...)
    "2001:db8::/32",      # documentation
    "3fff::/20",          # documentation (RFC 9637)
)
_V4_STARTS, _V4_ENDS = _ranges(NON_PUBLIC_IPV4)
_V6_STARTS, _V6_ENDS = _ranges(NON_PUBLIC_IPV6_IN_GLOBAL)
_V6_GLOBAL_FIRST = int(ipaddress.IPv6Address("2000::"))
_V6_GLOBAL_LAST = int(ipaddress.IPv6Address("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))


def _in_ranges(number: int, starts, ends) -> bool:
    index = _bisect_right(starts, number) - 1
    return index >= 0 and number <= ends[index]


def ipv4_is_public(number: int) -> bool:
    return not _in_ranges(number, _V4_STARTS, _V4_ENDS)


def ipv6_is_public(number: int) -> bool:
    if number < _V6_GLOBAL_FIRST or number > _V6_GLOBAL_LAST:
        return False
    return not _in_ranges(number, _V6_STARTS, _V6_ENDS)


def ipv6_text(number: int) -> str:
    """ThreatConnect's IPv6 form: eight lower-case groups, no leading zeros, no ``::``."""
    return "%x:%x:%x:%x:%x:%x:%x:%x" % (
        number >> 112, (number >> 96) & 0xFFFF, (number >> 80) & 0xFFFF, (number >> 64) & 0xFFFF,
        (number >> 48) & 0xFFFF, (number >> 32) & 0xFFFF, (number >> 16) & 0xFFFF, number & 0xFFFF)


_from_bytes = int.from_bytes


def normalise_ip(value: str) -> Tuple[str, bool]:
    """Return ``(address, is_public)`` for an IPv4 or IPv6 address."""
    if ":" in value:
        return _normalise_ipv6(value)
    parts = value.split(".")
    if len(parts) != 4:
        raise ValueRejected("invalid_ip", "not an IPv4 or IPv6 address")
    # Fast path for the canonical form (four 0-255 decimals, no leading zeros),
    # which is its own normal form: digits and dots checked here, the rest by
    # the C inet_pton. Anything else goes to ipaddress for the verdict.
    if value.isascii() and value.replace(".", "").isdigit() and (
            ".0" not in "." + value or all(len(p) < 2 or p[0] != "0" for p in parts)):
        try:
            number = _from_bytes(_inet_pton(_AF_INET, value), "big")
        except OSError:
            pass
        else:
            index = _bisect_right(_V4_STARTS, number) - 1
            return value, index < 0 or number > _V4_ENDS[index]
    for part in parts:
        if len(part) > 1 and part[0] == "0" and part.isdigit():
            raise ValueRejected("invalid_ip", "IPv4 octet with a leading zero (ambiguous octal)")
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueRejected("invalid_ip", "not an IPv4 address") from None
    return str(address), ipv4_is_public(int(address))


def _normalise_ipv6(value: str) -> Tuple[str, bool]:
    if "%" in value:
        raise ValueRejected("invalid_ip", "IPv6 zone identifiers are not addresses")
    try:  # the C parser first; ipaddress has the last word on what it refuses
        number = _from_bytes(_inet_pton(_AF_INET6, value), "big")
    except (OSError, ValueError):
        try:
            number = int(ipaddress.IPv6Address(value))
        except ValueError:
            raise ValueRejected("invalid_ip", "not an IPv6 address") from None
    if number >> 32 == 0xFFFF:  # IPv4-mapped: the IPv4 host it names
        v4 = number & 0xFFFFFFFF
        return str(ipaddress.IPv4Address(v4)), ipv4_is_public(v4)
    return ipv6_text(number), ipv6_is_public(number)


# --------------------------------------------------------------------------- host names

@functools.lru_cache(maxsize=4096)
def _idna_to_ascii(host: str) -> str:
    """UTS #46 mapping + IDNA 2008 (non-transitional) of a name with non-ASCII characters."""
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise ValueRejected("invalid_host", "not a valid internationalised name ({})".format(exc)) from None


@functools.lru_cache(maxsize=4096)
def _punycode_label_ok(label: str) -> bool:
    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    return True


def normalise_host(value: str) -> str:
    """ASCII, lower-case, punycoded host name; raises ``ValueRejected``."""
    if value.endswith("."):
        value = value[:-1]
    if not value:
        raise ValueRejected("invalid_host", "empty host name")
    if not value.isascii():
        value = _idna_to_ascii(value)
    host = value.lower()
    # Whole-name checks first (one C-level pass each); labels only when needed.
    if not host.replace("-", "").replace(".", "").replace("_", "").isalnum():  # ASCII: [a-z0-9_-]
        raise ValueRejected("invalid_host", "characters other than letters, digits, '-', '_' and '.'")
    if len(host) > MAX_HOST_LENGTH:
        raise ValueRejected("too_long", "host name longer than {} characters".format(MAX_HOST_LENGTH))
    if host[0] == "." or ".." in host:
        raise ValueRejected("invalid_host", "empty label")
    if host[0] == "-" or host[-1] == "-" or "-." in host or ".-" in host:
        raise ValueRejected("invalid_host", "label starts or ends with '-'")
    top = host.rpartition(".")[2]
    if top.isdigit():
        raise ValueRejected("invalid_host", "all-numeric top-level label")
    if "_" in top:
        raise ValueRejected("invalid_host", "'_' in the top-level label")
    if len(host) > MAX_LABEL_LENGTH or "xn--" in host:
        for label in host.split("."):
            if len(label) > MAX_LABEL_LENGTH:
                raise ValueRejected("invalid_host", "label longer than {} characters".format(
                    MAX_LABEL_LENGTH))
            if label[:4] == "xn--" and not _punycode_label_ok(label):
                raise ValueRejected("invalid_host", "invalid punycode label")
    return host


def host_is_public(host: str) -> bool:
    """False for local names: localhost, single labels and local-only suffixes."""
    if "." not in host or host in LOCAL_HOST_NAMES:
        return False
    return not host.endswith(LOCAL_HOST_SUFFIXES)


def host_and_scope(value: str) -> Tuple[str, bool]:
    """``(host, is_public)`` of a host name: ``normalise_host`` then ``host_is_public``."""
    host = normalise_host(value)
    return host, host_is_public(host)


class HostNames:
    """``host_and_scope`` with a memory, for one build: the same host name comes in Host
    tags, in many URLs and in e-mail addresses. Only accepted names are kept (a rejected
    one is checked again, which raises again); as strings, which the garbage collector
    does not track."""

    __slots__ = ("_names", "_public")

    def __init__(self) -> None:
        self._names: Dict[str, str] = {}  # value -> host
        self._public: Set[str] = set()  # hosts that are public

    def __call__(self, value: str) -> Tuple[str, bool]:
        host = self._names.get(value)
        if host is None:
            host = self._names[value] = normalise_host(value)
            public = host_is_public(host)
            if public:
                self._public.add(host)
            return host, public
        return host, host in self._public


# --------------------------------------------------------------------------- URLs

def split_url(value: str) -> Tuple[str, str, str]:
    """``(scheme, authority, rest)`` of an absolute ``scheme://authority/rest`` URL.

    The split ``urllib.parse.urlsplit`` makes (scheme up to ``://``, authority
    up to the first ``/``, ``?`` or ``#``), done with two string searches
    because ``urlsplit`` was a third of the URL cost; the scheme is lower-cased
    and ``rest`` is kept byte for byte. Raises ``ValueRejected``.
    """
    index = value.find("://")
    if index <= 0:
        raise ValueRejected("invalid_url", "no scheme://host")
    scheme = value[:index].lower()
    rest = value[index + 3:]
    end = rest.find("/")  # then a ? or # before it (unrolled: this is per URL)
    if end < 0:
        end = len(rest)
    found = rest.find("?", 0, end)
    if found >= 0:
        end = found
    found = rest.find("#", 0, end)
    if found >= 0:
        end = found
    return scheme, rest[:end], rest[end:]


def _browser_authority(netloc: str, tail: str) -> Tuple[str, str]:
    """A browser ends the authority at a backslash too, as at ``/``."""
    backslash = netloc.find("\\")
    if backslash < 0:
        return netloc, tail
    return netloc[:backslash], netloc[backslash:] + tail


def url_host(value: str) -> str:
    """The host text of ``scheme://[userinfo@]host[:port]...`` as a browser reads it (an IPv6
    literal without its brackets); ``""`` when there is none. Not validated: that is the
    caller's (``normalise_url``, ``normalise_ip``, ``normalise_host``)."""
    _, netloc, tail = split_url(value)
    hostport = _browser_authority(netloc, tail)[0].rpartition("@")[2]
    if hostport.startswith("["):
        close = hostport.find("]")
        return hostport[1:close] if close > 0 else ""
    return hostport.partition(":")[0]


def normalise_url(value: str, host_names: Callable[[str], Tuple[str, bool]] = host_and_scope
                  ) -> Tuple[str, bool, str]:
    """Return ``(url, host_is_public, host)``: scheme and host lower-case, host validated.

    ``host`` is what ``url_host(url)`` gives (an IPv6 literal without its brackets);
    ``host_names`` normalises a host name (a ``HostNames`` shares the work of one build)."""
    if " " in value or not value.isprintable():
        raise ValueRejected("invalid_url", "contains white space or control characters")
    scheme, netloc, tail = split_url(value)
    if scheme not in URL_SCHEMES:
        if not scheme.isascii() or not scheme[0].isalpha() \
                or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
            raise ValueRejected("invalid_url", "no scheme://host")
        raise ValueRejected("unsupported_scheme", "scheme {!r} is not one of {}".format(
            scheme, ", ".join(sorted(URL_SCHEMES))))
    netloc, tail = _browser_authority(netloc, tail)
    if not netloc:
        raise ValueRejected("invalid_url", "no host")
    userinfo, at, hostport = netloc.rpartition("@")
    if userinfo and not _USERINFO_CHARS.issuperset(userinfo):
        raise ValueRejected("invalid_url", "bad userinfo")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueRejected("invalid_url", "unclosed IPv6 literal")
        literal, port_part = hostport[1:close], hostport[close + 1:]
        if "." in literal and ":" not in literal:
            raise ValueRejected("invalid_url", "IPv4 address in brackets")
        try:
            address, public = _normalise_ipv6(literal)
        except ValueRejected as rejected:
            raise ValueRejected("invalid_url", "bad IPv6 literal: " + rejected.detail) from None
        bare = address
        host = "[" + address + "]" if ":" in address else address
    else:
        host, colon, port = hostport.partition(":")
        port_part = colon + port
        host, public = _url_host(host, host_names)
        bare = host
    if port_part:
        port = port_part[1:]
        if port_part[0] != ":" or not (port == "" or (port.isdigit() and port.isascii()
                                                      and int(port) <= 65535)):
            raise ValueRejected("invalid_url", "bad port")
        if port == "" or port.lstrip("0") == DEFAULT_PORTS.get(scheme, "-").lstrip("0"):
            port_part = ""  # what a browser connects to anyway
    text = scheme + "://" + userinfo + at + host + port_part + tail
    if len(text) > MAX_URL_LENGTH:
        raise ValueRejected("too_long", "URL longer than {} characters".format(MAX_URL_LENGTH))
    return text, public, bare


def _url_host(host: str, host_names: Callable[[str], Tuple[str, bool]]) -> Tuple[str, bool]:
    if not host:
        raise ValueRejected("invalid_url", "no host")
    last = host.rstrip(".").rpartition(".")[2]
    if last.isdigit() and last.isascii():  # looks like an IPv4 address
        try:
            return normalise_ip(host)
        except ValueRejected as rejected:
            raise ValueRejected("invalid_url", "bad IPv4 host: " + rejected.detail) from None
    try:
        return host_names(host)
    except ValueRejected as rejected:
        raise ValueRejected("invalid_url", "bad host: " + rejected.detail) from None


# --------------------------------------------------------------------------- e-mail addresses

# RFC 5322 dot-atom characters (quoted local parts are refused).
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         "!#$%&'*+/=?^_`{|}~.-")


def normalise_email(value: str, host_names: Callable[[str], Tuple[str, bool]] = host_and_scope
                    ) -> Tuple[str, bool]:
    """Return ``(address, domain_is_public)``: local part kept, domain lower-case punycode."""
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueRejected("invalid_email", "not local@domain")
    if len(local) > MAX_EMAIL_LOCAL_LENGTH:
        raise ValueRejected("invalid_email", "local part longer than {}".format(MAX_EMAIL_LOCAL_LENGTH))
    if not _LOCAL_CHARS.issuperset(local) or local[0] == "." or local[-1] == "." or ".." in local:
        raise ValueRejected("invalid_email", "local part is not a plain dot-atom")
    if domain.startswith("["):
        raise ValueRejected("invalid_email", "address literals are not supported")
    if "_" in domain:
        raise ValueRejected("invalid_email", "bad domain: '_' is not allowed in a mail domain")
    try:
        domain, public = host_names(domain)
    except ValueRejected as rejected:
        raise ValueRejected("invalid_email", "bad domain: " + rejected.detail) from None
    address = local + "@" + domain
    if len(address) > MAX_EMAIL_LENGTH:
        raise ValueRejected("too_long", "address longer than {} characters".format(MAX_EMAIL_LENGTH))
    return address, public


# --------------------------------------------------------------------------- host artefacts

MAX_ARTEFACT_LENGTH = 500  # assumption, like MAX_URL_LENGTH: TC does not document it
# Registry hive abbreviations Assemblyline services write -> the names ThreatConnect requires.
REGISTRY_HIVES = {
    "HKLM": "HKEY_LOCAL_MACHINE", "HKCU": "HKEY_CURRENT_USER", "HKCR": "HKEY_CLASSES_ROOT",
    "HKU": "HKEY_USERS", "HKCC": "HKEY_CURRENT_CONFIG",
    "\\REGISTRY\\MACHINE": "HKEY_LOCAL_MACHINE", "\\REGISTRY\\USER": "HKEY_USERS",
}
REGISTRY_ROOTS = frozenset(REGISTRY_HIVES.values())


def _artefact(value: str, kind: str) -> str:
    if not value.strip():
        raise ValueRejected("invalid_" + kind, "empty")
    if not value.isprintable():
        raise ValueRejected("invalid_" + kind, "contains control characters")
    text = value.strip()
    if len(text) > MAX_ARTEFACT_LENGTH:
        raise ValueRejected("too_long", "longer than {} characters".format(MAX_ARTEFACT_LENGTH))
    return text


def normalise_mutex(value: str) -> Tuple[str, bool]:
    """A mutex name, kept as written (case matters to Windows' object manager)."""
    return _artefact(value, "mutex"), True


def normalise_user_agent(value: str) -> Tuple[str, bool]:
    """A User-Agent header value, white space collapsed."""
    return " ".join(_artefact(value, "user_agent").split()), True


def normalise_registry_key(value: str) -> Tuple[str, bool]:
    """``HKLM\\Software\\X`` -> ``HKEY_LOCAL_MACHINE\\Software\\X`` (ThreatConnect wants ``HKEY_...``)."""
    text = _artefact(value, "registry_key").replace("/", "\\")
    for kernel in ("\\REGISTRY\\MACHINE", "\\REGISTRY\\USER"):  # kernel object paths
        if text.upper() == kernel or text.upper().startswith(kernel + "\\"):
            hive, sep, rest = kernel, text[len(kernel):len(kernel) + 1], text[len(kernel) + 1:]
            break
    else:
        hive, sep, rest = text.partition("\\")
    upper = hive.upper()
    root = REGISTRY_HIVES.get(upper, upper if upper in REGISTRY_ROOTS else None)
    if root is None:
        raise ValueRejected("invalid_registry_key", "does not start with a registry hive (HKEY_..., HKLM ...)")
    return root + (sep + rest if rest else ""), True


# --------------------------------------------------------------------------- hashes and tags

_HEX = frozenset("0123456789abcdef")


def normalise_hash(kind: str, value: str) -> str:
    """Lower-case hex digest of the exact length for ``kind`` (md5, sha1, sha256)."""
    if not isinstance(value, str):
        raise ValueRejected("invalid_hash", "{} is not a string".format(kind))
    digest = value.strip().lower()
    if len(digest) != HASH_LENGTHS[kind] or not _HEX.issuperset(digest):
        raise ValueRejected("invalid_hash", "{} must be {} hex digits".format(kind, HASH_LENGTHS[kind]))
    return digest


def clean_text(value: str, limit: int) -> str:
    """One line of printable text: white space collapsed, control characters dropped, trimmed."""
    text = " ".join(value.split())
    if not text.isprintable():
        text = "".join(char for char in text if char.isprintable())
    if len(text) > limit:
        text = text[:limit].rstrip()
    return text


def tag_name(value: str) -> str:
    """A valid ThreatConnect tag name (at most 128 characters) or ``""``."""
    return clean_text(value, MAX_TAG_LENGTH) if isinstance(value, str) else ""
