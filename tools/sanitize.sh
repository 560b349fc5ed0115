#!/usr/bin/env bash
# Build fastconv's extensions with AddressSanitizer + UndefinedBehaviorSanitizer in a throw-away copy
# of the source tree (the normal in-place build is left alone) and run the test suite under them.
#
#   tools/sanitize.sh                 # whole suite (slow and wall-clock "speed" tests deselected)
#   tools/sanitize.sh tests/test_conv.py -k grad     # any pytest arguments
#
# Environment: KEEP=1 keeps the temporary tree (its path is printed); SAN_FLAGS overrides the flags;
# FASTCONV_NATIVE=0 builds the plain-C paths of fc_simd.h / fc_wino.h instead of the SIMD ones
# (default: -march=native where the compiler takes it, as in the normal build).
# Needs gcc with libasan/libubsan. Exit status is pytest's: non-zero on any test failure or on the
# first sanitizer report (ASan aborts, UBSan halts on error).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
SAN_FLAGS="${SAN_FLAGS:--fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1}"
CC_BIN="${CC:-gcc}"

LIBASAN="$("$CC_BIN" -print-file-name=libasan.so)"
if [ ! -e "$LIBASAN" ] || [ "$LIBASAN" = "libasan.so" ]; then
    echo "sanitize.sh: libasan.so not found ($CC_BIN -print-file-name=libasan.so); install gcc's libasan" >&2
    exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastconv-sanitize.XXXXXX")"
cleanup() { if [ "${KEEP:-0}" = "1" ]; then echo "sanitize.sh: kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

# copy the sources (the current working tree), without build outputs or git metadata
echo "sanitize.sh: copying $SRC -> $WORK"
(cd "$SRC" && tar --exclude=.git --exclude=build --exclude='*.so' --exclude='__pycache__' \
     --exclude='.hypothesis' --exclude='.pytest_cache' --exclude='.benchmarks' -cf - .) | (cd "$WORK" && tar -xf -)
# the .c files are regenerated from the .pyx (the copy may hold stale ones)
rm -f "$WORK"/fastconv/_core/*.c

echo "sanitize.sh: building with FASTCONV_EXTRA_CFLAGS='$SAN_FLAGS'"
(cd "$WORK" && FASTCONV_NATIVE="${FASTCONV_NATIVE:-1}" FASTCONV_EXTRA_CFLAGS="$SAN_FLAGS" \
     "$PY" setup.py build_ext --inplace --build-temp "$WORK/build/temp" > "$WORK/build.log" 2>&1) \
  || { tail -50 "$WORK/build.log" >&2; echo "sanitize.sh: build failed" >&2; exit 2; }
for so in "$WORK"/fastconv/_core/*.so; do
    syms="$(nm -D "$so")"
    if ! grep -q __asan_init <<<"$syms"; then
        echo "sanitize.sh: $so is not instrumented" >&2; exit 2
    fi
done
grep '^CFLAGS' "$WORK/fastconv/_build_config.py" | sed 's/^/sanitize.sh: /'

export LD_PRELOAD="$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}"
# Python and its extensions "leak" by design at exit; leak detection is done by tests/test_reliability.py
# reports also go to files: pytest captures fd 2, and an aborting test would swallow them
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:log_path=$WORK/sanitizer${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$WORK/sanitizer${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export FASTCONV_SANITIZE=1     # tests that measure memory (RSS) skip themselves under ASan
export PYTHONDONTWRITEBYTECODE=1
# torch (an optional reference in some tests) aborts under a preloaded ASan runtime when it throws a
# C++ exception; hide it so those comparisons skip (pytest.importorskip) -- they run in normal CI
mkdir -p "$WORK/_sanitize_shims"
echo 'raise ModuleNotFoundError("torch is hidden during the sanitizer run (tools/sanitize.sh)")' > "$WORK/_sanitize_shims/torch.py"
export PYTHONPATH="$WORK/_sanitize_shims${PYTHONPATH:+:$PYTHONPATH}"

cd "$WORK"
echo "sanitize.sh: running pytest under ASan/UBSan (LD_PRELOAD=$LIBASAN)"
# wall-clock assertions (tests named *speed*) mean nothing under ASan's 2-3x slowdown
if [ "$#" -eq 0 ]; then set -- -k "not speed"; fi
set +e
"$PY" -m pytest -q -rfE -p no:cacheprovider "$@" 2>&1 | tee "$WORK/pytest.log"
rc=${PIPESTATUS[0]}
set -e
if ls "$WORK"/sanitizer.* >/dev/null 2>&1 || \
        grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" "$WORK/pytest.log"; then
    for f in "$WORK"/sanitizer.*; do [ -e "$f" ] && head -30 "$f" >&2; done
    echo "sanitize.sh: SANITIZER REPORT found (above; full reports in $WORK/sanitizer.*, rerun with KEEP=1)" >&2
    [ "$rc" -eq 0 ] && rc=1
fi
if [ "$rc" -eq 0 ]; then echo "sanitize.sh: clean (ASan + UBSan, all selected tests passed)"; fi
exit "$rc"
