import { SimHypervisor } from '../../src/sim/host/hypervisor.js';

/** A hypervisor with dom0 and a guest (domid 1), and any more domains, each `[pages, grant entries]`. */
export function hypervisor(dom0: [number, number], guest: [number, number], ...more: Array<[number, number]>): SimHypervisor {
  const hv = new SimHypervisor();
  for (const [domid, [pages, grants]] of [dom0, guest, ...more].entries()) hv.createDomain({ domid, pages, grants });
  return hv;
}
