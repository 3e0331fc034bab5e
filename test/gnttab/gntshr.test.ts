import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { XenGrantSharer, loadGntshrLib, type GntshrLib } from '../../src/gnttab/gntshr.js';
import { loadEvtchnLib } from '../../src/evtchn/xenevtchn.js';
import { openXenPlatform } from '../../src/platform/xen.js';
import { loadKoffi, openLibrary } from '../../src/ffi/koffi.js';
import { isXenError } from '../../src/errors.js';

const onXen = existsSync('/dev/xen/gntalloc');

/**
 * libxengnttab's entry points with /dev/xen/gntalloc replaced by anonymous
 * mmap: the memory, the pointers and koffi.view are real, only the grants are not.
 */
function mmapLib(): GntshrLib & { unmapped: number; closed: number } {
  const koffi = loadKoffi();
  const libc = openLibrary(['libc.so.6'], 'libc6');
  const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)');
  const munmap = libc.func('int munmap(void *addr, size_t length)');
  let nextRef = 100;
  const lib = {
    unmapped: 0,
    closed: 0,
    open: () => ({ handle: true }),
    share: (_h: unknown, _domid: number, count: number, refs: Uint32Array) => {
      for (let i = 0; i < count; i++) refs[i] = nextRef++;
      return mmap(null, count * 4096, 3 /* PROT_READ|PROT_WRITE */, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0);
    },
    unshare: (_h: unknown, addr: unknown, count: number) => {
      lib.unmapped += count;
      return munmap(addr, count * 4096) as number;
    },
    close: () => ++lib.closed && 0,
    view: (addr: unknown, bytes: number) => koffi.view(addr, bytes),
    errno: () => koffi.errno(),
  };
  return lib;
}

describe('real-Xen grant bindings (libxengnttab through koffi)', () => {
  it('load libxengnttab and libxenevtchn with every entry point the driver uses', () => {
    expect(() => loadGntshrLib()).not.toThrow();
    expect(() => loadEvtchnLib()).not.toThrow();
  });

  it('a missing library is XEN_ENOLIB naming the Debian package', () => {
    try {
      loadGntshrLib(['libxengnttab-missing.so.9']);
      expect.unreachable();
    } catch (err) {
      expect(isXenError(err, 'XEN_ENOLIB')).toBe(true);
      expect((err as Error).message).toMatch(/libxengnttab1/);
    }
  });

  it.skipIf(onXen)('without /dev/xen: XEN_ENODEV, "not a Xen guest", from the library itself', () => {
    try {
      new XenGrantSharer();
      expect.unreachable();
    } catch (err) {
      expect(isXenError(err, 'XEN_ENODEV')).toBe(true);
      expect((err as Error).message).toMatch(/\/dev\/xen\/gntalloc is missing .*not a Xen guest, or xen-gntalloc not loaded/);
    }
  });

  it.skipIf(onXen)('openXenPlatform rejects with XEN_ENODEV and leaves nothing open', async () => {
    await expect(openXenPlatform()).rejects.toMatchObject({ code: 'XEN_ENODEV' });
  });

  it('shares in one call, views the mapped pages without copying, unshares by address', () => {
    const lib = mmapLib();
    const sharer = new XenGrantSharer(lib);
    const p = sharer.share(0, 3, true);
    expect(p.refs).toEqual([100, 101, 102]);
    expect(p.bytes.length).toBe(3 * 4096);
    p.bytes[3 * 4096 - 1] = 0x5a; // the last byte of the mapping is ours
    expect(p.bytes[3 * 4096 - 1]).toBe(0x5a);
    const q = sharer.share(0, 1, false);
    expect(sharer.stats()).toMatchObject({ shareCalls: 2, sharedPages: 4 });
    sharer.unshare(p);
    expect(lib.unmapped).toBe(3);
    expect(() => sharer.unshare(p)).toThrow(expect.objectContaining({ code: 'XEN_EINVAL' }));
    sharer.close(); // unshares q, closes the handle
    expect(lib.unmapped).toBe(4);
    expect(lib.closed).toBe(1);
    expect(() => sharer.share(0, 1, true)).toThrow(expect.objectContaining({ code: 'XEN_CLOSED' }));
    sharer.unshare(q); // already unshared by close(): nothing more happens
    expect(lib.unmapped).toBe(4);
  });

  it('a failed share is a typed error carrying the errno name', () => {
    const lib = mmapLib();
    lib.share = () => null;
    lib.errno = () => 28; // ENOSPC
    const sharer = new XenGrantSharer(lib);
    expect(() => sharer.share(0, 1, true)).toThrow(
      expect.objectContaining({ code: 'XEN_ENOSPC', message: expect.stringMatching(/ENOSPC/) }),
    );
  });
});
