#!/usr/bin/env python3
"""Sums doctest's own counts over meson's testlog.json and prints 'tests: P passed, F failed, S skipped'.

A test entry without a doctest summary counts as one test: passed if OK, skipped if SKIP, else failed.
"""
import json
import re
import sys

pattern = re.compile(r"\[doctest\] test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed \|\s*(\d+) skipped")
passed = failed = skipped = 0
with open(sys.argv[1]) as f:
    for line in f:
        if not line.strip():
            continue
        entry = json.loads(line)
        m = pattern.search(entry.get("stdout") or "")
        if m:
            passed += int(m.group(2))
            failed += int(m.group(3))
            skipped += int(m.group(4))
            if entry.get("result") not in ("OK", "SKIP") and int(m.group(3)) == 0:
                failed += 1  # crashed or timed out after printing a summary
        elif entry.get("result") == "OK":
            passed += 1
        elif entry.get("result") == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
