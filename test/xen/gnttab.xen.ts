/**
 * Grant sharing and event channels through koffi into Xen's own libraries,
 * against the real hypervisor. The guest is its own peer: it maps the pages
 * it shared through gntdev (libxengnttab's map side, which only this test
 * uses) and binds an interdomain channel to its own unbound port.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadKoffi, openLibrary } from '../../src/ffi/koffi.js';
import { XenError, PAGE_SIZE } from '../../src/index.js';
import { platform } from './env.js';

const PROT_READ = 1;
const PROT_WRITE = 2;

/** libxengnttab's mapping half (/dev/xen/gntdev), for the test to play the backend. */
function gntdev() {
  const koffi = loadKoffi();
  const lib = openLibrary(['libxengnttab.so.1'], 'libxengnttab1');
  const open = lib.func('void *xengnttab_open(void *logger, unsigned int open_flags)');
  const mapRefs = lib.func('void *xengnttab_map_grant_refs(void *xgt, uint32_t count, uint32_t *domids, uint32_t *refs, int prot)');
  const unmap = lib.func('int xengnttab_unmap(void *xgt, void *start_address, uint32_t count)');
  const close = lib.func('int xengnttab_close(void *xgt)');
  const handle: unknown = open(null, 0);
  assert.ok(handle, `xengnttab_open failed (errno ${koffi.errno()})`);
  return {
    map(domid: number, refs: readonly number[], writable: boolean): { bytes: Uint8Array; unmap(): void } {
      const addr: unknown = mapRefs(
        handle,
        refs.length,
        new Uint32Array(refs.length).fill(domid),
        new Uint32Array(refs),
        PROT_READ | (writable ? PROT_WRITE : 0),
      );
      assert.ok(addr, `xengnttab_map_grant_refs failed (errno ${koffi.errno()})`);
      return {
        bytes: new Uint8Array(koffi.view(addr, refs.length * PAGE_SIZE)),
        unmap: () => assert.equal(unmap(handle, addr, refs.length), 0),
      };
    },
    close: () => close(handle),
  };
}

test('gnttab: pages shared through libxengnttab are the pages another mapper sees', async () => {
  const p = await platform();
  const dev = gntdev();
  try {
    const shared = p.grants.share(p.domid, 8, true);
    assert.equal(shared.refs.length, 8);
    assert.equal(new Set(shared.refs).size, 8, 'distinct grant refs');
    for (let i = 0; i < shared.bytes.length; i++) shared.bytes[i] = (i * 7 + (i >> 12)) & 0xff;

    const mapped = dev.map(p.domid, shared.refs, true);
    assert.equal(Buffer.compare(mapped.bytes, shared.bytes), 0, 'the mapping shows what the sharer wrote');
    mapped.bytes.fill(0xa5, 3 * PAGE_SIZE, 4 * PAGE_SIZE); // the "backend" writes page 3
    assert.ok(
      shared.bytes.subarray(3 * PAGE_SIZE, 4 * PAGE_SIZE).every((b) => b === 0xa5),
      'and the sharer sees its writes',
    );
    mapped.unmap();

    // A read-only grant cannot be mapped writable.
    const ro = p.grants.share(p.domid, 1, false);
    assert.throws(() => dev.map(p.domid, ro.refs, true));
    const roMap = dev.map(p.domid, ro.refs, false);
    roMap.unmap();
    p.grants.unshare(ro);

    p.grants.unshare(shared);
    assert.equal(p.grants.stats().sharedPages, 0);
    // After unshare the refs are gone: mapping one fails.
    assert.throws(() => dev.map(p.domid, [shared.refs[0]!], false));
  } finally {
    dev.close();
    await p.close();
  }
});

test('gnttab: sharing until the grant table runs out gives XEN_ENOSPC, and everything comes back', async () => {
  const p = await platform();
  try {
    const held = [];
    let error: unknown;
    for (let i = 0; i < 4096 && error === undefined; i++) {
      try {
        held.push(p.grants.share(p.domid, 64, false));
      } catch (e) {
        error = e;
      }
    }
    assert.ok(error instanceof XenError, `sharing stops with a typed error (${String(error)})`);
    assert.equal(error.code, 'XEN_ENOSPC');
    console.log(`# gnttab: ${held.length * 64} pages shared before ${error.code}`);
    for (const s of held) p.grants.unshare(s);
    assert.equal(p.grants.stats().sharedPages, 0);
    p.grants.unshare(p.grants.share(p.domid, 64, false)); // and sharing works again
  } finally {
    await p.close();
  }
});

test('evtchn: an interdomain channel to our own unbound port carries notifications both ways', async () => {
  const p = await platform();
  try {
    const a = p.evtchn.allocUnbound(p.domid);
    const b = p.evtchn.bindInterdomain(p.domid, a.port);
    assert.notEqual(a.port, b.port);
    let atA = 0;
    let atB = 0;
    a.onEvent(() => {
      atA++;
    });
    b.onEvent(() => {
      atB++;
    });
    const until = async (pred: () => boolean, what: string) => {
      const deadline = Date.now() + 10_000;
      while (!pred()) {
        if (Date.now() > deadline) assert.fail(`no event ${what}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    b.notify();
    await until(() => atA === 1, 'at a');
    a.notify();
    await until(() => atB === 1, 'at b');
    // Notifications are edge events: many before delivery coalesce, none are lost after.
    for (let round = 0; round < 50; round++) {
      const before = atA;
      b.notify();
      await until(() => atA > before, `at a in round ${round}`);
    }
    // A masked port holds its event until unmasked.
    a.mask();
    const before = atA;
    b.notify();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(atA, before, 'nothing delivered while masked');
    a.unmask();
    await until(() => atA === before + 1, 'after unmask');
    const stats = p.evtchn.stats();
    assert.ok(stats.notifications >= 53 && stats.deliveries >= 53, JSON.stringify(stats));
    b.close();
    a.close();
    assert.equal(p.evtchn.stats().openPorts, 0);
  } finally {
    await p.close();
  }
});
