/**
 * Files on a disk plugged in while the program runs: dom0 makes a GPT image
 * whose partition 1 is ext4 (mkfs.ext4 -d, a known tree) and runs
 * `xl block-attach`; the watcher sees xvdg arrive; every file is read back
 * by hash through the API and through the xenfs CLI, which also writes a
 * file; after `xl block-detach` dom0 runs e2fsck -fn and reads the new file
 * with debugfs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { listBlockDevices, mountExt, openBlockDevice, openPartition, readPartitionTable, watchBlockDevices } from '../../src/index.js';
import { askDom0, askDom0Within, platform } from './env.js';

/** xvdg: attached during the test. */
const XVDG = 51808;
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
        const fs = await mountExt(await openPartition(dev, 1), { readOnly: true });
        for (const [path, hash] of tree) assert.equal(sha(await fs.readFile(path)), hash, path);
        await fs.unmount();
      } finally {
        await dev.close();
      }

      // Through the CLI, in its own processes: ls, cat (raw bytes), mkdir, put.
      const names = (await xenfs('ls', '/')).toString().trim().split('\n').sort();
      assert.deepEqual(names, ['docs/', 'empty-dir/', 'large.bin', 'lost+found/', 'sparse.bin']);
      assert.equal(sha(await xenfs('cat', '/large.bin')), tree.get('/large.bin'));
      // The whole tree copied out by xenfs in one run, every file checked against dom0's hash.
      await xenfs('get', '-r', '/', '/tmp/tree-out');
      for (const [path, hash] of tree) assert.equal(sha(readFileSync(`/tmp/tree-out${path}`)), hash, `xenfs get -r: ${path}`);
      const data = randomBytes(1_500_007);
      writeFileSync('/tmp/new.bin', data);
      await xenfs('mkdir', '-p', '/from-domU');
      await xenfs('put', '/tmp/new.bin', '/from-domU/new.bin');
      assert.equal(sha(await xenfs('cat', '/from-domU/new.bin')), sha(data));

      // Pulled out: the watcher says so; dom0 checks what was written.
      assert.equal(await askDom0(p.xenstore, 'detach', 'xvdg'), 'started');
      const removed = await w.waitFor((e) => e.type === 'removed' && e.device.vdev === XVDG, 120_000);
      assert.equal(removed.device.name, 'xvdg');
      const check = await askDom0Within(120_000, p.xenstore, 'files-check', '/from-domU/new.bin');
      assert.equal(check, `fsck=0 new=${sha(data)}`);
      console.log(
        `# files: ${tree.size} files read by hash (API, and xenfs get -r), 1 written; after the detach dom0's e2fsck -fn is clean and debugfs reads it back`,
      );
    } finally {
      await w.close();
      await p.close();
    }
  },
);
