#!/usr/bin/env bash
# Builds KenLM's lmplz and build_binary (no wheel on PyPI ships them) from the kenlm 0.3.0 source archive.
# Only the two programs, straight with g++ on every core: no CMake, and of Boost only the two libraries they
# link (program_options, thread) and the headers. The input is plain text on stdin and ARPA files, so the
# zlib/bzip2/xz readers are left out.
# Usage: scripts/build_kenlm.sh DEST_BIN_DIR PYTHON   (PYTHON: any with pip; only to download the archive)
set -euo pipefail
apt_packages=(g++ libboost-program-options-dev libboost-thread-dev)

install_apt_packages() {
  local need=() pkg
  for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: building KenLM's lmplz needs: ${need[*]} (apt-get install them as root, then rerun)" >&2; exit 1
  fi
  echo "installing KenLM's build dependencies: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

dest=$(realpath -m "${1:-tools/bin}")
python=${2:-python3}
sdist_sha256=c4628bb9fb63c8a6f9240035b8b037385cfc404cb72e933cf48878291edac1e8
if [ -x "$dest/lmplz" ] && [ -x "$dest/build_binary" ]; then exit 0; fi
install_apt_packages

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# --no-binary for kenlm alone: its build requirements (setuptools, cmake) come as wheels and only the
# archive's metadata is read (--no-binary :all: would build CMake itself from source: half an hour).
"$python" -m pip download -q --disable-pip-version-check --no-deps --no-binary kenlm kenlm==0.3.0 -d "$work" 2>&1 \
  | grep -v '^WARNING' || true
echo "$sdist_sha256  $work/kenlm-0.3.0.tar.gz" | sha256sum -c --status || { echo "kenlm-0.3.0.tar.gz checksum mismatch" >&2; exit 1; }
tar -xzf "$work/kenlm-0.3.0.tar.gz" -C "$work"
src=$work/kenlm-0.3.0

# The sources of the CMake targets lmplz and build_binary link (kenlm_util, kenlm, kenlm_builder), without
# tests, benchmarks and other programs' mains.
cd "$src"
mapfile -t sources < <(ls util/*.cc util/double-conversion/*.cc util/stream/*.cc lm/*.cc lm/common/*.cc lm/builder/*.cc \
                       | grep -vE '(_test|_main)\.cc$')
sources+=(lm/builder/lmplz_main.cc lm/build_binary_main.cc)
# CMake's Release flags and what kenlm's CMakeLists adds on Linux (C++11, max order 6, clock_gettime).
cxxflags=(-std=c++11 -O3 -DNDEBUG -DKENLM_MAX_ORDER=6 -DHAVE_CLOCKGETTIME -pthread -I.)
printf '%s\n' "${sources[@]}" \
  | xargs -P "$(nproc)" -I{} g++ "${cxxflags[@]}" -c {} -o {}.o 2>"$work/build.log" \
  || { tail -n 40 "$work/build.log" >&2; exit 1; }
library_objects=()
for s in "${sources[@]}"; do case $s in *_main.cc) ;; *) library_objects+=("$s.o") ;; esac; done
ar rcs libkenlm_tools.a "${library_objects[@]}"
libs=(libkenlm_tools.a -lboost_program_options -lboost_thread -pthread -lrt)
g++ -o lmplz lm/builder/lmplz_main.cc.o "${libs[@]}"
g++ -o build_binary lm/build_binary_main.cc.o "${libs[@]}"
mkdir -p "$dest"
cp "$src/lmplz" "$src/build_binary" "$dest/"
echo "built $dest/lmplz and $dest/build_binary"
