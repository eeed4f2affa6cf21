#!/usr/bin/env bash
# Builds the coordinator of a git revision into its own target folder and
# measures it against the working tree's build, back to back on this machine:
#
#   smoke-tests/scripts/compare-with-revision.sh REV [ROUNDS] [-- LOADGEN ARGS]
#
# e.g. `compare-with-revision.sh main~5 3 -- --tasks 20000 --batch 100`.
# The baseline's build is kept in target/baseline/<commit> and reused.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 REV [ROUNDS] [-- LOADGEN ARGS]" >&2
    exit 2
fi
rev=$1
shift
rounds=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    rounds=$1
    shift
fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then
    shift
fi

root=$(git rev-parse --show-toplevel)
commit=$(git -C "$root" rev-parse --verify "$rev^{commit}")
baseline_target="$root/target/baseline/$commit"
baseline_bin="$baseline_target/release/coordinator"

if [ ! -x "$baseline_bin" ]; then
    tree=$(mktemp -d)
    trap 'git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true; rm -rf "$tree"' EXIT
    git -C "$root" worktree add --detach "$tree" "$commit" >/dev/null
    echo "building the baseline $commit into $baseline_target" >&2
    (cd "$tree" && cargo build --release --quiet -p coordinator-bin --target-dir "$baseline_target")
    # Removed here: the `exec` below ends this shell without running its traps.
    git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true
    rm -rf "$tree"
    trap - EXIT
fi

echo "building the working tree" >&2
(cd "$root" && cargo build --release --quiet -p coordinator-bin -p smoke-tests)

exec "$root/target/release/loadgen-compare" \
    --baseline "$baseline_bin" \
    --current "$root/target/release/coordinator" \
    --rounds "$rounds" \
    -- "$@"
