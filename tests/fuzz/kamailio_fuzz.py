"""Fuzzes the Kamailio side's key templates and app rules (approute.kamailio).

With atheris (pip install atheris) this is a coverage-guided fuzzer; without
it, hypothesis drives the same checks. Properties, for any template text and
any header / pseudo-variable values:

- render() never raises, and equals an independent expansion: the template's
  literal text with each {field} replaced by its value ("" when absent), its
  flag true exactly when some field had a non-empty value;
- check_template() and Rule() either accept or raise SettingsError;
- the handler never crashes on an INVITE whatever its headers hold
  (do_app_routing returns through a decision, never through _crashed), and
  every header it appends is one line of printable ASCII.

Usage: kamailio_fuzz.py [-runs=N] [-max_total_time=S] [corpus dirs...]
(atheris/libFuzzer flags); APPROUTE_FUZZ_HYPOTHESIS=N forces hypothesis with N examples.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from fake_ksr import FakeKSR  # noqa: E402  (tests/python: the handler tests' fake)

try:
    import atheris
    with atheris.instrument_imports(include=["approute"]):
        import approute.kamailio as kam
except ImportError:
    atheris = None
    import approute.kamailio as kam

ROUTER = {
    "state": {"max_nodes": 4, "max_sessions": 64, "max_affinities": 64},
    "nodes": [{"id": "n1", "uri": "sip:127.0.0.1:5071", "pool": "media"},
              {"id": "n2", "uri": "sip:127.0.0.1:5072", "pool": "media"}],
    "apps": {"conference": {"pool": "media", "strategy": "round_robin", "affinity": {"grace": 0}}},
}
FIELDS = sorted(kam.FIELD_PVS) + ["app", "app_data", "hdr:X-Room", "pv:$var(x)", "room", "1"]
PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


class Fail(AssertionError):
    pass


def reference_render(tpl, lookup):
    """{name} with name one or more characters other than braces; the rest literal."""
    out, seen, i = [], False, 0
    while i < len(tpl):
        if tpl[i] == "{":
            j = i + 1
            while j < len(tpl) and tpl[j] not in "{}":
                j += 1
            if j < len(tpl) and tpl[j] == "}" and j > i + 1:
                v = lookup(tpl[i + 1:j])
                if v:
                    seen = True
                    out.append(str(v))
                i = j + 1
                continue
        out.append(tpl[i])
        i += 1
    return "".join(out), seen


_HANDLER: List[Any] = []


def handler(key_tpl):
    """One handler (and router) for every input; the app's key template is
    swapped in when Settings would accept it (None otherwise)."""
    try:
        kam.check_template(key_tpl, where="apps.conference: ")
    except kam.SettingsError:
        return None
    if not _HANDLER:
        settings = kam.Settings({
            "router": ROUTER, "shared": None,
            "rules": [{"ruri_user": "^room-(?P<room>[^@]*)$", "app": "conference", "data": "{room}"}],
            "apps": {"conference": {"key": "{from_domain}", "exec_app": "Conf"}}})
        _HANDLER.append(kam.create_handler(settings, ksr=FakeKSR.with_pvs({})))
    h = _HANDLER[0]
    h.settings.options("conference").key = key_tpl
    return h


def check(tpl, values, rule_pattern, hdrs):
    lookup = values.get
    got = kam.render(tpl, lookup)
    want = reference_render(tpl, lookup)
    if got != want:
        raise Fail("render(%r) = %r, expected %r" % (tpl, got, want))
    try:
        kam.check_template(tpl)
    except kam.SettingsError:
        pass
    try:
        kam.Rule({"ruri_user": rule_pattern, "app": tpl, "data": tpl}, 0)
    except kam.SettingsError:
        pass
    h = handler(tpl)
    if h is None:
        return
    ksr = FakeKSR.with_pvs({"$ci": values.get("call_id") or "c", "$rU": values.get("ruri_user"),
               "$fd": values.get("from_domain"), "$fu": values.get("from_uri"),
               "$si": "127.0.0.1", "$rm": "INVITE"}, hdrs)
    h.ksr = ksr
    rc = h.do_app_routing()
    errs = [s for lvl, s in ksr.logs if lvl == "err" and "failed:" in s]
    if errs:
        raise Fail("do_app_routing crashed: %s (template %r, values %r)" % (errs, tpl, values))
    for text in ksr.appended_text:
        if not text.endswith("\r\n") or not PRINTABLE.match(text[:-2]):
            raise Fail("appended header is not one printable line: %r" % text)
    if rc == kam.OK:
        h.on_bye()


def one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    parts = []
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        if fdp.ConsumeBool():
            parts.append("{%s}" % FIELDS[fdp.ConsumeIntInRange(0, len(FIELDS) - 1)])
        else:
            parts.append(fdp.ConsumeUnicodeNoSurrogates(12))
    tpl = "".join(parts)
    values = {}
    for name in FIELDS:
        if fdp.ConsumeBool():
            values[name] = fdp.ConsumeUnicodeNoSurrogates(40) if fdp.ConsumeBool() else fdp.ConsumeString(200)
    rule_pattern = fdp.ConsumeUnicodeNoSurrogates(16)
    hdrs = {"X-Room": fdp.ConsumeUnicodeNoSurrogates(60),
            "X-Approute-App": fdp.ConsumeUnicodeNoSurrogates(30)}
    if "ruri_user" in values and fdp.ConsumeBool():
        values["ruri_user"] = "room-" + values["ruri_user"]
    # Nothing is swallowed: Rule() reports a bad regex as SettingsError, so a
    # re.error escaping check() breaks the property too.
    check(tpl, values, rule_pattern, hdrs)


def run_hypothesis(n):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    field = st.sampled_from(FIELDS).map(lambda f: "{%s}" % f)
    tpl = st.lists(st.one_of(field, st.text(max_size=12)), max_size=6).map("".join)
    values = st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=200), max_size=len(FIELDS))

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(tpl, values, st.text(max_size=16),
           st.dictionaries(st.sampled_from(["X-Room", "X-Approute-App"]), st.text(max_size=60)))
    def prop(t, v, p, hd):
        check(t, v, p, hd)

    prop()
    print("kamailio_fuzz: hypothesis, %d examples, no failure" % n)


def main():
    forced = os.environ.get("APPROUTE_FUZZ_HYPOTHESIS")
    if forced or atheris is None:
        run_hypothesis(int(forced or 2000))
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
