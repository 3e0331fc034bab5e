/**
 * Event channels on the simulated host, with Xen's semantics (2-level ABI):
 *
 * - notify sets the remote port's pending bit; only the 0 → 1 transition of an
 *   unmasked port raises an upcall, so notifications coalesce while pending;
 * - a masked port collects its pending bit silently, and unmask delivers it;
 * - binding to an unbound port marks the new local port pending, because
 *   notifications sent to the unbound end were dropped (Xen does the same);
 * - closing one end leaves the other unbound, and notifies to an unbound port
 *   are dropped.
 *
 * A listener on the main thread waits with Atomics.waitAsync and never blocks
 * the event loop; a worker may block in {@link SimEventChannels.waitForEvents}.
 */
import { PlatformError } from '../../errors.js';
import type { EventChannel, EventChannelStats, EventChannels } from '../../evtchn/types.js';
import { Counter, lockWord, unlockWord, type SimDomain, type SimHypervisor } from './hypervisor.js';
import { HANDLE_BASE, HANDLE_WORDS, LOCK, MAX_HANDLES, NR_PORTS, PortState, PortWord, handleSeqIndex, portIndex } from './evtchn_layout.js';

class SimEventChannel implements EventChannel {
  handler: (() => void) | null = null;
  open = true;
  private readonly base: number;

  constructor(
    private readonly owner: SimEventChannels,
    readonly port: number,
  ) {
    this.base = portIndex(port);
  }

  notify(): void {
    if (!this.open) throw new PlatformError('XEN_EEVTCHN', `event channel port ${this.port} is closed`);
    this.owner.checkBound(this.port);
    this.owner.send(this.base);
  }

  onEvent(handler: (() => void) | null): void {
    this.handler = handler;
  }

  mask(): void {
    this.owner.checkBound(this.port);
    Atomics.store(this.owner.table, this.base + PortWord.masked, 1);
  }

  unmask(): void {
    this.owner.checkBound(this.port);
    const t = this.owner.table;
    Atomics.store(t, this.base + PortWord.masked, 0);
    // Xen's evtchn_unmask: a port that went pending while masked raises its upcall now.
    if (Atomics.load(t, this.base + PortWord.pending) !== 0) this.owner.kick();
  }

  close(): void {
    if (!this.open) return;
    this.owner.checkBound(this.port);
    this.owner.unbind(this);
  }
}

/**
 * One listener handle in one domain: allocates and binds ports, and delivers
 * their events to the channels' handlers.
 */
export class SimEventChannels implements EventChannels {
  readonly table: Int32Array;
  private readonly dom: SimDomain;
  private readonly handleIdx: number;
  private readonly seqIdx: number;
  private readonly channels = new Map<number, SimEventChannel>();
  private closed = false;
  /** A restore dropped every binding of this handle: port operations are faults (see checkBound). */
  private dropped = false;
  private listening = false;
  private notifications = 0;
  private deliveries = 0;

  constructor(
    private readonly hv: SimHypervisor,
    readonly domid: number,
  ) {
    this.dom = hv.domain(domid);
    this.table = this.dom.evtchn;
    lockWord(this.table, LOCK);
    let h = 0;
    while (h < MAX_HANDLES && this.table[HANDLE_BASE + h * HANDLE_WORDS] !== 0) h++;
    if (h < MAX_HANDLES) this.table[HANDLE_BASE + h * HANDLE_WORDS] = 1;
    unlockWord(this.table, LOCK);
    if (h === MAX_HANDLES) throw new PlatformError('XEN_ENOSPC', `domain ${domid} has ${MAX_HANDLES} event-channel handles open`);
    this.handleIdx = h;
    this.seqIdx = handleSeqIndex(h);
  }

  allocUnbound(remoteDomid: number): EventChannel {
    this.checkOpen();
    this.hv.domain(remoteDomid);
    lockWord(this.table, LOCK);
    try {
      const port = this.freePort();
      this.setPort(this.table, port, PortState.unbound, remoteDomid, 0);
      return this.adopt(port);
    } finally {
      unlockWord(this.table, LOCK);
    }
  }

  bindInterdomain(remoteDomid: number, remotePort: number): EventChannel {
    this.checkOpen();
    const remote = this.hv.domain(remoteDomid);
    if (!Number.isInteger(remotePort) || remotePort <= 0 || remotePort >= NR_PORTS) {
      throw new PlatformError('XEN_EINVAL', `bad remote port ${remotePort}`);
    }
    // Both tables locked, lower domid first, so two binders never deadlock.
    const [first, second] = remote.domid < this.domid ? [remote.evtchn, this.table] : [this.table, remote.evtchn];
    lockWord(first, LOCK);
    if (second !== first) lockWord(second, LOCK);
    try {
      const r = portIndex(remotePort);
      const rt = remote.evtchn;
      if (rt[r + PortWord.state] !== PortState.unbound || rt[r + PortWord.remoteDom] !== this.domid) {
        throw new PlatformError('XEN_EEVTCHN', `port ${remotePort} of domain ${remoteDomid} is not unbound for domain ${this.domid}`);
      }
      const port = this.freePort();
      this.setPort(this.table, port, PortState.interdomain, remoteDomid, remotePort);
      rt[r + PortWord.state] = PortState.interdomain;
      rt[r + PortWord.remoteDom] = this.domid;
      rt[r + PortWord.remotePort] = port;
      const ch = this.adopt(port);
      // Notifications sent to the unbound end were dropped: assume one was.
      Atomics.store(this.table, portIndex(port) + PortWord.pending, 1);
      this.kick();
      return ch;
    } finally {
      if (second !== first) unlockWord(second, LOCK);
      unlockWord(first, LOCK);
    }
  }

  /** @internal notify(): sets the remote port pending and raises its owner's upcall on 0 → 1. */
  send(base: number): void {
    const t = this.table;
    const state = Atomics.load(t, base + PortWord.state);
    this.notifications++;
    this.dom.count(Counter.notifications);
    if (state !== PortState.interdomain) return; // unbound: dropped, as Xen drops it
    const remote = this.hv.find(Atomics.load(t, base + PortWord.remoteDom));
    if (remote === undefined) return;
    const rt = remote.evtchn;
    const r = portIndex(Atomics.load(t, base + PortWord.remotePort));
    if (Atomics.exchange(rt, r + PortWord.pending, 1) !== 0) return; // coalesced
    if (Atomics.load(rt, r + PortWord.masked) !== 0) return; // delivered on unmask
    const seq = handleSeqIndex(Atomics.load(rt, r + PortWord.owner));
    Atomics.add(rt, seq, 1);
    Atomics.notify(rt, seq);
  }

  /** @internal Raises this handle's own upcall (unmask, bind). */
  kick(): void {
    Atomics.add(this.table, this.seqIdx, 1);
    Atomics.notify(this.table, this.seqIdx);
  }

  /** @internal */
  unbind(ch: SimEventChannel): void {
    lockWord(this.table, LOCK);
    const b = portIndex(ch.port);
    const remoteDom = this.table[b + PortWord.remoteDom]!;
    const interdomain = this.table[b + PortWord.state] === PortState.interdomain;
    unlockWord(this.table, LOCK);
    const remote = interdomain ? this.hv.find(remoteDom) : undefined;
    const tables =
      remote === undefined || remote.evtchn === this.table
        ? [this.table]
        : remote.domid < this.domid
          ? [remote.evtchn, this.table]
          : [this.table, remote.evtchn];
    for (const t of tables) lockWord(t, LOCK);
    try {
      if (remote !== undefined && this.table[b + PortWord.state] === PortState.interdomain) {
        // Xen's evtchn_close: the other end goes back to waiting for us.
        const r = portIndex(this.table[b + PortWord.remotePort]!);
        remote.evtchn[r + PortWord.state] = PortState.unbound;
        remote.evtchn[r + PortWord.remoteDom] = this.domid;
        remote.evtchn[r + PortWord.remotePort] = 0;
      }
      this.setPort(this.table, ch.port, PortState.free, 0, 0);
    } finally {
      for (const t of tables.reverse()) unlockWord(t, LOCK);
    }
    ch.open = false;
    ch.handler = null;
    this.channels.delete(ch.port);
  }

  /**
   * Delivers what is pending on this handle's unmasked ports: clears each
   * pending bit, then calls the handler, so an event during the handler is not
   * lost. Returns how many handlers ran.
   */
  deliver(): number {
    let n = 0;
    for (const ch of this.channels.values()) {
      const b = portIndex(ch.port);
      if (Atomics.load(this.table, b + PortWord.masked) !== 0) continue;
      if (Atomics.exchange(this.table, b + PortWord.pending, 0) === 0) continue;
      n++;
      this.deliveries++;
      ch.handler?.();
    }
    return n;
  }

  /**
   * For a worker thread: blocks until an event arrives or `timeoutMs` passes,
   * then delivers. Returns how many handlers ran (0 on timeout or close).
   */
  waitForEvents(timeoutMs: number): number {
    const seq = Atomics.load(this.table, this.seqIdx);
    const n = this.deliver();
    if (n > 0 || this.closed) return n;
    Atomics.wait(this.table, this.seqIdx, seq, timeoutMs);
    return this.closed ? 0 : this.deliver();
  }

  /**
   * Starts delivering from the event loop (Atomics.waitAsync). Does not keep
   * the process alive by itself. Called for you by the platform.
   */
  listen(): void {
    if (this.listening || this.closed) return;
    this.listening = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      const seq = Atomics.load(this.table, this.seqIdx);
      this.deliver();
      const w = Atomics.waitAsync(this.table, this.seqIdx, seq);
      if (w.async) await w.value;
    }
  }

  stats(): EventChannelStats {
    return { notifications: this.notifications, deliveries: this.deliveries, openPorts: this.channels.size };
  }

  /**
   * @internal What a restore does to a userspace handle: every port it had
   * is freed in the domain's table (the kernel dropped the bindings), while
   * the handle and its channel objects live on. From then on an operation on
   * one of those ports is what crashes a real kernel: it is counted
   * (Counter.staleEvtchnOps) and refused.
   */
  dropBindings(): void {
    lockWord(this.table, LOCK);
    for (const port of this.channels.keys()) this.setPort(this.table, port, PortState.free, 0, 0);
    unlockWord(this.table, LOCK);
    this.dropped = true;
  }

  /** @internal Refuses (and counts) a port operation after dropBindings(). */
  checkBound(port: number): void {
    if (!this.dropped) return;
    this.dom.count(Counter.staleEvtchnOps);
    throw new PlatformError('XEN_EEVTCHN', `event channel port ${port} was dropped by a restore: an operation on it crashes a real kernel`);
  }

  abandon(): void {
    if (this.closed) return;
    for (const ch of this.channels.values()) {
      ch.open = false;
      ch.handler = null;
    }
    this.channels.clear();
    this.closed = true;
    this.kick(); // ends the listening loop; the handle's slot stays taken, as a real handle stays open
  }

  close(): void {
    if (this.closed) return;
    if (this.dropped) return this.abandon(); // nothing left to unbind, and touching a port would be the fault
    for (const ch of [...this.channels.values()]) ch.close();
    this.closed = true;
    this.kick(); // ends the listening loop
    lockWord(this.table, LOCK);
    this.table[HANDLE_BASE + this.handleIdx * HANDLE_WORDS] = 0;
    unlockWord(this.table, LOCK);
  }

  private adopt(port: number): SimEventChannel {
    const ch = new SimEventChannel(this, port);
    this.channels.set(port, ch);
    return ch;
  }

  private setPort(t: Int32Array, port: number, state: number, remoteDom: number, remotePort: number): void {
    const b = portIndex(port);
    t[b + PortWord.remoteDom] = remoteDom;
    t[b + PortWord.remotePort] = remotePort;
    t[b + PortWord.owner] = this.handleIdx;
    Atomics.store(t, b + PortWord.masked, 0);
    Atomics.store(t, b + PortWord.pending, 0);
    Atomics.store(t, b + PortWord.state, state);
  }

  /** Lowest free port; the table lock is held. */
  private freePort(): number {
    for (let p = 1; p < NR_PORTS; p++) {
      if (this.table[portIndex(p) + PortWord.state] === PortState.free) return p;
    }
    throw new PlatformError('XEN_ENOSPC', `domain ${this.domid} has no free event-channel port`);
  }

  private checkOpen(): void {
    if (this.closed) throw new PlatformError('XEN_CLOSED', 'event channels closed');
  }
}
