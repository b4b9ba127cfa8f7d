# shellcheck shell=bash
# Builds a C or C++ library from the source a crates.io crate carries (the one
# registry here that ships such sources), pinned by the crate's SHA-256, and
# installs it into a prefix, once. Sourced by scripts/rocksdb and
# scripts/rdkafka, which set, before calling from_crate_main "$@":
#   name          the library's name in messages ("RocksDB")
#   tag           the prefix of log lines ("rocksdb")
#   version       the library's version
#   crate, crate_version, sha256   the crate that carries its source
#   subdir        the library's folder inside the crate
#   cmake_args    (array) how to configure it
#   build_target  the CMake target to build ("" for all)
#   installed     (array) files the install must leave under the prefix
#   prefix        where to install it
# Usage of the callers: build (download, check, build and install if not yet
# done; prints the prefix on stdout) or prefix (prints it, built or not).

from_crate_log() { printf '%s: %s\n' "$tag" "$*" >&2; }
from_crate_die() { printf '%s: error: %s\n' "$tag" "$*" >&2; exit 1; }

from_crate_main() {
  local url="https://static.crates.io/crates/$crate/$crate-${crate_version/+/%2B}.crate"
  # The stamp names everything the build depends on: a change rebuilds.
  local stamp_text="$tag $version from $crate $crate_version sha256 $sha256 ${cmake_args[*]}"

  case "${1:-}" in
    prefix) echo "$prefix"; return 0 ;;
    build) ;;
    *) from_crate_die "usage: scripts/$tag build|prefix" ;;
  esac

  if [[ -f $prefix/.stamp && $(cat "$prefix/.stamp") == "$stamp_text" ]]; then
    from_crate_log "$name $version is built in $prefix"
    echo "$prefix"
    return 0
  fi
  local tool
  for tool in curl tar cmake ninja sha256sum; do
    command -v "$tool" >/dev/null || from_crate_die "$tool is missing (scripts/setup installs it)"
  done

  work=$(mktemp -d "${TMPDIR:-/tmp}/saga-$tag.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  from_crate_log "downloading $crate $crate_version ($name $version's source) from crates.io"
  curl -fsSL --retry 3 -o "$work/src.crate" "$url" || from_crate_die "cannot download $url"
  echo "$sha256  $work/src.crate" | sha256sum -c --quiet - ||
    from_crate_die "$url does not have the expected SHA-256 $sha256"
  tar -xzf "$work/src.crate" -C "$work"
  local src="$work/$crate-$crate_version/$subdir"
  [[ -f $src/CMakeLists.txt ]] || from_crate_die "the crate has no $subdir/CMakeLists.txt"

  local started=$SECONDS target=()
  [[ -n $build_target ]] && target=(--target "$build_target")
  from_crate_log "building $name $version with $(nproc) jobs; a few minutes per core"
  if ! cmake -S "$src" -B "$work/build" "${cmake_args[@]}" -DCMAKE_INSTALL_PREFIX="$prefix" \
         -DCMAKE_INSTALL_LIBDIR=lib >"$work/build.log" 2>&1 ||
     ! cmake --build "$work/build" -j "$(nproc)" "${target[@]}" >>"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    from_crate_die "the build failed (last lines above)"
  fi
  rm -rf "$prefix"
  mkdir -p "$prefix/lib"
  cmake --install "$work/build" >>"$work/build.log" 2>&1 || {
    tail -n 20 "$work/build.log" >&2
    from_crate_die "the install into $prefix failed"
  }
  local f
  for f in "${installed[@]}"; do
    [[ -f $prefix/$f ]] || from_crate_die "the install left no $prefix/$f"
  done
  echo "$stamp_text" >"$prefix/.stamp"
  from_crate_log "$name $version installed in $prefix ($((SECONDS - started)) s)"
  echo "$prefix"
}
