/**
 * The frontend's ring code against a backend nobody here wrote: ring_peer.c,
 * compiled now with gcc from libxen-dev's blkif.h and ring.h, serves a disk
 * image over a ring in a shared file that this process maps with mmap
 * (through koffi). The frontend side is the real data path: BlkQueue with its
 * shadow ids, grant pool and bounce pages; only the "grants" are page indices
 * in the shared file and the event channels are bytes on pipes.
 */
import { spawn, type ChildProcess, execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadKoffi, openLibrary } from '../../src/ffi/koffi.js';
import { GrantSharerBase } from '../../src/gnttab/sharer_base.js';
import { GrantPool } from '../../src/gnttab/pool.js';
import { type SharedPages } from '../../src/gnttab/types.js';
import { PAGE_SIZE } from '../../src/wire/page.js';
import type { EventChannel } from '../../src/evtchn/types.js';
import { BLKIF_NATIVE_ABI, BlkifOp } from '../../src/wire/blkif.js';
import { BlkQueue } from '../../src/blkfront/queue.js';
import { Completion, IoOp } from '../../src/blkfront/request.js';
import { BlkifError, XenError } from '../../src/errors.js';
import { FrameAllocator } from '../../src/sim/host/grants.js';
import { pattern, rng } from '../helpers/blk.js';

const RING_PAGES = 2;
const DATA_PAGES = 1024;
const DISK = 8 << 20;

/** "Grants" over the shared file's data pages: a ref is a page index the peer can find. */
class ShmSharer extends GrantSharerBase<SharedPages & { first: number }> {
  private readonly frames = new FrameAllocator(DATA_PAGES);
  constructor(private readonly data: Uint8Array) {
    super();
  }
  protected sharePages(domid: number, count: number, writable: boolean): SharedPages & { first: number } {
    const first = this.frames.alloc(count);
    if (first < 0) throw new XenError('XEN_ENOSPC', 'shared data area full');
    const bytes = this.data.subarray(first * PAGE_SIZE, (first + count) * PAGE_SIZE);
    bytes.fill(0);
    return { refs: Array.from({ length: count }, (_, i) => first + i), bytes, domid, writable, first };
  }
  protected unsharePages(pages: SharedPages & { first: number }): void {
    this.frames.release(pages.first, pages.refs.length);
  }
  protected release(): void {}
}

/** An event channel made of the peer's stdin (our kicks) and stdout (its kicks). */
class PipeChannel implements EventChannel {
  readonly port = 1;
  proc: ChildProcess | undefined;
  handler: (() => void) | null = null;
  sent = 0;
  received = 0;
  deliveries = 0;
  notify(): void {
    this.sent++;
    this.proc!.stdin!.write('k');
  }
  onEvent(h: (() => void) | null): void {
    this.handler = h;
  }
  /** Bytes that arrived together are one delivery, as a pending bit coalesces them. */
  arrived(n: number): void {
    this.received += n;
    this.deliveries++;
    this.handler?.();
  }
  mask(): void {}
  unmask(): void {}
  close(): void {
    this.handler = null;
  }
}

describe("the frontend's ring code against Xen's ring.h macros (C peer)", () => {
  it('serves random writes and reads through the real data path, with notification counts that agree on both sides', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringpeer-'));
    const exe = join(dir, 'ring_peer');
    execFileSync('gcc', ['-Wall', '-Werror', '-O2', '-o', exe, fileURLToPath(new URL('./ring_peer.c', import.meta.url))]);
    const shmPath = join(dir, 'shm');
    const image = join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(DISK));
    const total = (RING_PAGES + DATA_PAGES) * PAGE_SIZE;
    const fd = openSync(shmPath, 'w+');
    ftruncateSync(fd, total);
    const koffi = loadKoffi();
    const libc = openLibrary(['libc.so.6'], 'libc6');
    const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)');
    const munmap = libc.func('int munmap(void *addr, size_t length)');
    const ptr = mmap(null, total, 3 /* PROT_READ|PROT_WRITE */, 1 /* MAP_SHARED */, fd, 0);
    const mem = new Uint8Array(koffi.view(ptr, total));
    const ring = mem.subarray(0, RING_PAGES * PAGE_SIZE);
    const sharer = new ShmSharer(mem.subarray(RING_PAGES * PAGE_SIZE));
    const pool = new GrantPool(sharer, 0, { pages: 32 * 11 });
    const channel = new PipeChannel();
    const errors: BlkifError[] = [];
    // The queue initialises the shared ring (SHARED_RING_INIT) before the peer attaches to it.
    const queue = new BlkQueue(
      0,
      ring,
      channel,
      pool,
      { abi: BLKIF_NATIVE_ABI, handle: 0, maxSegments: 11, persistent: false },
      {
        completed: () => undefined,
        broken: (e) => errors.push(e),
        oversize: () => errors.push(new BlkifError('BLKIF_EINVAL', 'a piece larger than the ring')),
      },
    );
    expect(queue.ring.entries).toBe(64);

    const proc = spawn(exe, [shmPath, String(RING_PAGES), String(DATA_PAGES), image], { stdio: ['pipe', 'pipe', 'pipe'] });
    channel.proc = proc;
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const ready = new Promise<number>((resolve) => {
      let line = '';
      proc.stdout.on('data', (d: Buffer) => {
        let kicks = 0;
        for (const b of d) {
          if (line !== null && !line.endsWith('\n')) {
            line += String.fromCharCode(b);
            if (line.endsWith('\n')) resolve(Number(line.split(' ')[1]));
          } else if (b === 0x21) kicks++;
        }
        if (kicks > 0) channel.arrived(kicks);
      });
    });
    expect(await ready).toBe(64); // RING_SIZE agrees with ours

    const io = (op: number, offset: number, data: Uint8Array): Promise<void> =>
      new Promise((resolve, reject) => {
        const done = new Completion(resolve, reject);
        done.remaining = 1;
        queue.enqueue(new IoOp(op, offset / 512, data.byteLength / 512, data, done));
      });

    const model = new Uint8Array(DISK);
    const next = rng(5);
    let requests = 0;
    for (let round = 0; round < 20; round++) {
      // 48 non-overlapping writes of 1..11 pages in flight at once (more than fits: backpressure), then reads.
      const jobs: Array<Promise<void>> = [];
      const slots = new Set<number>();
      for (let i = 0; i < 48; i++) {
        let slot = next() % 170;
        while (slots.has(slot)) slot = (slot + 1) % 170;
        slots.add(slot);
        const len = (1 + (next() % 88)) * 512;
        const off = slot * 11 * PAGE_SIZE + (next() % 8) * 512;
        const data = pattern(off, len, round * 100 + i);
        model.set(data, off);
        jobs.push(io(BlkifOp.Write, off, data));
        requests++;
      }
      await Promise.all(jobs);
      const reads = [...slots].map(async (slot) => {
        const buf = new Uint8Array(11 * PAGE_SIZE);
        await io(BlkifOp.Read, slot * 11 * PAGE_SIZE, buf);
        expect(Buffer.compare(Buffer.from(buf), Buffer.from(model.subarray(slot * 11 * PAGE_SIZE, (slot + 1) * 11 * PAGE_SIZE)))).toBe(0);
      });
      requests += reads.length;
      await Promise.all(reads);
    }
    await io(BlkifOp.FlushDiskcache, 0, new Uint8Array(0)).catch(() => undefined);
    requests++;
    expect(errors).toEqual([]);
    expect(Buffer.compare(readFileSync(image), Buffer.from(model))).toBe(0);

    proc.stdin.end();
    await new Promise((r) => proc.once('exit', r));
    const c: Record<string, number> = Object.fromEntries(
      stderr
        .trim()
        .split(' ')
        .map((kv) => {
          const [k, v] = kv.split('=');
          return [k, Number(v)];
        }),
    );
    const s = queue.stats;
    expect(c.requests).toBe(requests);
    expect(s.requests).toBe(requests);
    expect(c.errors).toBe(0);
    // Every notification one side sent is one the other side received.
    expect(c.kicks).toBe(s.notifications);
    expect(channel.received).toBe(c.notifies);
    // Event suppression on both sides: far fewer notifications than requests.
    expect(s.notifications).toBeLessThan(requests / 2);
    expect(c.notifies).toBeLessThan(requests / 2);
    expect(s.responses).toBe(requests);
    process.stdout.write(
      `ring peer: ${requests} requests; frontend sent ${s.notifications} notifications, backend sent ${c.notifies}; ` +
        `${(s.responses / Math.max(1, s.interrupts)).toFixed(1)} responses per interrupt\n`,
    );

    queue.close();
    await pool.close();
    munmap(ptr, total);
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });
});
