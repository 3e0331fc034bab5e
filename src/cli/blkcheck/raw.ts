/**
 * A frontend with its safety taken off, for blkcheck: the same claim and
 * xenbus handshake as a BlockDevice, then nothing but a bare ring. A check
 * writes whatever request bytes it likes into a slot (a request the
 * protocol allows at an edge, or one it forbids), pushes, and sees what
 * the backend did: the responses it wrote, a change of its xenbus state,
 * or nothing.
 */
import { locateDevice, talkToBackend } from '../../blkfront/negotiate.js';
import { closeHandshake, resetFrontend, undoOpen } from '../../blkfront/frontend_state.js';
import { vdevName } from '../../blkfront/enumerate.js';
import { FrontRing } from '../../blkfront/ring.js';
import type { DeviceLocation, DiskInfo, RingSetup } from '../../blkfront/types.js';
import type { SharedPages } from '../../gnttab/types.js';
import type { XenPlatform } from '../../platform/types.js';
import type { VbdClaim } from '../../platform/ownership.js';
import { BLKIF_NATIVE_ABI } from '../../wire/blkif.js';
import { SRING_HEADER_SIZE, SringWord, loadIdx } from '../../wire/ring.js';
import { XenbusState } from '../../wire/xenbus_state.js';
import { readState } from '../../xenbus/device.js';
import { isXenError } from '../../errors.js';

/** One response as the ring held it. */
export interface RawResponse {
  id: number;
  operation: number;
  status: number;
}

/** What the backend did after a push: its responses, whether it left Connected, whether the ring broke. */
export interface Outcome {
  responses: RawResponse[];
  /** The backend's xenbus state when it left Connected (a disconnect), else null. */
  left: XenbusState | null;
  /** The ring itself was broken by the backend (rsp_prod past what was asked): the message. */
  ringError: string | null;
}

export interface RawOptions {
  ringPages?: number;
  queues?: number;
  persistent?: boolean;
  timeoutMs?: number;
}

export class RawConnection {
  readonly rings: FrontRing[] = [];
  private readonly setups: RingSetup[] = [];
  private readonly shared: SharedPages[] = [];
  private readonly got: RawResponse[][] = [];
  private readonly waiters: Array<() => void> = [];
  info!: DiskInfo;

  private constructor(
    readonly platform: XenPlatform,
    readonly loc: DeviceLocation,
    private readonly claim: VbdClaim,
    private readonly timeoutMs: number,
  ) {}

  static async open(platform: XenPlatform, vdev: number | string, o: RawOptions = {}): Promise<RawConnection> {
    const timeoutMs = o.timeoutMs ?? 10_000;
    const loc = await locateDevice(platform, vdev);
    const claim = await platform.vbds.claim(String(vdev), vdevName(loc.vdev).name);
    const c = new RawConnection(platform, loc, claim, timeoutMs);
    try {
      await resetFrontend(platform, loc);
      const wish = {
        queues: o.queues ?? 1,
        ringPages: o.ringPages ?? 1,
        maxIndirectSegments: 256,
        persistent: o.persistent ?? false,
        timeoutMs,
      };
      await talkToBackend(platform, loc, wish, (n) => {
        c.info = n.info;
        for (const [q, r] of n.rings.entries()) {
          c.setups.push(r);
          c.rings.push(new FrontRing(r.pages.bytes, BLKIF_NATIVE_ABI));
          c.got.push([]);
          r.channel.onEvent(() => c.take(q));
        }
      });
    } catch (err) {
      await undoOpen(platform, loc, timeoutMs, () => c.release(), claim);
      throw err;
    }
    return c;
  }

  get handle(): number {
    return this.loc.vdev & 0xffff;
  }

  /** Shares `n` fresh pages with the backend (released at close). */
  share(n: number, writable = true): SharedPages {
    const p = this.platform.grants.share(this.loc.backendId, n, writable);
    this.shared.push(p);
    return p;
  }

  /** Ends the grants of `pages` now (a grant the backend may no longer use). */
  unshare(pages: SharedPages): void {
    const i = this.shared.indexOf(pages);
    if (i >= 0) this.shared.splice(i, 1);
    this.platform.grants.unshare(pages);
  }

  /** The next free request slot of queue `q`: its view and offset, to write into. */
  slot(q = 0): { view: DataView; off: number } {
    const r = this.rings[q]!;
    return { view: r.view, off: r.requestOffset() };
  }

  /** Counts the slot written as a request (req_prod_pvt moves on); {@link push} publishes. */
  produced(q = 0): void {
    this.rings[q]!.produced();
  }

  /** Publishes what was produced and notifies the backend (always: a check must not depend on req_event). */
  push(q = 0): void {
    this.rings[q]!.push();
    this.setups[q]!.channel.notify();
  }

  /** The shared rsp_prod of queue `q` now. */
  rspProd(q = 0): number {
    const v = this.rings[q]!.view;
    return loadIdx(new Int32Array(v.buffer, v.byteOffset, SRING_HEADER_SIZE / 4), SringWord.rspProd);
  }

  /** Stops taking queue `q`'s responses as they come (a frontend that never consumes), or takes them again. */
  hold(on: boolean, q = 0): void {
    if (on) this.held.add(q);
    else {
      this.held.delete(q);
      this.take(q);
    }
  }
  private readonly held = new Set<number>();

  /** Notifies without anything new (a notification storm). */
  notify(q = 0): void {
    this.setups[q]!.channel.notify();
  }

  /** Moves the shared req_prod to `value` as a frontend may (even past the ring). */
  setReqProd(value: number, q = 0): void {
    const v = this.rings[q]!.view;
    Atomics.store(new Int32Array(v.buffer, v.byteOffset, SRING_HEADER_SIZE / 4), SringWord.reqProd, value | 0);
    this.setups[q]!.channel.notify();
  }

  private take(q: number): void {
    if (this.held.has(q)) return;
    try {
      this.rings[q]!.consume((idLo, _idHi, operation, status) => this.got[q]!.push({ id: idLo, operation, status }));
    } catch (err) {
      this.ringError = err instanceof Error ? err.message : String(err);
    }
    for (const w of this.waiters.splice(0)) w();
  }

  private ringError: string | null = null;

  /**
   * Waits until `count` responses came on queue `q`, the backend left
   * Connected, or `ms` passed; returns what happened and forgets the responses.
   */
  async outcome(count: number, q = 0, ms = 10_000): Promise<Outcome> {
    const deadline = Date.now() + ms;
    let left: XenbusState | null = null;
    while (this.got[q]!.length < count && this.ringError === null && Date.now() < deadline) {
      // Events arrive on this thread's loop; also look, in case one was coalesced away.
      this.take(q);
      if (this.got[q]!.length >= count) break;
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
      const s = await readState(this.platform.xenstore, this.loc.backend).catch(() => XenbusState.Unknown);
      if (s !== XenbusState.Connected) {
        left = s;
        break;
      }
    }
    const responses = this.got[q]!.splice(0);
    const ringError = this.ringError;
    this.ringError = null;
    return { responses, left, ringError };
  }

  /** Disconnects (the backend unmaps everything), ends every grant, releases the claim. */
  async close(): Promise<void> {
    try {
      await closeHandshake(this.platform, this.loc, true, this.timeoutMs).catch((err: unknown) => {
        if (!isXenError(err)) throw err;
      });
      await this.release();
    } finally {
      this.claim.release();
    }
  }

  private async release(): Promise<void> {
    for (const r of this.setups) {
      r.channel.onEvent(null);
      try {
        r.channel.close();
      } catch {
        // already closed
      }
      this.platform.grants.unshare(r.pages);
    }
    this.setups.length = 0;
    for (const p of this.shared.splice(0)) this.platform.grants.unshare(p);
    await Promise.resolve();
  }
}
