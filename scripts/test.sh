#!/usr/bin/env bash
# test.sh -- set up, build and run the whole test suite (what CI runs).
#
#  1. scripts/setup.sh installs what is missing (Debian 12)
#  2. build/ : -Werror build, every CTest case (unit, integration, repro, boot)
#  3. build-asan/ : ASan+UBSan build, unit tests and the bad-input corpus
#  4. build-tsan/ : ThreadSanitizer build, the unit tests of the modules with
#     threads (the dio writer thread, qcow2 compression workers) and their users
#  5. build-fuzz/ : libFuzzer targets, each run for a bounded time
#  6. nothing outside the test directories changed: /tmp is still 1777 and
#     a decoy tree (files, a symlink, a FIFO, a device node) made here
#     before the suite is bit-for-bit, mode, owner and mtime the same.
#     Tests that plant symlinks point them into it ($IMG_DECOY).
#
# Skips fail the run: step 1 installs every program a test or check needs, so
# a test CTest reports skipped, or a check that said "SKIPPED: <reason>"
# (tests/lib.sh records those in <build dir>/skipped.log), means CI did not
# test what it claims. ALLOW_SKIPS=1 lists them without failing (a machine
# that lacks something on purpose). Checks that need what no package gives
# (root, a device: t_skip_env) are listed and allowed.
#
# Environment: JOBS (default: nproc), FUZZ_SECONDS (default 20 per target),
# SKIP_SETUP=1 to skip step 1, SKIP_ASAN=1 / SKIP_TSAN=1 / SKIP_FUZZ=1 to skip
# 3 / 4 / 5, ALLOW_SKIPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

[ -n "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
status=0
skips=()
env_skips=()

# skipped WHAT: a test or check did not run.
skipped() {
	echo "SKIPPED: $*"
	skips+=("$*")
}
# run_ctest DIR ARGS...: ctest in DIR; the skips it and the tests report are noted.
run_ctest() {
	local dir=$1 rc=0 t
	shift
	rm -f "$dir/skipped.log" "$dir/skipped-env.log"
	(cd "$dir" && ctest "$@") 2>&1 | tee "$dir/ctest.out" || rc=$?
	while read -r t; do
		skipped "$dir: test $t"
	done < <(sed -n 's/.*Test *#[0-9]*: \([^ ]*\) .*\*\*\*Skipped.*/\1/p' "$dir/ctest.out")
	if [ -f "$dir/skipped.log" ]; then
		while read -r t; do
			skipped "$dir: $t"
		done <"$dir/skipped.log"
	fi
	# needs no package can give (root, a device): listed, not failed
	if [ -f "$dir/skipped-env.log" ]; then
		while read -r t; do
			echo "SKIPPED (allowed): $dir: $t"
			env_skips+=("$dir: $t")
		done <"$dir/skipped-env.log"
	fi
	return $rc
}

# The decoy: what a tool that follows a planted symlink, or removes what is
# not its own, would damage. Outside build/ and every test's directory.
IMG_DECOY=$(mktemp -d "${TMPDIR:-/tmp}/libimg-decoy.XXXXXX")
export IMG_DECOY
mkdir "$IMG_DECOY/sub"
echo "a file no test may change" >"$IMG_DECOY/file"
head -c 65536 /dev/urandom >"$IMG_DECOY/sub/disk.img"
chmod 0640 "$IMG_DECOY/sub/disk.img"
ln -s file "$IMG_DECOY/link"
mkfifo "$IMG_DECOY/fifo"
[ "$(id -u)" != 0 ] || mknod "$IMG_DECOY/null" c 1 3
decoy_state() {
	{
		find "$IMG_DECOY" -printf '%p %y %m %U:%G %s %T@ %l\n' | sort
		find "$IMG_DECOY" -type f -exec sha256sum {} + | sort
	} | sha256sum
}
decoy_before=$(decoy_state)
tmp_before=$(stat -c %a /tmp)

echo "== build (-Werror)"
cmake -S . -B build -DIMG_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
echo "== format check"
if ! command -v clang-format >/dev/null; then
	skipped "format check: clang-format not installed"
else
	bad=$(git ls-files '*.c' '*.h' | xargs clang-format --dry-run 2>&1 | grep -c warning || true)
	if [ "$bad" != 0 ]; then
		echo "clang-format: $bad places differ from .clang-format"
		git ls-files '*.c' '*.h' | xargs clang-format --dry-run 2>&1 | head -20
		status=1
	fi
fi
echo "== tests"
run_ctest build -j"$JOBS" --output-on-failure --timeout 900 || status=1

if [ -z "${SKIP_ASAN:-}" ]; then
	echo "== ASan+UBSan: unit tests and bad inputs"
	cmake -S . -B build-asan -DIMG_WERROR=ON -DIMG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
		-DCMAKE_C_COMPILER=gcc >/dev/null
	cmake --build build-asan -j"$JOBS"
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		run_ctest build-asan -j"$JOBS" --output-on-failure -L 'unit|bad' --timeout 900 || status=1
fi

if [ -z "${SKIP_TSAN:-}" ]; then
	echo "== TSan: the writer-thread tests"
	cmake -S . -B build-tsan -DIMG_WERROR=ON -DIMG_TSAN=ON -DCMAKE_BUILD_TYPE=Debug \
		-DCMAKE_C_COMPILER=gcc >/dev/null
	cmake --build build-tsan -j"$JOBS"
	# A report makes the process exit 66 (the test fails) and stops it there.
	TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" \
		run_ctest build-tsan -j"$JOBS" --output-on-failure -L unit \
		-R '^(dio|qcow2|vdisk|ext4|erofs|repro)/' --timeout 900 || status=1
fi

if [ -z "${SKIP_FUZZ:-}" ] && [ -f tests/fuzz/fuzz.cmake ]; then
	echo "== fuzz (${FUZZ_SECONDS}s per target)"
	cmake -S . -B build-fuzz -DIMG_FUZZ=ON -DBUILD_TESTING=OFF -DCMAKE_C_COMPILER=clang \
		-DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-fuzz -j"$JOBS"
	for f in build-fuzz/fuzz-*; do
		[ -x "$f" ] || continue
		name=$(basename "$f")
		corpus=fixtures/fuzz/${name#fuzz-}
		work=$(mktemp -d)
		[ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
		echo "-- $name"
		if ! "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 \
			-artifact_prefix="build-fuzz/$name-" "$work" >"build-fuzz/$name.log" 2>&1; then
			echo "$name found a crash:"; tail -40 "build-fuzz/$name.log"; status=1
		fi
		rm -rf "$work"
	done
fi

echo "== nothing outside the test directories changed"
if [ "$(stat -c %a /tmp)" != 1777 ]; then
	echo "/tmp is mode $(stat -c %a /tmp) after the suite (was $tmp_before), not 1777"
	status=1
fi
if [ "$(decoy_state)" != "$decoy_before" ]; then
	echo "the decoy tree $IMG_DECOY changed during the suite:"
	find "$IMG_DECOY" -printf '%p %y %m %U:%G %s %T@ %l\n' | sort
	status=1
else
	rm -rf "$IMG_DECOY"
fi

if [ ${#env_skips[@]} != 0 ]; then
	echo "== ${#env_skips[@]} checks skipped for what no package gives (allowed):"
	printf '  %s\n' "${env_skips[@]}"
fi
if [ ${#skips[@]} != 0 ]; then
	echo "== ${#skips[@]} tests or checks skipped:"
	printf '  %s\n' "${skips[@]}"
	if [ -z "${ALLOW_SKIPS:-}" ]; then
		echo "skips fail the run (scripts/setup.sh installs what they need; ALLOW_SKIPS=1 to allow)"
		status=1
	fi
fi
if [ $status = 0 ]; then echo "== all tests passed"; else echo "== FAILURES"; fi
exit $status
