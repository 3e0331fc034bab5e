/**
 * The simulated event-channel table of one domain, as Int32 words in a
 * SharedArrayBuffer. It models Xen's 2-level ABI: a pending bit and a mask
 * bit per port, an interdomain binding, and an upcall to whoever listens.
 *
 * The upcall goes to a "handle" (an open /dev/xen/evtchn, in Linux terms):
 * each thread that listens in a domain opens its own, so a backend worker and
 * xenstored on the main thread, both dom0, are each woken for their ports only.
 */

/** Ports per domain. Port 0 is never allocated, as in Xen. */
export const NR_PORTS = 1024;
/** Listener handles per domain. */
export const MAX_HANDLES = 64;

/** Word 0 locks the table (allocation and binding only; delivery is lock-free). */
export const LOCK = 0;
/** Per handle: [in use, upcall sequence]. The sequence is what a listener waits on. */
export const HANDLE_BASE = 2;
export const HANDLE_WORDS = 2;
export const PORT_BASE = HANDLE_BASE + MAX_HANDLES * HANDLE_WORDS;
export const PORT_WORDS = 8;
export const PortWord = { state: 0, remoteDom: 1, remotePort: 2, pending: 3, masked: 4, owner: 5 } as const;

export const PortState = { free: 0, unbound: 1, interdomain: 2 } as const;

export const EVTCHN_TABLE_BYTES = (PORT_BASE + NR_PORTS * PORT_WORDS) * 4;

export function portIndex(port: number): number {
  return PORT_BASE + port * PORT_WORDS;
}

export function handleSeqIndex(h: number): number {
  return HANDLE_BASE + h * HANDLE_WORDS + 1;
}
