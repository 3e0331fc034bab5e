/**
 * A short tour on the simulated host: a toolstack creates a virtual disk's
 * xenstore entries, a backend in dom0 and the guest's frontend run the xenbus
 * handshake of a block device (PROTOCOL.md, "Connect sequence"). The guest
 * talks to xenstored over its shared ring page, shares its ring pages with
 * real grants, and opens real event channels; the backend maps those grants
 * and binds those ports, and both ends kick each other once. The xenstore
 * client's concurrency is measured on the way out.
 *
 *   npm run demo
 */
import { XenbusState, XenstoreClient, switchState, waitForState, xenbusStateName } from '../src/index.js';
import { createSimHost } from '../src/sim/index.js';

const DOMID = 1;
const VDEV = 51712; // xvda
const t0 = performance.now();
const log = (who: string, msg: string): void => {
  process.stdout.write(`[${(performance.now() - t0).toFixed(1).padStart(6)} ms] ${who.padEnd(9)} ${msg}\n`);
};

async function main(): Promise<void> {
  const host = await createSimHost({ guestDomid: DOMID, guestName: 'demo' });
  const { xenstored } = host;
  const dom0 = host.dom0.xenstore;
  const fe = `/local/domain/${DOMID}/device/vbd/${VDEV}`;
  const be = `/local/domain/0/backend/vbd/${DOMID}/${VDEV}`;

  // What `xl create` writes: both directories, each owned by its end, readable by the other.
  await dom0.transaction(async (tx) => {
    // The guest's home exists (createSimHost made it); permissions first: nodes created below inherit them.
    await tx.mkdir(be);
    await tx.setPerms(be, [{ perm: 'n', domid: 0 }, { perm: 'r', domid: DOMID }]);
    await tx.write(`${fe}/backend`, be);
    await tx.write(`${fe}/backend-id`, '0');
    await tx.write(`${fe}/virtual-device`, String(VDEV));
    await tx.write(`${fe}/state`, String(XenbusState.Initialising));
    await tx.write(`${be}/frontend`, fe);
    await tx.write(`${be}/frontend-id`, String(DOMID));
    await tx.write(`${be}/state`, String(XenbusState.Initialising));
  });
  log('toolstack', `vbd ${VDEV} for domain ${DOMID}: ${fe} <-> ${be}`);

  // The backend, in dom0: advertise features, wait for the frontend, connect.
  const backend = (async () => {
    const xs = new XenstoreClient(xenstored.connect({ domid: 0 }));
    await xs.transaction(async (tx) => {
      await tx.write(`${be}/feature-persistent`, '1');
      await tx.write(`${be}/feature-max-indirect-segments`, '256');
      await tx.write(`${be}/max-ring-page-order`, '4');
      await tx.write(`${be}/multi-queue-max-queues`, '2');
    });
    await switchState(xs, be, XenbusState.InitWait);
    log('backend', 'InitWait: persistent grants, 256 indirect segments, 16 ring pages, 2 queues offered');
    await waitForState(xs, fe, XenbusState.Initialised, { group: `backend:${VDEV}` });
    const keys = await xs.directory(fe);
    log('backend', `frontend Initialised; it wrote ${keys.filter((k) => !['backend', 'backend-id', 'virtual-device', 'state'].includes(k)).join(', ')}`);
    // Map every ring page the frontend granted and bind every queue's event channel.
    const nq = await xs.readInt(`${fe}/multi-queue-num-queues`);
    const pages = 1 << (await xs.readInt(`${fe}/ring-page-order`, { fallback: 0 }));
    for (let q = 0; q < nq; q++) {
      const maps = [];
      for (let p = 0; p < pages; p++) maps.push(host.dom0.mapper.map(DOMID, await xs.readInt(`${fe}/queue-${q}/ring-ref${p}`), true));
      const ch = host.dom0.evtchn.bindInterdomain(DOMID, await xs.readInt(`${fe}/queue-${q}/event-channel`));
      log('backend', `queue ${q}: mapped grants ${maps.map((m) => m.ref).join(',')} (page 0 says "${new TextDecoder().decode(maps[0]!.bytes.subarray(0, 14))}"), bound port ${ch.port}; kick`);
      ch.notify();
      for (const m of maps) host.dom0.mapper.unmap(m);
      ch.close();
    }
    await xs.transaction(async (tx) => {
      await tx.write(`${be}/sectors`, String(2n * 1024n * 1024n)); // 1 GiB in 512-byte sectors
      await tx.write(`${be}/info`, '0');
      await tx.write(`${be}/sector-size`, '512');
      await tx.write(`${be}/feature-flush-cache`, '1');
      await tx.write(`${be}/feature-discard`, '1');
    });
    await switchState(xs, be, XenbusState.Connected);
    log('backend', 'Connected');
    return xs;
  })();

  // The guest's frontend: its platform gives it xenstore (over the shared ring), grants and event channels.
  const platform = host.guest;
  const guest: XenstoreClient = platform.xenstore;
  const myDir = `device/vbd/${VDEV}`; // relative: resolved under /local/domain/1
  const backendPath = await guest.read(`${myDir}/backend`);
  await waitForState(guest, backendPath, XenbusState.InitWait, { group: `vbd:${VDEV}` });
  const order = await guest.readInt(`${backendPath}/max-ring-page-order`, { fallback: 0 });
  const queues = Math.min(2, await guest.readInt(`${backendPath}/multi-queue-max-queues`, { fallback: 1 }));
  const persistent = await guest.readBool(`${backendPath}/feature-persistent`);
  const ringPages = 1 << Math.min(order, 2);
  const kicks: Promise<void>[] = [];
  const rings = Array.from({ length: queues }, (_, q) => {
    const pages = platform.grants.share(0, ringPages, true);
    pages.bytes.set(new TextEncoder().encode(`ring of queue${q}`));
    const ch = platform.evtchn.allocUnbound(0);
    kicks.push(new Promise((resolve) => ch.onEvent(() => resolve())));
    return { pages, ch };
  });
  let attempts = 0;
  await guest.transaction(async (tx) => {
    attempts++;
    await tx.write(`${myDir}/ring-page-order`, String(Math.min(order, 2)));
    await tx.write(`${myDir}/multi-queue-num-queues`, String(queues));
    for (const [q, r] of rings.entries()) {
      for (const [p, ref] of r.pages.refs.entries()) await tx.write(`${myDir}/queue-${q}/ring-ref${p}`, String(ref));
      await tx.write(`${myDir}/queue-${q}/event-channel`, String(r.ch.port));
    }
    await tx.write(`${myDir}/protocol`, 'x86_64-abi');
    await tx.write(`${myDir}/feature-persistent`, persistent ? '1' : '0');
  });
  log('guest', `backend InitWait; ${queues} queues x ${ringPages} granted ring pages and an event channel each, written in one transaction (${attempts} attempt)`);
  await switchState(guest, myDir, XenbusState.Initialised);
  const st = await waitForState(guest, backendPath, XenbusState.Connected, { group: `vbd:${VDEV}` });
  const sectors = await guest.readBigInt(`${backendPath}/sectors`);
  const sectorSize = await guest.readInt(`${backendPath}/sector-size`);
  await Promise.all(kicks);
  await switchState(guest, myDir, XenbusState.Connected);
  log('guest', `every queue's event channel was kicked by the backend`);
  log('guest', `backend ${xenbusStateName(st)}: ${sectors} sectors of 512 bytes (${Number(sectors) / 2048} MiB), sector-size ${sectorSize}; Connected`);

  // The client keeps many requests in flight: the same reads, one at a time and 64 at once.
  const n = 5000;
  const key = `${myDir}/protocol`;
  let t = performance.now();
  for (let i = 0; i < n; i++) await guest.read(key);
  const serial = n / ((performance.now() - t) / 1000);
  t = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (next++ < n) await guest.read(key);
  }));
  const conc = n / ((performance.now() - t) / 1000);
  log('xenstore', `${n} reads over the shared ring: ${Math.round(serial)} ops/s one at a time, ${Math.round(conc)} ops/s with 64 in flight (x${(conc / serial).toFixed(1)}, in-process)`);
  const s = guest.stats();
  log('xenstore', `guest connection: ${s.requestsSent} requests, ${s.watchEvents} watch events, max ${s.maxInFlight} in flight`);

  (await backend).close();
  const g = host.grantCounters();
  log('host', `dom0 grant maps ${g.maps}, unmaps ${g.unmaps}, refused ${g.mapFailures}; xenstored served ${xenstored.counters.requests} requests`);
  for (const r of rings) {
    platform.grants.unshare(r.pages);
    r.ch.close();
  }
  await host.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
