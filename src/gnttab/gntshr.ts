/**
 * Grant sharing on a real Xen guest: libxengnttab's xengntshr_* over
 * /dev/xen/gntalloc, through koffi. One share call maps all its pages in one
 * contiguous region, which is viewed without copying (koffi.view); the
 * pointer is kept only to unshare it.
 */
import { readFileSync } from 'node:fs';
import { PlatformError, XenError } from '../errors.js';
import { deviceOpenError, errnoName, loadKoffi, openLibrary } from '../ffi/koffi.js';
import { type SharedPages } from './types.js';
import { PAGE_SIZE } from '../wire/page.js';
import { GrantSharerBase } from './sharer_base.js';

/** The C entry points used, as functions (swappable in tests). */
export interface GntshrLib {
  /** xengntshr_open(NULL, 0): a handle, or null with errno set. */
  open(): unknown;
  /** xengntshr_share_pages: the mapped region, or null; fills `refs`. */
  share(handle: unknown, domid: number, count: number, refs: Uint32Array, writable: boolean): unknown;
  unshare(handle: unknown, addr: unknown, count: number): number;
  close(handle: unknown): number;
  /** A zero-copy ArrayBuffer over `bytes` bytes at `addr`. */
  view(addr: unknown, bytes: number): ArrayBuffer;
  errno(): number;
}

/** Where gntalloc publishes the most grants all its users together may hold. */
export const GNTALLOC_LIMIT = '/sys/module/xen_gntalloc/parameters/limit';

export const LIBXENGNTTAB = ['libxengnttab.so.1', 'libxengnttab.so'];

/** Loads libxengnttab and binds the functions. Throws XEN_ENOLIB when it is not installed. */
export function loadGntshrLib(sonames: readonly string[] = LIBXENGNTTAB): GntshrLib {
  const koffi = loadKoffi();
  const lib = openLibrary(sonames, 'libxengnttab1');
  const open = lib.func('void *xengntshr_open(void *logger, unsigned int open_flags)');
  const share = lib.func('void *xengntshr_share_pages(void *xgs, uint32_t domid, int count, _Out_ uint32_t *refs, int writable)');
  const unshare = lib.func('int xengntshr_unshare(void *xgs, void *start_address, uint32_t count)');
  const close = lib.func('int xengntshr_close(void *xgs)');
  return {
    open: (): unknown => open(null, 0) as unknown,
    share: (h, domid, count, refs, writable): unknown => share(h, domid, count, refs, writable ? 1 : 0) as unknown,
    unshare: (h, addr, count) => unshare(h, addr, count) as number,
    close: (h) => close(h) as number,
    view: (addr, bytes) => koffi.view(addr, bytes),
    errno: () => koffi.errno(),
  };
}

class XenSharedPages implements SharedPages {
  constructor(
    readonly refs: readonly number[],
    readonly bytes: Uint8Array,
    readonly domid: number,
    readonly writable: boolean,
    readonly addr: unknown,
  ) {}
}

export class XenGrantSharer extends GrantSharerBase<XenSharedPages> {
  private readonly handle: unknown;

  /** Opens /dev/xen/gntalloc. Throws XEN_ENODEV when this is not a Xen guest. */
  constructor(private readonly lib: GntshrLib = loadGntshrLib()) {
    super();
    const h = lib.open();
    if (h === null || h === undefined) {
      throw deviceOpenError('xengntshr_open', '/dev/xen/gntalloc', 'xen-gntalloc', lib.errno());
    }
    this.handle = h;
  }

  /** gntalloc's `limit` module parameter, read each time (root may change it at run time). */
  limit(): number | undefined {
    try {
      const v = Number.parseInt(readFileSync(GNTALLOC_LIMIT, 'utf8'), 10);
      return Number.isInteger(v) && v > 0 ? v : undefined;
    } catch {
      return undefined;
    }
  }

  protected sharePages(domid: number, count: number, writable: boolean): XenSharedPages {
    const refs = new Uint32Array(count);
    const addr = this.lib.share(this.handle, domid, count, refs, writable);
    if (addr === null || addr === undefined) {
      const name = errnoName(this.lib.errno());
      throw new XenError(
        name === 'ENOSPC' || name === 'ENOMEM' ? 'XEN_ENOSPC' : 'XEN_ESYS',
        `xengntshr_share_pages(${count} pages to domain ${domid}) failed (${name})`,
      );
    }
    const bytes = new Uint8Array(this.lib.view(addr, count * PAGE_SIZE));
    return new XenSharedPages([...refs], bytes, domid, writable, addr);
  }

  protected unsharePages(pages: XenSharedPages): void {
    // gntalloc ends each grant when the region is unmapped, deferring (in the
    // kernel) any the backend still maps: nothing for us to retry.
    if (this.lib.unshare(this.handle, pages.addr, pages.refs.length) < 0) {
      throw new PlatformError('XEN_ESYS', `xengntshr_unshare failed (${errnoName(this.lib.errno())})`);
    }
  }

  protected release(): void {
    this.lib.close(this.handle);
  }
}
