#!/usr/bin/env python3
"""Replace one "## <heading>" section of bench/RESULTS.md with the text on stdin.

    scripts/write-results-section.py "Live fan-out" [--keep BLOCK] < section.md

The section on stdin starts with its own "## <heading>" line. The old section
(up to the next "## " heading) is replaced in place, or the new one appended
when there is none. --keep BLOCK carries the hand-written text between
"<!-- BLOCK:begin -->" and "<!-- BLOCK:end -->" of the old section over to
the end of the new one. Used by every scripts/bench-*.sh with --write.
"""
import os
import re
import sys

args = sys.argv[1:]
keep = None
if "--keep" in args:
    i = args.index("--keep")
    keep = args[i + 1]
    del args[i:i + 2]
if len(args) != 1:
    sys.exit(__doc__)
heading = args[0]
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "RESULTS.md")
section = sys.stdin.read().rstrip() + "\n"
text = (open(path).read() if os.path.exists(path)
        else "# Benchmark results\n\nEach section names its machine and the command that produced it.\n")
pat = re.compile(r"^## " + re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
old = pat.search(text)
if keep and old:
    block = re.search(r"^<!-- " + re.escape(keep) + r":begin -->\n.*?^<!-- " + re.escape(keep) + r":end -->\n?",
                      old.group(0), re.S | re.M)
    if block:
        section += "\n" + block.group(0).rstrip() + "\n"
if old:
    text = text[:old.start()] + section + "\n" + text[old.end():]
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text.rstrip() + "\n")
print(f'wrote the "{heading}" section of bench/RESULTS.md', file=sys.stderr)
