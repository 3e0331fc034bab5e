/**
 * Files on a disk plugged in while the program runs: dom0 makes a GPT image
 * whose partition 1 is ext4 (mkfs.ext4 -d, a known tree) and runs
 * `xl block-attach`; the watcher sees xvdg arrive; every file is read back
 * by hash through the API and through the xenfs CLI; both write files;
 * after `xl block-detach` dom0 runs e2fsck -fn, reads the new file with
 * debugfs, and mounts the image read-only with its kernel's ext4, whose
 * hash of every file must be the one this side expects. Then dom0 plugs in
 * an ext4 image it copied while its kernel had it mounted (a journal that
 * needs recovery): a read-write mount must say FS_EDIRTY.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { listBlockDevices, mountExt, openBlockDevice, openPartition, readPartitionTable, watchBlockDevices } from '../../src/index.js';
import { askDom0, askDom0Within, platform } from './env.js';

/** xvdg and xvdi: attached during the tests. */
const XVDG = 51808;
const XVDI = 51840;
const XENFS = fileURLToPath(new URL('../../src/cli/xenfs/cli.js', import.meta.url));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/**
 * Runs xenfs on xvdg's partition 1 in its own process; its stdout. Asynchronously: this process's
 * xenstore watches (the watcher's) must keep being served while xenfs runs.
 */
async function xenfs(...args: string[]): Promise<Buffer> {
  try {
    const r = await promisify(execFile)(process.execPath, [XENFS, '--xen', '--vdev', String(XVDG), '--partition', '1', ...args], {
      timeout: 120_000,
      maxBuffer: 1 << 26,
      encoding: 'buffer',
    });
    return r.stdout;
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    assert.fail(`xenfs ${args.join(' ')}: ${e.stderr?.toString() || e.message}`);
  }
}

test(
  'files: a GPT disk with ext4 plugged in while the program runs, read and written through the driver, clean in dom0 after the detach',
  { timeout: 600_000 },
  async () => {
    const p = await platform();
    const w = watchBlockDevices(p);
    try {
      // The disks there at the start come first; xvdg is not among them.
      await w.waitFor((e) => e.type === 'added', 30_000);
      assert.ok(!(await listBlockDevices(p)).some((d) => d.vdev === XVDG), 'xvdg is not there before the attach');
      const answer = await askDom0Within(180_000, p.xenstore, 'files-attach');
      assert.doesNotMatch(answer, /^error/, answer);
      const tree = new Map(
        answer
          .trim()
          .split(' ')
          .map((kv) => kv.split('=') as [string, string]),
      );
      assert.ok(tree.size >= 5, `dom0's tree: ${answer}`);
      const added = await w.waitFor((e) => e.type === 'added' && e.device.vdev === XVDG, 60_000);
      assert.equal(added.device.name, 'xvdg');
      assert.equal(added.device.readOnly, false);
      // The kernel's xen-blkfront, loaded by the comparisons with autoprobe off, left it alone.
      assert.ok(!existsSync(`/sys/bus/xen/devices/vbd-${XVDG}/driver`), 'the kernel took xvdg');
      console.log(`# files: ${added.device.name} (vdev ${added.device.vdev}) reported plugged in; backend ${added.device.backend}`);

      // Through the API: the table, then every file by hash.
      const dev = await openBlockDevice({ platform: p, vdev: XVDG });
      try {
        const table = await readPartitionTable(dev);
        assert.equal(table.kind, 'gpt');
        assert.deepEqual(
          table.partitions.map((q) => [q.number, q.offset, q.size, q.name]),
          [[1, 1 << 20, 40 << 20, 'files']],
        );
        const part = await openPartition(dev, 1);
        const fs = await mountExt(part, { readOnly: true });
        for (const [path, hash] of tree) assert.equal(sha(await fs.readFile(path)), hash, path);
        await fs.unmount();
        // Files written through the API, synced or not, then a clean unmount: dom0's kernel reads them below.
        const rw = await mountExt(part);
        assert.deepEqual(rw.warnings, []);
        await rw.mkdir('/from-api');
        for (const [i, size] of [0, 1, 4097, 2_000_003].entries()) {
          const data = randomBytes(size);
          await rw.writeFile(`/from-api/f${i}.bin`, data, { sync: i % 2 === 1 });
          tree.set(`/from-api/f${i}.bin`, sha(data));
        }
        await rw.unmount();
      } finally {
        await dev.close();
      }

      // Through the CLI, in its own processes: ls, cat (raw bytes), mkdir, put.
      const names = (await xenfs('ls', '/')).toString().trim().split('\n').sort();
      assert.deepEqual(names, ['docs/', 'empty-dir/', 'from-api/', 'large.bin', 'lost+found/', 'sparse.bin']);
      assert.equal(sha(await xenfs('cat', '/large.bin')), tree.get('/large.bin'));
      // The whole tree copied out by xenfs in one run, every file checked against dom0's hash.
      await xenfs('get', '-r', '/', '/tmp/tree-out');
      for (const [path, hash] of tree) assert.equal(sha(readFileSync(`/tmp/tree-out${path}`)), hash, `xenfs get -r: ${path}`);
      const data = randomBytes(1_500_007);
      writeFileSync('/tmp/new.bin', data);
      await xenfs('mkdir', '-p', '/from-domU');
      await xenfs('put', '/tmp/new.bin', '/from-domU/new.bin');
      assert.equal(sha(await xenfs('cat', '/from-domU/new.bin')), sha(data));
      // The domU's /tmp is memory, and the guest is small: what later tests need more than these copies.
      rmSync('/tmp/tree-out', { recursive: true, force: true });
      rmSync('/tmp/new.bin', { force: true });

      // Pulled out: the watcher says so; dom0 checks what was written.
      assert.equal(await askDom0(p.xenstore, 'detach', 'xvdg'), 'started');
      const removed = await w.waitFor((e) => e.type === 'removed' && e.device.vdev === XVDG, 120_000);
      assert.equal(removed.device.name, 'xvdg');
      const check = await askDom0Within(120_000, p.xenstore, 'files-check', '/from-domU/new.bin');
      const [head, kernelList = ''] = check.split(' kernel ');
      assert.equal(head, `fsck=0 new=${sha(data)}`, check);
      tree.set('/from-domU/new.bin', sha(data));
      // dom0's kernel ext4 (a read-only loop mount) reads every file with the hash this side wrote or read.
      const seen = new Map(
        kernelList
          .trim()
          .split(' ')
          .filter(Boolean)
          .map((kv) => kv.split('=') as [string, string]),
      );
      assert.deepEqual([...seen.keys()].sort(), [...tree.keys()].sort(), `the kernel's list: ${kernelList}`);
      for (const [path, hash] of tree) assert.equal(seen.get(path), hash, `the kernel's ext4 read ${path}`);
      console.log(
        `# files: ${tree.size - 5} files read by hash (API, and xenfs get -r), 5 written (4 through the API, 1 by xenfs); after the detach ` +
          `dom0's e2fsck -fn is clean, debugfs reads the new file, and dom0's kernel ext4 reads all ${seen.size} files with their hashes`,
      );
    } finally {
      await w.close();
      await p.close();
    }
  },
);

test(
  "files: ext4 copied while dom0's kernel had it mounted (a journal needing recovery) is refused read-write",
  { timeout: 300_000 },
  async () => {
    const p = await platform();
    const w = watchBlockDevices(p);
    try {
      await w.waitFor((e) => e.type === 'added', 30_000);
      const answer = await askDom0Within(180_000, p.xenstore, 'dirty-attach');
      assert.match(answer, /^needs_recovery=[1-9]/, answer);
      await w.waitFor((e) => e.type === 'added' && e.device.vdev === XVDI, 60_000);
      const dev = await openBlockDevice({ platform: p, vdev: XVDI });
      try {
        await assert.rejects(mountExt(dev), (err: { code?: string; message?: string }) => {
          assert.equal(err.code, 'FS_EDIRTY');
          assert.match(err.message ?? '', /journal needs recovery.*e2fsck -fy/);
          return true;
        });
        const ro = await mountExt(dev, { readOnly: true });
        assert.match(ro.warnings.join(' '), /journal needs recovery/);
        await ro.unmount();
      } finally {
        await dev.close();
      }
      assert.equal(await askDom0(p.xenstore, 'detach', 'xvdi'), 'started');
      await w.waitFor((e) => e.type === 'removed' && e.device.vdev === XVDI, 120_000);
      console.log(`# files: dom0's image with a journal needing recovery: FS_EDIRTY read-write, read-only with the warning`);
    } finally {
      await w.close();
      await p.close();
    }
  },
);
