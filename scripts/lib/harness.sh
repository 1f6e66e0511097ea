# Shared by scripts/torture and scripts/load (sourced): build the release binary and the
# example driver NAME, run private copies of both in a fresh work dir, and leave no mount
# or daemon behind. The work dir is removed on success and kept on failure.
#
#   run_harness NAME "CARGO FEATURE FLAGS" ARGS...      (from the repository root)

run_harness() {
  local name=$1 features=$2
  shift 2
  for a in "$@"; do
    case "$a" in
      # The script's header: its comment lines after the shebang.
      -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    esac
  done

  if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
    echo "scripts/$name: needs root and /dev/fuse" >&2
    exit 2
  fi

  # shellcheck disable=SC2086 # $features is zero or more words
  cargo build --quiet --release $features --bin iocfs --example "$name"
  local target="${CARGO_TARGET_DIR:-target}/release"

  harness_dir="$(mktemp -d "${TMPDIR:-/tmp}/iocfs-$name.XXXXXX")"
  harness_status=1
  trap harness_cleanup EXIT
  trap 'exit 130' INT TERM

  set +e
  # Private copies: another build (scripts/bench, a build without or with --features
  # testing) may replace target/release/iocfs while this runs.
  cp "$target/iocfs" "$harness_dir/iocfs"
  cp "$target/examples/$name" "$harness_dir/$name"
  "$harness_dir/$name" --bin "$harness_dir/iocfs" --dir "$harness_dir" "$@"
  harness_status=$?
  set -e
  exit "$harness_status"
}

harness_cleanup() {
  local dir=$harness_dir
  if [ -f "$dir/daemon.pid" ]; then
    kill -9 "$(cat "$dir/daemon.pid")" 2>/dev/null || true
  fi
  for _ in 1 2 3 4 5 6 7 8; do
    grep -q " $dir/mnt " /proc/mounts 2>/dev/null || break
    umount -l "$dir/mnt" 2>/dev/null || break
  done
  # Kept on failure for inspection (the driver's first line names it).
  if [ "$harness_status" = 0 ]; then
    rm -rf "$dir"
  fi
}
