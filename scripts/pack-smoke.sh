#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, then a fresh project that
# installs the tarball, imports each entry point and runs each command.
# Fails when the tarball holds what a user does not need (tests, benchmarks,
# build info, source maps) or lacks what they do.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/xen-blkfront-pack.XXXXXX)
trap 'rm -rf "$work"' EXIT

tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)
files=$(tar -tzf "$work/$tarball")
unwanted=$(echo "$files" | grep -E '^package/(dist/(test|bench|examples)/|.*\.tsbuildinfo$|.*\.map$|src/|test/)' || true)
if [ -n "$unwanted" ]; then
  echo "pack: the tarball holds what a user does not need:" >&2
  echo "$unwanted" >&2
  exit 1
fi
for need in package/dist/src/index.js package/dist/src/index.d.ts package/dist/src/sim/index.js package/dist/src/cli/blkbench/cli.js \
  package/dist/src/cli/xenfs/cli.js package/dist/src/cli/blkcheck/cli.js package/dist/src/cli/xensim.js package/dist/src/sim/blkback/worker.js package/LICENSE package/README.md; do
  echo "$files" | grep -qx "$need" || { echo "pack: $need is missing from the tarball" >&2; exit 1; }
done
echo "pack: $tarball, $(echo "$files" | wc -l) files, $(du -k "$work/$tarball" | cut -f1) KiB"

consumer="$work/consumer"
mkdir -p "$consumer"
cd "$consumer"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "$work/$tarball"
cat > check.mjs <<'JS'
import { openBlockDevice, XenError, listBlockDevices } from 'xen-blkfront';
import { createSimHost } from 'xen-blkfront/sim';
const host = await createSimHost();
const disk = await host.addDisk({ size: 1 << 20 });
const dev = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
await dev.write(0, new Uint8Array(4096).fill(7));
const back = await dev.read(0, 4096);
if (back[4095] !== 7) throw new Error('read back wrong');
const [d] = await listBlockDevices(host.guest);
await dev.close();
await host.close();
console.log(`import ok: XenError ${typeof XenError}, ${d.name} owner ${d.owner}`);
JS
node check.mjs
cat > check.ts <<'TS'
import { openBlockDevice, type BlockDevice, type BlockDeviceInfo } from 'xen-blkfront';
import { createSimHost, type SimHost } from 'xen-blkfront/sim';
export async function f(h: SimHost): Promise<BlockDeviceInfo> {
  const d: BlockDevice = await openBlockDevice({ platform: h.guest, vdev: 51712 });
  return d.info;
}
export const g: typeof createSimHost = createSimHost;
TS
if [ -x "$OLDPWD/node_modules/.bin/tsc" ]; then
  "$OLDPWD/node_modules/.bin/tsc" --module nodenext --moduleResolution nodenext --strict --noEmit --skipLibCheck false --types node \
    --typeRoots "$OLDPWD/node_modules/@types" check.ts
  echo "types ok: the declarations type-check in a consumer"
fi
npx --no-install blkbench --help | head -n 1
npx --no-install xenfs --help | head -n 1
npx --no-install xensim --help | head -n 1
npx --no-install blkcheck --help | head -n 1
npx --no-install blkcheck --only keys,last-sector | tail -n 1
npx --no-install blkbench --ramdisk 8m --runtime 1 --rw randread | grep -E '^  (iops|ios)|IOPS' | head -n 1
echo "pack: the tarball installs, imports, type-checks and runs its commands"
