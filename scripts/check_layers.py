#!/usr/bin/env python3
"""Checks that includes inside libapproute/src point down the layers.

The layers, lowest first (docs/state.md, "Source layout"): a file may include
its own layer and the layers below it, never one above. A finding names the
file, the line and the include; the exit code is 1 when there is one.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

LAYERS = ["util", "state", "config", "routing", "status", "placement", "router", "sim"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/')


def main() -> int:
    src = Path(__file__).resolve().parent.parent / "libapproute" / "src"
    findings = []
    for path in sorted(src.rglob("*")):
        if path.suffix not in (".h", ".cc"):
            continue
        layer = path.relative_to(src).parts[0]
        if layer not in LAYERS:
            findings.append(f"{path.relative_to(src)}: not in a known layer ({', '.join(LAYERS)})")
            continue
        rank = LAYERS.index(layer)
        for no, line in enumerate(path.read_text().splitlines(), 1):
            m = INCLUDE.match(line)
            if m and m.group(1) in LAYERS and LAYERS.index(m.group(1)) > rank:
                findings.append(f"{path.relative_to(src)}:{no}: {layer}/ includes {m.group(1)}/ (upward)")
    for f in findings:
        print(f"check_layers: {f}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
