import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenstoreClient, type XenstoreClientOptions } from '../../src/xenbus/client.js';
import type { ByteStream } from '../../src/transport/byte_stream.js';
import { connectUnixSocket } from '../../src/transport/socket.js';
import { SimXenstored, type SimXenstoredOptions } from '../../src/sim/xenstored/server.js';
import { listenXenstored } from '../../src/sim/xenstored/daemon.js';
import { SimHypervisor } from '../../src/sim/host/hypervisor.js';
import { SimEventChannels } from '../../src/sim/host/evtchn.js';
import { SimGrantMapper, SimGrantSharer } from '../../src/sim/host/grants.js';
import { linkXenstoreRing } from '../../src/sim/host/xenstore_ring.js';

/** A client connected to a fresh simulated xenstored, over one kind of transport. */
export interface XsFixture {
  xenstored: SimXenstored;
  client: XenstoreClient;
  /** Another client for the same daemon and transport, as domain `domid`. */
  connect(domid?: number, opts?: XenstoreClientOptions): Promise<XenstoreClient>;
  close(): Promise<void>;
}

export type TransportKind = 'unix socket' | 'difficult pipe' | 'shared ring';

export const TRANSPORTS: TransportKind[] = ['unix socket', 'difficult pipe', 'shared ring'];

export function tempSocketPath(): { path: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'xs-'));
  return { path: join(dir, 'socket'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function xsFixture(kind: TransportKind, opts: XenstoreClientOptions = {}, sim: SimXenstoredOptions = {}): Promise<XsFixture> {
  const xenstored = new SimXenstored(sim);
  const clients: XenstoreClient[] = [];
  let open: (domid: number) => Promise<ByteStream>;
  let teardown = async (): Promise<void> => undefined;
  if (kind === 'unix socket') {
    const sock = tempSocketPath();
    const daemon = await listenXenstored(sock.path, xenstored);
    // Over the socket every connection is dom0; other domains come in through pipes.
    open = async (domid) => (domid === 0 ? connectUnixSocket(sock.path) : xenstored.connect({ domid }));
    teardown = async () => {
      await daemon.close();
      sock.cleanup();
    };
  } else if (kind === 'shared ring') {
    // Every connection is a domain's xenstore ring page plus an event channel,
    // served by xenstored in dom0, as on Xen (dom0's own clients get one too).
    const hv = new SimHypervisor();
    hv.createDomain({ domid: 0, pages: 64, grants: 64 });
    const dom0Evtchn = new SimEventChannels(hv, 0);
    dom0Evtchn.listen();
    const dom0Mapper = new SimGrantMapper(hv, 0);
    const perDomain = new Map<number, { grants: SimGrantSharer; evtchn: SimEventChannels }>();
    const links: Array<{ close(): void }> = [];
    open = async (domid) => {
      let d = perDomain.get(domid);
      if (d === undefined) {
        if (hv.find(domid) === undefined) hv.createDomain({ domid, pages: 64, grants: 64 });
        const evtchn = domid === 0 ? dom0Evtchn : new SimEventChannels(hv, domid);
        evtchn.listen();
        d = { grants: new SimGrantSharer(hv, domid), evtchn };
        perDomain.set(domid, d);
      }
      const link = linkXenstoreRing({
        xenstored,
        domid,
        guestGrants: d.grants,
        guestEvtchn: d.evtchn,
        dom0Mapper,
        dom0Evtchn,
      });
      links.push(link);
      return link.stream;
    };
    teardown = async () => {
      links.forEach((l) => l.close());
      for (const d of perDomain.values()) d.evtchn.close();
      dom0Evtchn.close();
    };
  } else {
    let seed = 7;
    open = async (domid) => xenstored.connect({ domid, pipe: { maxChunk: 7, writeCapacity: 64, seed: seed++ } });
  }
  const connect = async (domid = 0, o: XenstoreClientOptions = opts): Promise<XenstoreClient> => {
    const c = new XenstoreClient(await open(domid), o);
    clients.push(c);
    return c;
  };
  const client = await connect();
  return {
    xenstored,
    client,
    connect,
    close: async () => {
      clients.forEach((c) => c.close());
      xenstored.close();
      await teardown();
    },
  };
}

/** Resolves when `cond()` holds, polling; rejects after `ms`. */
export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A promise and its resolver. */
export function deferred<T = void>(): { promise: Promise<T>; resolve(v: T): void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
