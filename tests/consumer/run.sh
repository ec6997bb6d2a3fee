#!/usr/bin/env bash
# Usage: run.sh SOURCE_DIR BUILD_DIR WORK_DIR
# Installs awq from BUILD_DIR, then builds and runs the consumer project three ways, each with the
# README's own CMake block for that way (the block after "<!-- consumer: MODE -->"). FetchContent
# is pointed at SOURCE_DIR (FETCHCONTENT_SOURCE_DIR_AWQ): no network. The find_package build runs
# with a PATH that holds no CUDA compiler and CUDACXX unset. The README's pinned tag, project()'s
# VERSION and the installed version file must agree.
set -euo pipefail
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
test -f "$work/prefix/share/cmake/awq/awqConfig.cmake"
test -f "$work/prefix/share/cmake/awq/awqConfigVersion.cmake"
test -f "$work/prefix/include/awq/awq.hpp"

version=$(sed -n 's/^project(awq VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
installed=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")/\1/p' "$work/prefix/share/cmake/awq/awqConfigVersion.cmake")
pinned=$(sed -n 's/^ *GIT_TAG *v\([0-9.]*\).*/\1/p' "$src/README.md")
echo "project VERSION $version, installed package $installed, README pins v$pinned"
[ -n "$version" ] && [ "$version" = "$installed" ] && [ "$version" = "$pinned" ]

readme_block() {  # the ```cmake block after the marker for mode $1
  awk -v m="<!-- consumer: $1 -->" '
    $0 == m { want = 1; next }
    want && /^```cmake/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { print }' "$src/README.md"
}

for mode in find_package add_subdirectory fetchcontent; do
  echo "== consumer via $mode"
  dir="$work/$mode"
  mkdir -p "$dir/src/third_party"
  cp "$src/tests/consumer/CMakeLists.txt" "$src/tests/consumer/main.cpp" "$dir/src/"
  readme_block $mode >"$dir/src/awq_dependency.cmake"
  grep -q 'awq::awq' "$dir/src/awq_dependency.cmake" || { echo "README has no CMake block for $mode"; exit 1; }
  ln -s "$src" "$dir/src/third_party/awq"
  env -u CUDACXX -u CUDA_PATH PATH=/usr/bin:/bin bash -c '! command -v nvcc >/dev/null'
  env -u CUDACXX -u CUDA_PATH PATH=/usr/bin:/bin \
    cmake -S "$dir/src" -B "$dir/build" -DCMAKE_PREFIX_PATH="$work/prefix" -DFETCHCONTENT_SOURCE_DIR_AWQ="$src" \
      -DFETCHCONTENT_FULLY_DISCONNECTED=ON -DAWQ_ENABLE_CUDA=OFF >"$dir/configure.log"
  env -u CUDACXX PATH=/usr/bin:/bin cmake --build "$dir/build" -j 2 >"$dir/build.log"
  "$dir/build/my_engine"
done

# Components: json is found here (nlohmann_json is installed); an unknown one is refused by name.
components() {  # NAME COMPONENTS...: configures a project that asks for them; its exit status
  local dir="$work/components_$1"; shift
  mkdir -p "$dir"
  printf 'cmake_minimum_required(VERSION 3.21)\nproject(c LANGUAGES CXX)\nfind_package(awq 0.1 CONFIG REQUIRED COMPONENTS %s)\n' "$*" \
    >"$dir/CMakeLists.txt"
  cmake -S "$dir" -B "$dir/build" -DCMAKE_PREFIX_PATH="$work/prefix" >"$dir.log" 2>&1
}
components json json || { echo "find_package(awq COMPONENTS json) failed:"; cat "$work/components_json.log"; exit 1; }
if components unknown json no_such_part; then echo "find_package(awq COMPONENTS no_such_part) was accepted"; exit 1; fi
grep -q "unknown component 'no_such_part'" "$work/components_unknown.log"
echo "consumers built and ran: find_package, add_subdirectory, fetchcontent"
