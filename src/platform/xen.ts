/**
 * The real-Xen platform: xenstore over /dev/xen/xenbus, grants through
 * libxengnttab (/dev/xen/gntalloc) and event channels through libxenevtchn
 * (/dev/xen/evtchn), the last two by FFI.
 */
import { PlatformError } from '../errors.js';
import { resumablePlatform } from './resumable.js';
import { XenstoreClient, type XenstoreClientOptions } from '../xenbus/client.js';
import { DEFAULT_XENBUS_DEVICE, openXenbusDevice } from '../transport/xenbus_device.js';
import { XenGrantSharer, loadGntshrLib, type GntshrLib } from '../gnttab/gntshr.js';
import { XenEventChannels, loadEvtchnLib, type EvtchnLib, type EvtchnWakeup } from '../evtchn/xenevtchn.js';
import { accessError, loadLibc } from '../ffi/koffi.js';
import type { XenPlatform } from './types.js';
import { HostVbdOwnership, type HostVbdOwnershipOptions } from './vbd_lock.js';

export interface XenPlatformOptions {
  /** The xenbus device (default /dev/xen/xenbus). */
  xenbusDevice?: string;
  xenstore?: XenstoreClientOptions;
  /** Files opened on the xenbus device: the most requests at xenstored at once (default 3). */
  xenbusFiles?: number;
  /** Library bindings to use instead of loading libxengnttab / libxenevtchn. */
  gntshr?: GntshrLib;
  evtchn?: EvtchnLib;
  /**
   * How event-channel wake-ups reach the process: 'event-loop' (default)
   * has libuv's epoll watch /dev/xen/evtchn; 'thread' polls on a worker
   * thread and hands each wake-up to the loop (the fallback where Node
   * offers no handle for the first).
   */
  evtchnWakeup?: EvtchnWakeup;
  /**
   * Where vbd claims are locked (default /run/lock/xen-blkfront), and the
   * sysfs directory read for the kernel's bindings: every process that
   * drives this guest's vbds must use the same lock directory.
   */
  vbdLocks?: HostVbdOwnershipOptions;
}

/**
 * Opens the platform of the Xen guest this process runs in. Rejects with
 * XEN_ENOLIB when the Xen libraries are not installed, XEN_ENODEV when
 * /dev/xen is absent or its modules are not loaded (not a Xen guest), and
 * releases whatever it had opened before failing.
 */
export async function openXenPlatform(opts: XenPlatformOptions = {}): Promise<XenPlatform> {
  const opened: Array<() => void> = [];
  try {
    const grants = new XenGrantSharer(opts.gntshr ?? loadGntshrLib());
    opened.push(() => grants.close());
    const evtchnLib = opts.evtchn ?? loadEvtchnLib();
    // Opened here first so a guest without /dev/xen/evtchn fails before anything else.
    const evtchnOpts = { wakeup: opts.evtchnWakeup };
    let first: XenEventChannels | null = new XenEventChannels(evtchnLib, loadLibc(), evtchnOpts);
    opened.push(() => first?.close());
    const xenbusPath = opts.xenbusDevice ?? DEFAULT_XENBUS_DEVICE;
    const stream = await openXenbusDevice(xenbusPath, { files: opts.xenbusFiles }).catch((cause: unknown) => {
      const errno = (cause as { cause?: { code?: string } }).cause?.code;
      if (errno === 'EACCES' || errno === 'EPERM') throw accessError(xenbusPath, cause);
      throw new PlatformError('XEN_ENODEV', `${xenbusPath}: not a Xen guest, or xenfs not mounted`, { cause });
    });
    const xenstore = new XenstoreClient(stream, opts.xenstore);
    opened.push(() => xenstore.close());
    // A guest's relative path "domid" is /local/domain/<id>/domid, written by the toolstack.
    const domid = await xenstore.readInt('domid');
    return resumablePlatform({
      domid,
      xenstore,
      grants,
      vbds: new HostVbdOwnership(opts.vbdLocks),
      // A thread opens its own library handles: nothing to set apart, nothing to give back.
      threadShare: (id) => ({ spec: { kind: 'xen', domid: id, wakeup: opts.evtchnWakeup }, release: () => undefined }),
      openEvtchn: () => {
        const e = first ?? new XenEventChannels(evtchnLib, loadLibc(), evtchnOpts);
        first = null;
        return e;
      },
    });
  } catch (err) {
    for (const undo of opened.reverse()) undo();
    throw err;
  }
}
