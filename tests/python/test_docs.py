"""The user documentation stands on its own: every reference points into the repository."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]

# What users read: the README, docs/, the Python package, the examples, the public headers.
USER_FILES = ["README.md", "docs/*.md", "python/approute/*.py", "python/approute/*.pyi",
              "examples/**/*", "libapproute/include/approute/*.h"]


def user_files() -> Iterator[Path]:
    seen = set()
    for pattern in USER_FILES:
        for p in sorted(ROOT.glob(pattern)):
            if p.is_file() and p not in seen and "__pycache__" not in p.parts:
                seen.add(p)
                yield p


def test_user_files_exist() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in user_files()}
    assert {"README.md", "docs/design.md", "python/approute/__init__.py",
            "libapproute/include/approute/router.h", "examples/kamailio/kamailio.cfg"} <= names


def test_no_reference_to_a_file_outside_the_repository() -> None:
    bad: List[str] = []
    for p in user_files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if re.search(r"DESIGN(\.md)? section|\.\./shared|shared/DESIGN|\bDESIGN\.md", line):
                bad.append("%s:%d: %s" % (p.relative_to(ROOT), i, line.strip()))
    assert not bad, "\n".join(bad)


def design_sections() -> List[str]:
    text = (ROOT / "docs/design.md").read_text(encoding="utf-8")
    return [m.group(1).strip() for m in re.finditer(r"^## (.+)$", text, re.M)]


def test_design_has_the_sections_users_are_sent_to() -> None:
    sections = design_sections()
    for name in ("Concepts", "State", "Routing flow", "Health, load and the event package",
                 "Kamailio integration", "Public contract"):
        assert name in sections, sections
    assert "Several proxies" in sections, sections
    text = (ROOT / "docs/design.md").read_text(encoding="utf-8")
    several = text.split("## Several proxies", 1)[1].split("\n## ", 1)[0]
    # Shipped: the section sends readers to the cluster guide and no longer
    # speaks of a plan.
    assert "docs/cluster.md" in several
    assert not re.search(r"\b(plan|planned)\b", several, re.I), several


def references() -> Iterator[Tuple[str, str]]:
    # `docs/design.md`, "Routing flow"   or   docs/design.md ("Public contract")
    pat = re.compile(r"docs/design\.md`?,? \(?\"([^\"]+)\"")
    for p in user_files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for m in pat.finditer(text):
            yield p.relative_to(ROOT).as_posix(), m.group(1)


def test_every_named_section_exists() -> None:
    refs = list(references())
    assert len(refs) >= 5  # the README, headers and docs name sections
    sections = set(design_sections())
    missing = ["%s -> %r" % r for r in refs if r[1] not in sections]
    assert not missing, missing


def test_docs_named_in_the_readme_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(docs/[A-Za-z0-9_.-]+\.md)`", readme))
    assert "docs/design.md" in named
    assert [n for n in sorted(named) if not (ROOT / n).is_file()] == []


# --------------------------------------------------------------------------
# The README's commands and configuration keys are the real ones.

def _code_lines(text: str) -> Iterator[str]:
    """Inline code spans, indented code lines and fenced blocks' lines."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            yield line.strip()
        yield from re.findall(r"`([^`]+)`", line)


def readme_commands() -> List[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found: Set[str] = set()
    for code in _code_lines(readme):
        m = re.match(r"(?:\.venv/bin/|scripts/)?approute ([a-z][a-z|-]*)", code)
        if m:
            found.update(c for c in m.group(1).split("|") if c)
    return sorted(found)


def test_every_command_the_readme_names_exists(capsys) -> None:
    import io

    from approute import cli
    named = readme_commands()
    assert {"status", "drain", "validate", "sessions", "end", "unlink"} <= set(named), named
    broken = []
    for cmd in named:
        err = io.StringIO()
        rc = cli.main([cmd, "--help"], io.StringIO(), err)  # argparse prints help on stdout
        shown = capsys.readouterr().out
        if rc != 0 or not shown.startswith("usage: approute %s" % cmd):
            broken.append("approute %s --help: exit %d %s" % (cmd, rc, err.getvalue().strip()))
    assert not broken, broken


def reference_yaml() -> str:
    """The YAML blocks of the README's configuration reference, as one document."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration reference", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) >= 3, "the reference lost its YAML blocks"
    return "\n".join(blocks)


def test_every_key_of_the_configuration_reference_is_accepted(tmp_path: Path) -> None:
    import io

    from approute import cli
    text = reference_yaml()
    for key in ("max_nodes", "capacity", "affinity", "full_codes", "lifetime", "cluster",
                "outage_headroom", "allow_uris", "panic_threshold", "slow_start"):
        assert re.search(r"\b%s:" % key, text), key  # the blocks hold the whole reference
    f = tmp_path / "reference.yaml"
    f.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["validate", "--no-check-redis", str(f)], out, err)  # no Redis at the example's address
    assert rc == 0, err.getvalue()
