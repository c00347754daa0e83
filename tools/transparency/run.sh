#!/usr/bin/env bash
# Transparency check (issue 14, item 7): DataFusion's own Python test suite, run plain, with the
# instrumentor span-only and with plan capture; prints the tests whose outcome changed and the
# execution spans left open. Not part of CI (it needs the datafusion-python sources).
#
# usage: tools/transparency/run.sh DFPY_DIR
#   DFPY_DIR holds python/tests of apache/datafusion-python (at the datafusion version in use),
#   testing/data (apache/arrow-testing) and parquet/data (apache/parquet-testing), and a venv
#   .venv with this package installed (uv pip install -e .) plus pytest, pytest-asyncio,
#   pytest-timeout, pandas, polars, numpy, arro3-core, nanoarrow, pyyaml, toml.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dfpy=$(cd "$1" && pwd)
cd "$dfpy"
for mode in plain span capture; do
    DFOTEL_MODE=$mode PYTHONPATH="$here" .venv/bin/python -m pytest python/tests -q \
        -p no:cacheprovider -p instr_plugin --timeout 120 -rN \
        --junitxml="$dfpy/junit-$mode.xml" -o junit_family=xunit1 > "$dfpy/out-$mode.txt" 2>&1 || true
    tail -1 "$dfpy/out-$mode.txt"
    grep '^\[dfotel\]' "$dfpy/out-$mode.txt" || true
done
.venv/bin/python "$here/compare.py" "$dfpy" span capture
