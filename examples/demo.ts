/**
 * A short tour on the simulated host: a toolstack creates a virtual disk's
 * xenstore entries, a backend and a guest frontend run the xenbus handshake
 * of a block device (PROTOCOL.md, "Connect sequence") through our xenstore
 * client, and the client's concurrency is measured on the way out.
 *
 * Grant references and event channels come with the platform layer; here the
 * frontend publishes the keys with illustrative values, as the handshake is
 * what this shows.
 *
 *   npm run demo
 */
import { XenbusState, XenstoreClient, switchState, waitForState, xenbusStateName } from '../src/index.js';
import { SimXenstored } from '../src/sim/index.js';

const DOMID = 1;
const VDEV = 51712; // xvda
const t0 = performance.now();
const log = (who: string, msg: string): void => {
  process.stdout.write(`[${(performance.now() - t0).toFixed(1).padStart(6)} ms] ${who.padEnd(9)} ${msg}\n`);
};

async function main(): Promise<void> {
  const xenstored = new SimXenstored();
  const dom0 = new XenstoreClient(xenstored.connect({ domid: 0 }));
  const fe = `/local/domain/${DOMID}/device/vbd/${VDEV}`;
  const be = `/local/domain/0/backend/vbd/${DOMID}/${VDEV}`;

  // What `xl create` writes: both directories, each owned by its end, readable by the other.
  await dom0.transaction(async (tx) => {
    await tx.mkdir(`/local/domain/${DOMID}`);
    await tx.setPerms(`/local/domain/${DOMID}`, [{ perm: 'n', domid: DOMID }, { perm: 'r', domid: 0 }]);
    // Permissions first: nodes created below inherit them.
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
  xenstored.introduceDomain(DOMID);
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

  // The guest's frontend: sees only its own domain's view of xenstore.
  const guest = new XenstoreClient(xenstored.connect({ domid: DOMID }));
  const myDir = `device/vbd/${VDEV}`; // relative: resolved under /local/domain/1
  const backendPath = await guest.read(`${myDir}/backend`);
  await waitForState(guest, backendPath, XenbusState.InitWait, { group: `vbd:${VDEV}` });
  const order = await guest.readInt(`${backendPath}/max-ring-page-order`, { fallback: 0 });
  const queues = Math.min(2, await guest.readInt(`${backendPath}/multi-queue-max-queues`, { fallback: 1 }));
  const persistent = await guest.readBool(`${backendPath}/feature-persistent`);
  let attempts = 0;
  await guest.transaction(async (tx) => {
    attempts++;
    await tx.write(`${myDir}/ring-page-order`, String(Math.min(order, 2)));
    await tx.write(`${myDir}/multi-queue-num-queues`, String(queues));
    for (let q = 0; q < queues; q++) {
      for (let p = 0; p < 1 << Math.min(order, 2); p++) await tx.write(`${myDir}/queue-${q}/ring-ref${p}`, String(8 + q * 4 + p));
      await tx.write(`${myDir}/queue-${q}/event-channel`, String(5 + q));
    }
    await tx.write(`${myDir}/protocol`, 'x86_64-abi');
    await tx.write(`${myDir}/feature-persistent`, persistent ? '1' : '0');
  });
  log('guest', `backend InitWait; ${queues} queues x ${1 << Math.min(order, 2)} ring pages written in one transaction (${attempts} attempt)`);
  await switchState(guest, myDir, XenbusState.Initialised);
  const st = await waitForState(guest, backendPath, XenbusState.Connected, { group: `vbd:${VDEV}` });
  const sectors = await guest.readBigInt(`${backendPath}/sectors`);
  const sectorSize = await guest.readInt(`${backendPath}/sector-size`);
  await switchState(guest, myDir, XenbusState.Connected);
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
  log('xenstore', `${n} reads: ${Math.round(serial)} ops/s one at a time, ${Math.round(conc)} ops/s with 64 in flight (x${(conc / serial).toFixed(1)}, in-process)`);
  const s = guest.stats();
  log('xenstore', `guest connection: ${s.requestsSent} requests, ${s.watchEvents} watch events, max ${s.maxInFlight} in flight`);

  (await backend).close();
  guest.close();
  dom0.close();
  xenstored.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
