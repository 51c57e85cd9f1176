#!/usr/bin/env python3
"""Checks that every README code block marked `<!-- snippet: PATH -->` is exactly the file PATH (which CI compiles and runs)."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
readme = (root / "README.md").read_text()
pattern = re.compile(r"<!-- snippet: (\S+) -->\n```\w*\n(.*?)```", re.S)
found = 0
bad = []
for path, body in pattern.findall(readme):
    found += 1
    source = (root / path).read_text()
    if body != source:
        bad.append(path)
if found == 0:
    bad.append("(no snippets found in README.md)")
for b in bad:
    print(f"README snippet differs from {b}", file=sys.stderr)
print(f"snippets: {found - len(bad) if found else 0} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
