#!/usr/bin/python3
"""Counts test cases from meson's testlog.json (cmocka output per executable) and pytest JUnit
XML files, and prints "PASSED FAILED" for scripts/test to add up.

A cmocka executable reports "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)"; one that
crashed or timed out before reporting counts as one failure, so a crash is never silent.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET


def count_meson(path):
    passed = failed = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            out = (t.get("stdout", "") or "") + (t.get("stderr", "") or "")
            p = re.search(r"\[  PASSED  \] (\d+) test", out)
            fl = re.search(r"\[  FAILED  \] (\d+) test", out)
            np = int(p.group(1)) if p else 0
            nf = int(fl.group(1)) if fl else 0
            if t.get("result") not in ("OK", "EXPECTEDFAIL", "SKIP") and nf == 0:
                nf = 1  # crashed, timed out or failed without a cmocka summary
            if np == 0 and nf == 0 and t.get("result") == "OK":
                np = 1  # a non-cmocka test that passed
            passed += np
            failed += nf
    return passed, failed


def count_junit(path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    passed = failed = 0
    for s in suites:
        tests = int(s.get("tests", 0))
        bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped = int(s.get("skipped", 0))
        failed += bad
        passed += tests - bad - skipped
    return passed, failed


def main():
    passed = failed = 0
    for arg in sys.argv[1:]:
        kind, _, path = arg.partition(":")
        try:
            p, f = count_meson(path) if kind == "meson" else count_junit(path)
        except (OSError, ValueError, ET.ParseError) as e:
            print(f"cannot read {path}: {e}", file=sys.stderr)
            p, f = 0, 1
        passed += p
        failed += f
    print(passed, failed)


if __name__ == "__main__":
    main()
