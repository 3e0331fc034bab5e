#!/usr/bin/env bash
# npm run test:xen: the Xen suite (test/xen) inside a PV domU of a real Xen
# 4.17, itself under QEMU's software emulation, with a Debian dom0 running
# xenstored, xl and the kernel's xen-blkback.
#
#   1. checks the host can do it, and says why not when it cannot;
#   2. builds or reuses the cached testbed (scripts/xen/build-testbed.sh);
#   3. adds this checkout (dist, production node_modules) to the domU's root,
#      and dom0's /init (scripts/xen/dom0-init.sh) to dom0's;
#   4. boots under a hard timeout, streaming the dom0 and domU lines;
#   5. exits 0 only when dom0 reports the suite passed.
#
# Environment: XEN_TESTBED_CACHE (cache directory), XEN_TESTBED_TIMEOUT
# (seconds the domU may run, default 1300; QEMU gets 150 more: at most 24 minutes of Xen), XEN_TESTBED_LOG
# (where the full console goes, default /tmp/xen-testbed-console.log).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=scripts/xen

cannot() { echo "test:xen: cannot run here: $*" >&2; exit 3; }
[ "$(uname -m)" = x86_64 ] || cannot "the testbed is x86_64 only (this is $(uname -m))"
[ "$(id -u)" -eq 0 ] || cannot "needs root (debootstrap for dom0, and the cache in /var/cache); run it as root"
for tool in gcc:gcc qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap cpio:cpio depmod:kmod xz:xz-utils apt-get:apt; do
  command -v "${tool%%:*}" >/dev/null 2>&1 ||
    cannot "no ${tool%%:*}; install Debian's ${tool#*:} (scripts/test-deps.sh does)"
done
avail_mb=$(awk '/MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
[ "$avail_mb" -ge 4000 ] || cannot "QEMU needs about 3.6 GB of RAM and only ${avail_mb} MB is available"
[ -d dist/test/xen ] || cannot "dist/test/xen is missing: run it as npm run test:xen (which builds it)"

timeout_s=${XEN_TESTBED_TIMEOUT:-1300}
console=${XEN_TESTBED_LOG:-/tmp/xen-testbed-console.log}
started=$SECONDS

bed=$("$here/build-testbed.sh")
run=$(mktemp -d /tmp/xen-testbed.XXXXXX)
trap 'rm -rf "$run"' EXIT

# --- this checkout, for the domU ----------------------------------------------
app="$run/domU/opt/xen-blkfront"
mkdir -p "$app/node_modules"
cp package.json "$app/"
cp -r dist "$app/"
npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | while read -r dep; do
  rel=${dep#"$PWD/"}
  mkdir -p "$app/$(dirname "$rel")"
  cp -r "$dep" "$app/$rel"
done
cp "$here/domU-init.sh" "$run/domU/init"
# The kernel side of the comparison (test/xen/bench.xen.ts): static, so it needs no library in the domU.
mkdir -p "$run/domU/usr/bin"
gcc -O2 -Wall -Werror -static -pthread -o "$run/domU/usr/bin/kbench" "$here/kbench.c"
( cd "$run/domU" && find . | cpio -o -H newc --quiet ) | gzip -1 > "$run/domU-run.cpio.gz"

# --- dom0's additions: /init, the domU's kernel and root, the run's settings ---
mkdir -p "$run/dom0/testbed" "$run/dom0/opt/xen-blkfront"
cp "$here/dom0-init.sh" "$run/dom0/init"
# The compiled project alone (dom0 runs the xenstore benchmark, which needs no package).
cp -r package.json dist "$run/dom0/opt/xen-blkfront/"
cp "$bed/vmlinuz" "$run/dom0/testbed/vmlinuz"
cat "$bed/domU.cpio.gz" "$run/domU-run.cpio.gz" > "$run/dom0/testbed/domU.cpio.gz"
cat > "$run/dom0/testbed/config" <<CFG
TIMEOUT=$timeout_s
MARKER=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
DISK_MB=64
RO_MB=8
KDISK_MB=64
DOMU_ARGS="${XEN_SUITE_ARGS:-}"
CFG
( cd "$run/dom0" && find . | cpio -o -H newc --quiet ) | gzip -1 > "$run/dom0-run.cpio.gz"
# The kernel unpacks concatenated archives in order, later files winning.
cat "$bed/dom0.cpio.gz" "$run/dom0-run.cpio.gz" > "$run/dom0.cpio.gz"
echo "test:xen: testbed ready in $((SECONDS - started))s; booting Xen 4.17 under QEMU (TCG), timeout $((timeout_s + 150))s"

# --- boot ----------------------------------------------------------------------
set +e
timeout --kill-after=10 $((timeout_s + 150)) \
  qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64,+rdrand -m 4G -smp 2 \
    -nographic -no-reboot -serial mon:stdio -display none -monitor none \
    -kernel "$bed/xen" \
    -append "console=com1 com1=115200,8n1 dom0_mem=2048M,max:2048M dom0_max_vcpus=2" \
    -initrd "$bed/vmlinuz console=hvc0 earlyprintk=xen panic=-1 quiet,$run/dom0.cpio.gz" \
    </dev/null 2>&1 | tr -d '\r' | tee "$console" | grep --line-buffered -aE '^(dom0|domU)\| |^XEN-TESTBED-RESULT'
qemu_rc=${PIPESTATUS[0]}
set -e

result=$(grep -aoE '^XEN-TESTBED-RESULT [a-z]+' "$console" | tail -n 1 | cut -d' ' -f2 || true)
# The suite's own figures: node:test's TAP totals and the benchmark lines.
summary() {
  local pass fail skip
  pass=$(grep -aE '^domU\| # pass [0-9]+' "$console" | tail -n 1 | awk '{ print $4 }')
  fail=$(grep -aE '^domU\| # fail [0-9]+' "$console" | tail -n 1 | awk '{ print $4 }')
  skip=$(grep -aE '^domU\| # skipped [0-9]+' "$console" | tail -n 1 | awk '{ print $4 }')
  grep -aE '^(dom0|domU)\| # xen-bench ' "$console" | sed -E 's/^(dom0|domU)\| # /test:xen: /' || true
  echo "test:xen: xen tests: ${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped (real Xen 4.17, $((SECONDS - started))s in all, console in $console)"
}
case "$result" in
  pass) summary; exit 0 ;;
  '') summary
      if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
        echo "test:xen: FAILED: QEMU killed after $((timeout_s + 150))s with no verdict" >&2
      else
        echo "test:xen: FAILED: QEMU exited ($qemu_rc) with no verdict; see $console" >&2
      fi
      exit 1 ;;
  *) summary; echo "test:xen: FAILED: $result" >&2; exit 1 ;;
esac
