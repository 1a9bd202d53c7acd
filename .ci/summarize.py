#!/usr/bin/env python3
"""Prints 'tests: P passed, F failed, S skipped' over doctest's and pytest's own counts.

usage: summarize.py TESTLOG [PYTEST_XML...]
TESTLOG: meson's testlog.json lines (one JSON object per line). doctest's counts are summed; a test
entry without a doctest summary counts as one test: passed if OK, skipped if SKIP, else failed.
PYTEST_XML: pytest's --junitxml reports; each test case counts once; a missing or unreadable
report counts as one failed test (pytest did not run).
"""
import json
import re
import sys
import xml.etree.ElementTree as ET

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
for report in sys.argv[2:]:
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"summarize: pytest report {report}: {e}", file=sys.stderr)
        failed += 1
        continue
    for suite in [root] if root.tag == "testsuite" else root.iter("testsuite"):
        n = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += n - bad - skip
        failed += bad
        skipped += skip
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
