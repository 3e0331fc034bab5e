/**
 * Worker-thread entry of one simulated blkback queue: joins the simulated
 * host, maps the ring, binds the event channel, and serves until told to
 * stop through the control block. It blocks in the event-channel wait, as a
 * blkback kthread sleeps, so a served request costs no event-loop turn.
 *
 * Messages to the controller: {type:'ready'}, {type:'broken', reason},
 * {type:'error', message}, {type:'stopped'}.
 */
import { PlatformError } from '../../errors.js';
import { parentPort, workerData } from 'node:worker_threads';
import { blkifAbiByProtocol } from '../../wire/blkif.js';
import { SimHypervisor, type SimHostHandle } from '../host/hypervisor.js';
import { SimEventChannels } from '../host/evtchn.js';
import { SimGrantMapper, type GrantMapping } from '../host/grants.js';
import { openDisk, type DiskSpec } from './disk.js';
import { Ctl, QStat, QUEUE_BASE, QUEUE_WORDS, WORKER_POLL_MS } from './control.js';
import { QueueServer, type QueuePolicy } from './server.js';

/** What the controller passes to each queue's worker. */
export interface QueueWorkerData {
  handle: SimHostHandle;
  backendDomid: number;
  frontendDomid: number;
  queue: number;
  ringRefs: number[];
  port: number;
  protocol: string;
  ctl: SharedArrayBuffer;
  disk: DiskSpec;
  policy: QueuePolicy;
}

function run(d: QueueWorkerData): void {
  const post = (m: object): void => parentPort!.postMessage(m);
  const ctl = new Int32Array(d.ctl);
  const hv = new SimHypervisor(d.handle);
  const mapper = new SimGrantMapper(hv, d.backendDomid);
  const evtchn = new SimEventChannels(hv, d.backendDomid);
  const abi = blkifAbiByProtocol(d.protocol);
  const ring: GrantMapping[] = [];
  let server: QueueServer | undefined;
  try {
    if (abi === undefined) throw new PlatformError('XEN_EINVAL', `unknown protocol "${d.protocol}"`);
    for (const ref of d.ringRefs) ring.push(mapper.map(d.frontendDomid, ref, true));
    const channel = evtchn.bindInterdomain(d.frontendDomid, d.port);
    channel.onEvent(() => undefined); // the wait below is the handler
    server = new QueueServer({
      abi,
      domid: d.frontendDomid,
      ring,
      channel,
      mapper,
      disk: openDisk(d.disk),
      ctl,
      queue: d.queue,
      policy: d.policy,
    });
  } catch (err) {
    for (const m of ring) mapper.unmap(m);
    evtchn.close();
    post({ type: 'error', message: err instanceof Error ? err.message : String(err) });
    return;
  }
  post({ type: 'ready' });
  const wakeups = QUEUE_BASE + d.queue * QUEUE_WORDS + QStat.wakeups;
  let reported = false;
  while (Atomics.load(ctl, Ctl.stop) === 0) {
    const did = server.serve();
    if (server.broken !== null && !reported) {
      reported = true;
      post({ type: 'broken', reason: server.broken });
    }
    if (!did && evtchn.waitForEvents(WORKER_POLL_MS) > 0) Atomics.add(ctl, wakeups, 1);
  }
  server.close();
  evtchn.close();
  post({ type: 'stopped' });
}

run(workerData as QueueWorkerData);
