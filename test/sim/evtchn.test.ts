import { hypervisor } from '../helpers/hv.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SimHypervisor } from '../../src/sim/host/hypervisor.js';
import { SimEventChannels } from '../../src/sim/host/evtchn.js';
import { NR_PORTS } from '../../src/sim/host/evtchn_layout.js';
import { until } from '../helpers/xs.js';

let hv: SimHypervisor;
let guest: SimEventChannels;
let dom0: SimEventChannels;

beforeEach(() => {
  hv = hypervisor([4, 16], [4, 16]);
  guest = new SimEventChannels(hv, 1);
  dom0 = new SimEventChannels(hv, 0);
  guest.listen();
  dom0.listen();
});

afterEach(() => {
  guest.close();
  dom0.close();
});

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

function bound(): { g: ReturnType<SimEventChannels['allocUnbound']>; d: ReturnType<SimEventChannels['allocUnbound']> } {
  const g = guest.allocUnbound(0);
  const d = dom0.bindInterdomain(1, g.port);
  return { g, d };
}

describe('simulated event channels', () => {
  it('delivers asynchronously, never inside notify()', async () => {
    const { g, d } = bound();
    await settle();
    let calls = 0;
    g.onEvent(() => calls++);
    d.notify();
    expect(calls).toBe(0);
    await until(() => calls === 1);
  });

  it('coalesces notifications while pending: ten sends, one delivery', async () => {
    const { g, d } = bound();
    await settle();
    let calls = 0;
    g.onEvent(() => calls++);
    for (let i = 0; i < 10; i++) d.notify();
    await until(() => calls >= 1);
    await settle();
    expect(calls).toBe(1);
    expect(dom0.stats().notifications).toBe(10);
    // Pending is cleared before the handler runs, so a later send is a new event.
    d.notify();
    await until(() => calls === 2);
  });

  it('holds events while masked and delivers one on unmask', async () => {
    const { g, d } = bound();
    await settle();
    let calls = 0;
    g.onEvent(() => calls++);
    g.mask();
    d.notify();
    d.notify();
    await settle();
    expect(calls).toBe(0);
    g.unmask();
    await until(() => calls === 1);
    await settle();
    expect(calls).toBe(1);
    g.unmask(); // nothing pending: nothing delivered
    await settle();
    expect(calls).toBe(1);
  });

  it("marks the binder's port pending, since sends to an unbound port are dropped", async () => {
    const g = guest.allocUnbound(0);
    g.notify(); // nobody bound yet: dropped
    let calls = 0;
    const d = dom0.bindInterdomain(1, g.port);
    d.onEvent(() => calls++);
    await until(() => calls === 1);
  });

  it('only the named domain may bind, and only once', () => {
    const g = guest.allocUnbound(0);
    const other = new SimEventChannels(hv, 1);
    expect(() => other.bindInterdomain(1, g.port)).toThrow(expect.objectContaining({ code: 'XEN_EEVTCHN' }));
    dom0.bindInterdomain(1, g.port);
    expect(() => dom0.bindInterdomain(1, g.port)).toThrow(expect.objectContaining({ code: 'XEN_EEVTCHN' }));
    expect(() => dom0.bindInterdomain(1, 0)).toThrow(expect.objectContaining({ code: 'XEN_EINVAL' }));
    expect(() => dom0.bindInterdomain(7, 1)).toThrow(expect.objectContaining({ code: 'XEN_EINVAL' }));
    other.close();
  });

  it('closing one end leaves the other unbound: sends are dropped, and it can be bound again', async () => {
    const { g, d } = bound();
    await settle();
    let calls = 0;
    g.onEvent(() => calls++);
    d.close();
    expect(() => d.notify()).toThrow(expect.objectContaining({ code: 'XEN_EEVTCHN' }));
    g.notify(); // to nobody
    const again = dom0.bindInterdomain(1, g.port);
    again.notify();
    await until(() => calls === 1);
  });

  it('routes each port to the handle that owns it, across handles of one domain', async () => {
    const second = new SimEventChannels(hv, 0);
    second.listen();
    const a = guest.allocUnbound(0);
    const b = guest.allocUnbound(0);
    const da = dom0.bindInterdomain(1, a.port);
    const db = second.bindInterdomain(1, b.port);
    await settle();
    const got: string[] = [];
    da.onEvent(() => got.push('first handle'));
    db.onEvent(() => got.push('second handle'));
    b.notify();
    await until(() => got.length === 1);
    expect(got).toEqual(['second handle']);
    expect(dom0.stats().deliveries).toBe(1); // the bind event only
    second.close();
  });

  it('runs out of ports with XEN_ENOSPC', () => {
    for (let i = 1; i < NR_PORTS; i++) guest.allocUnbound(0);
    expect(() => guest.allocUnbound(0)).toThrow(expect.objectContaining({ code: 'XEN_ENOSPC' }));
    expect(guest.stats().openPorts).toBe(NR_PORTS - 1);
  });

  it('after close, nothing more is delivered or allocated', async () => {
    const { g, d } = bound();
    let calls = 0;
    g.onEvent(() => calls++);
    guest.close();
    d.notify();
    await settle();
    expect(calls).toBe(0);
    expect(() => guest.allocUnbound(0)).toThrow(expect.objectContaining({ code: 'XEN_CLOSED' }));
  });
});
