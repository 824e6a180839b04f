"""examples/asterisk/, read the way Asterisk reads it (no Asterisk needed).

* pjsip.conf, section by section: each section's options against the
  option names its type accepts.  Asterisk drops an object with an unknown
  option ("Could not find option suitable for category ...") and every
  INVITE from the proxy then gets 401, so one misplaced option takes the
  node out.  The names are those of Asterisk's PJSIP configuration
  reference, kept to the options an approute node may need:
  https://docs.asterisk.org/Latest_API/API_Documentation/Module_Configuration/res_pjsip/
  (endpoint, aor, transport, auth) and
  https://docs.asterisk.org/Latest_API/API_Documentation/Module_Configuration/res_pjsip_endpoint_identifier_ip/
  (identify).  The endpoint must name its AOR and an existing transport,
  and an identify must match the proxy's address to it.
* extensions.conf: Asterisk substitutes ${...} first and parses the result,
  so a header value inside $[...], REGEX() or an application's arguments
  becomes syntax.  A header may only be read inside ISNULL(), LEN() or
  FILTER(); the filtered values never appear in $[...] or REGEX, and reach
  an application (Gosub, Stasis) only after the length and allow-list checks.
* The hangup extension ends the call's dialplan (the pattern must not run
  Stasis a second time at hangup).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ASTERISK = Path(__file__).resolve().parents[2] / "examples" / "asterisk"

# Option names per section type (Asterisk's res_pjsip configuration
# reference; a subset: what a node behind approute may set).
PJSIP_OPTIONS: Dict[str, Set[str]] = {
    "endpoint": {
        "type", "transport", "context", "disallow", "allow", "aors", "auth", "outbound_auth",
        "direct_media", "rewrite_contact", "rtp_symmetric", "force_rport", "dtmf_mode",
        "identify_by", "from_user", "from_domain", "trust_id_inbound", "send_pai",
        "media_address", "rtp_timeout", "timers", "language", "set_var", "accountcode",
        "allow_unauthenticated_options", "tos_audio", "cos_audio",
    },
    "aor": {
        "type", "contact", "max_contacts", "qualify_frequency", "qualify_timeout",
        "qualify_2xx_only", "authenticate_qualify", "remove_existing", "remove_unavailable",
        "default_expiration", "minimum_expiration", "maximum_expiration", "outbound_proxy",
        "support_path",
    },
    "identify": {"type", "endpoint", "match", "match_header", "match_request_uri", "srv_lookups"},
    "transport": {
        "type", "protocol", "bind", "external_media_address", "external_signaling_address",
        "external_signaling_port", "local_net", "tos", "cos", "allow_reload",
        "symmetric_transport", "method", "cert_file", "priv_key_file", "ca_list_file",
        "verify_server", "verify_client", "require_client_cert",
    },
    "auth": {"type", "auth_type", "username", "password", "md5_cred", "realm"},
}


def strip_comment(line: str) -> str:
    """The line without its ';' comment (an escaped \\; stays)."""
    return re.split(r"(?<!\\);", line, maxsplit=1)[0].rstrip()


def parse_conf(text: str) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """Asterisk's .conf layout: [section] headers (a name may repeat, one
    object per section) and key=value (or key => value) lines."""
    sections: List[Tuple[str, List[Tuple[str, str]]]] = []
    for raw in text.splitlines():
        line = strip_comment(raw).strip()
        if not line:
            continue
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            sections.append((m.group(1), []))
            continue
        assert sections, "option outside a section: %r" % raw
        key, sep, value = line.partition("=")
        assert sep, "not key=value: %r" % raw
        sections[-1][1].append((key.strip(), value.lstrip(">").strip()))
    return sections


def pjsip_objects() -> List[Tuple[str, str, Dict[str, str]]]:
    out = []
    for name, opts in parse_conf((ASTERISK / "pjsip.conf").read_text()):
        d = dict(opts)
        assert len(d) == len(opts) or {k for k, _ in opts} == set(d), name
        out.append((name, d.get("type", ""), dict(opts)))
    return out


def test_every_pjsip_option_belongs_to_its_section_type():
    objects = pjsip_objects()
    assert objects
    for name, kind, opts in objects:
        assert kind in PJSIP_OPTIONS, "[%s]: type=%r is not one of %s" % (
            name, kind, sorted(PJSIP_OPTIONS))
        unknown = set(opts) - PJSIP_OPTIONS[kind]
        assert not unknown, ("[%s] (type=%s): %s is not a %s option; Asterisk would drop the "
                             "object" % (name, kind, ", ".join(sorted(unknown)), kind))


def test_the_endpoint_loads_with_its_aor_and_transport_and_matches_the_proxy():
    objects = pjsip_objects()
    by_type: Dict[str, Dict[str, Dict[str, str]]] = {}
    for name, kind, opts in objects:
        assert name not in by_type.get(kind, {}), "[%s] type=%s twice" % (name, kind)
        by_type.setdefault(kind, {})[name] = opts
    endpoints = by_type.get("endpoint", {})
    assert len(endpoints) == 1
    (ep_name, ep), = endpoints.items()
    assert ep.get("context") == "from-approute"
    assert ep.get("transport") in by_type.get("transport", {})
    aors = [a.strip() for a in ep.get("aors", "").split(",") if a.strip()]
    assert aors, "the endpoint names no AOR (aors=): its AOR is never used"
    for a in aors:
        assert a in by_type.get("aor", {}), "aors=%s: no such aor section" % a
    identifies = [i for i in by_type.get("identify", {}).values() if i.get("endpoint") == ep_name]
    assert identifies, "no identify section matches the proxy to the endpoint"
    for i in identifies:
        assert re.match(r"^[0-9a-fA-F.:/,\s]+$", i.get("match", "")), \
            "identify by the proxy's address(es): match=%r" % i.get("match")
    ext = (ASTERISK / "extensions.conf").read_text()
    assert re.search(r"^\[from-approute\]", ext, re.M)


# --------------------------------------------------------------------------
# extensions.conf

# One priority: (extension, line number, application, its argument text).
Priority = Tuple[str, int, str, str]


def dialplan(text: str) -> Dict[str, List[Priority]]:
    """Contexts -> their priorities in file order."""
    contexts: Dict[str, List[Priority]] = {}
    current, exten = None, None
    for no, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw).strip()
        if not line:
            continue
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            current = m.group(1)
            contexts[current] = []
            continue
        m = re.match(r"^(exten|same)\s*=>\s*(.*)$", line)
        if not m or current is None:
            continue  # [globals] settings
        rest = m.group(2)
        if m.group(1) == "exten":
            exten, rest = rest.split(",", 1)
        prio, rest = rest.split(",", 1)
        am = re.match(r"^([A-Za-z_]+)\((.*)\)$", rest.strip())
        assert am, "line %d: cannot read the application in %r" % (no, raw)
        contexts[current].append((str(exten), no, am.group(1), am.group(2)))
    return contexts


SANITIZERS = ("ISNULL", "LEN", "FILTER")


def header_reads_are_sanitized(text: str) -> List[str]:
    """Every PJSIP_HEADER read must be the whole argument of ISNULL(),
    LEN() or FILTER(<literal characters>, ...)."""
    bad = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        for m in re.finditer(r"PJSIP_HEADER\(", line):
            ok = re.compile(r"\$\{(ISNULL|LEN)\(\$\{PJSIP_HEADER\(read,[A-Za-z-]+\)\}\)\}|"
                            r"\$\{FILTER\([^$,()]+,\$\{PJSIP_HEADER\(read,[A-Za-z-]+\)\}\)\}")
            spans = [s.span() for s in ok.finditer(line)]
            if not any(a <= m.start() < b for a, b in spans):
                bad.append("line %d: %s" % (no, raw.strip()))
    return bad


def header_variables(text: str) -> Set[str]:
    """Variables whose value comes from a header (not as a number)."""
    tainted: Set[str] = set()
    changed = True
    while changed:
        changed = False
        for raw in text.splitlines():
            line = strip_comment(raw)
            for m in re.finditer(r"Set\(([A-Za-z_][A-Za-z0-9_]*)=(.*)\)", line):
                name, value = m.group(1), m.group(2)
                numeric = re.fullmatch(r"\$\{(ISNULL|LEN)\(.*\)\}", value) is not None
                uses = "PJSIP_HEADER(" in value or any(
                    re.search(r"\$\{%s\}" % re.escape(v), value) for v in tainted)
                if uses and not numeric and name not in tainted:
                    tainted.add(name)
                    changed = True
    return tainted


def expressions(arg: str) -> List[str]:
    """The $[...] expressions in an argument (nested brackets counted)."""
    out: List[str] = []
    i = 0
    while True:
        i = arg.find("$[", i)
        if i < 0:
            return out
        depth, j = 0, i + 1
        while j < len(arg):
            if arg[j] == "[":
                depth += 1
            elif arg[j] == "]":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        out.append(arg[i:j + 1])
        i = j


SANITIZED_READ = re.compile(r"\$\{(ISNULL|LEN)\(\$\{PJSIP_HEADER\(read,[A-Za-z-]+\)\}\)\}|"
                            r"\$\{FILTER\([^$,()]+,\$\{PJSIP_HEADER\(read,[A-Za-z-]+\)\}\)\}")


def unsafe_uses(text: str) -> List[str]:
    """Header-derived text inside $[...], REGEX(), a Set() or GotoIf() other
    than as a length / flag / allow-list lookup, or an application's
    arguments before the checks.  Empty when the dialplan is safe."""
    bad = ["raw header read, " + b for b in header_reads_are_sanitized(text)]
    tainted = sorted(header_variables(text))
    refs = [re.compile(r"\$\{%s\}" % re.escape(v)) for v in tainted]
    refs.append(re.compile(r"PJSIP_HEADER\("))

    def has(s: str) -> bool:
        return any(r.search(s) for r in refs)

    def bare(s: str) -> bool:
        """A reference left once the harmless forms are taken out: a
        sanitized header read, LEN()/ISNULL() of a value (a number, a flag),
        DIALPLAN_EXISTS() of a value (a flag)."""
        s = SANITIZED_READ.sub("", s)
        for v in tainted:
            ref = r"\$\{%s\}" % re.escape(v)
            s = re.sub(r"\$\{(LEN|ISNULL)\(%s\)\}" % ref, "", s)
            s = re.sub(r"\$\{DIALPLAN_EXISTS\([^,${}()]+,%s,1\)\}" % ref, "", s)
        return has(s)

    for ctx, prios in dialplan(text).items():
        checked_len = checked_allow = False
        for exten, no, app, arg in prios:
            where = "line %d ([%s] %s %s)" % (no, ctx, exten, app)
            for e in expressions(arg):
                if has(e):
                    bad.append("%s: header value inside %s" % (where, e))
            if "REGEX(" in arg and has(arg.split("REGEX(", 1)[1]):
                bad.append("%s: header value inside REGEX()" % where)
            if app == "GotoIf" and "LEN" in arg and re.search(r"\?:refused,", arg):
                checked_len = True  # fails closed: only a true comparison goes on
            if app == "GotoIf" and "DIALPLAN_EXISTS(" in arg:
                checked_allow = True
            if app == "NoOp" or not bare(arg):
                continue
            if app in ("Set", "GotoIf", "ExecIf", "GosubIf"):
                bad.append("%s: header value in %s()'s arguments" % (where, app))
            elif not (checked_len and checked_allow):
                bad.append("%s: header value in an application's arguments before the "
                           "length and allow-list checks" % where)
    return bad


def test_no_header_value_reaches_an_expression_regex_or_application_unchecked():
    text = (ASTERISK / "extensions.conf").read_text()
    assert header_variables(text) >= {"EXEC_APP", "EXEC_DATA"}
    assert unsafe_uses(text) == []


@pytest.mark.parametrize("line", [
    # the bypass found against a real Asterisk: the raw value in $[...]
    'same => n,GotoIf($["${EXEC_APP}" = ""]?noapp,1)',
    'same => n,Set(APP_OK=${REGEX("${APPROUTE_APPS}" ${EXEC_APP})})',
    'same => n,Set(X=${PJSIP_HEADER(read,X-Exec-App)})',
    'same => n,Stasis(${EXEC_APP},${EXEC_DATA})',  # before the checks
    'same => n,GotoIf(${EXEC_APP}?refused,1)',
    'same => n,Set(GROUP(approute)=${EXEC_APP})',
])
def test_the_check_finds_each_unsafe_form(line):
    text = ("[from-approute]\n"
            "exten => _X!,1,Set(EXEC_APP=${FILTER(0-9A-Z_a-z,${PJSIP_HEADER(read,X-Exec-App)})})\n"
            " same => n,Set(EXEC_DATA=${FILTER(0-9,${PJSIP_HEADER(read,X-Exec-App-Data)})})\n"
            " " + line + "\n")
    assert unsafe_uses(text), line


def pattern_matches(pattern: str, exten: str) -> bool:
    """Asterisk's extension pattern (_ prefix): X N Z, [classes], . (one or
    more) and ! (zero or more); other characters stand for themselves."""
    if not pattern.startswith("_"):
        return pattern == exten
    rx, i, p = "", 0, pattern[1:]
    while i < len(p):
        c = p[i]
        if c == "[":
            j = p.index("]", i)
            rx += "[" + re.sub(r"([\\^])", r"\\\1", p[i + 1:j]) + "]"
            i = j + 1
            continue
        rx += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(
            c.upper() if c in "xzn" else c, re.escape(c))
        i += 1
    return re.fullmatch(rx, exten) is not None


def test_pattern_matching_as_asterisk_does():
    assert pattern_matches("_[0-9a-zA-Z+*#]!", "h")
    assert pattern_matches("_X.", "12") and not pattern_matches("_X.", "1")
    assert not pattern_matches("_[0-9]!", "h")


def test_the_hangup_extension_ends_the_call():
    """`h` matches the catch-all pattern too: without its own extension
    ending in Hangup() the routing (and Stasis) runs again at hangup."""
    contexts = dialplan((ASTERISK / "extensions.conf").read_text())
    for ctx, prios in contexts.items():
        if not any(pattern_matches(e, "h") for e, _, _, _ in prios if e.startswith("_")):
            continue
        h = [(app, arg) for e, _, app, arg in prios if e == "h"]
        assert h, "[%s]: its pattern matches `h` and there is no h extension" % ctx
        assert h[-1][0] == "Hangup", "[%s]: the h extension must end with Hangup()" % ctx
        assert all(app != "Stasis" for app, _ in h)
