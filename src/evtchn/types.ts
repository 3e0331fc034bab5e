/**
 * What the frontend needs from event channels: a port bound to another
 * domain, a way to kick it, and being told, without blocking the event loop,
 * when it kicks back. Implemented over libxenevtchn on a real guest and by the
 * simulated host.
 */

/** One end of an interdomain event channel. */
export interface EventChannel {
  /** The local port number. */
  readonly port: number;
  /** Notifies the remote end. Cheap: no allocation; one FFI call on real Xen. */
  notify(): void;
  /**
   * Sets (or clears, with null) the function called when the remote end
   * notifies. Calls come from the event loop, never from inside notify() or
   * another handler. Notifications that arrive while one is pending are
   * coalesced into one call, as Xen coalesces them into one pending bit, so a
   * handler must drain all the work it finds.
   */
  onEvent(handler: (() => void) | null): void;
  /** Holds delivery: notifications stay pending until unmask(). */
  mask(): void;
  /** Resumes delivery; an event that came while masked is delivered now. */
  unmask(): void;
  /** Unbinds the port. The remote end is left unbound, as Xen leaves it. */
  close(): void;
}

export interface EventChannelStats {
  /** notify() calls. */
  notifications: number;
  /** Handler calls (after coalescing). */
  deliveries: number;
  /** Ports open. */
  openPorts: number;
}

export interface EventChannels {
  /** Allocates a port that `remoteDomid` may bind to (EVTCHNOP_alloc_unbound). */
  allocUnbound(remoteDomid: number): EventChannel;
  /** Binds to a port another domain allocated for us (EVTCHNOP_bind_interdomain). */
  bindInterdomain(remoteDomid: number, remotePort: number): EventChannel;
  stats(): EventChannelStats;
  /** Closes every port and stops delivery. */
  close(): void;
  /**
   * After a save/restore: stops delivery and forgets every port without
   * touching any of them. The kernel dropped their bindings when the domain
   * resumed, and unbinding one then (or closing the handle, which unbinds
   * them all) hits a BUG_ON in some kernels (Linux 6.1's evtchn.c). Nothing
   * may be done with this set afterwards; open a new one.
   */
  abandon(): void;
}
