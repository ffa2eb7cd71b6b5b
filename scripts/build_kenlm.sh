#!/usr/bin/env bash
# Builds KenLM's lmplz and build_binary (not shipped on PyPI) from the kenlm 0.3.0 source archive.
# Usage: scripts/build_kenlm.sh DEST_BIN_DIR PYTHON
set -euo pipefail
dest=${1:-tools/bin}
python=${2:-python3}
if [ -x "$dest/lmplz" ] && [ -x "$dest/build_binary" ]; then exit 0; fi
need=()
for pkg in cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev \
           zlib1g-dev libbz2-dev liblzma-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing build dependencies: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: KenLM's build needs: ${need[*]} (apt-get install them as root, then rerun)" >&2; exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download -q --no-deps --no-binary :all: kenlm==0.3.0 -d "$work" 2>&1 | grep -v '^WARNING' || true
tar -xzf "$work"/kenlm-0.3.0.tar.gz -C "$work"
mkdir -p "$work/build"
cmake -S "$work/kenlm-0.3.0" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >/dev/null
cmake --build "$work/build" --target lmplz build_binary -j"$(nproc)" >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
mkdir -p "$dest"
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$dest/"
echo "built $dest/lmplz and $dest/build_binary"
