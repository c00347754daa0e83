"""Compare junit outcomes of the plain run with the instrumented runs (see run.sh)."""

import sys
import xml.etree.ElementTree as ET

ROOT = sys.argv[1]


def outcomes(mode):
    res = {}
    for tc in ET.parse(f"{ROOT}/junit-{mode}.xml").iter("testcase"):
        key = tc.get("classname") + "::" + tc.get("name")
        kind = "passed"
        for child in tc:
            if child.tag in ("failure", "error"):
                kind = "failed"
            elif child.tag == "skipped":
                kind = "skipped"
        res[key] = kind
    return res


plain = outcomes("plain")
for mode in sys.argv[2:]:
    other = outcomes(mode)
    changed = [k for k in plain if plain[k] == "passed" and other.get(k) != "passed"]
    print(
        f"{mode}: {sum(v == 'passed' for v in other.values())} passed of {len(other)};",
        f"passed plain but not {mode}: {len(changed)}",
    )
    for k in changed[:20]:
        print("   ", k, other.get(k))
