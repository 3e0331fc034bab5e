/** Watches: initial events, dispatch groups, the iterator form, and the xenbus state helpers. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WatchEvent } from '../../src/xenbus/client.js';
import { readState, switchState, waitForState } from '../../src/xenbus/device.js';
import { XenbusState } from '../../src/wire/xenbus_state.js';
import { TRANSPORTS, deferred, until, xsFixture, type XsFixture } from '../helpers/xs.js';

describe.each(TRANSPORTS)('watches over %s', (kind) => {
  let fx: XsFixture;
  beforeEach(async () => {
    fx = await xsFixture(kind);
  });
  afterEach(() => fx.close());

  it('delivers the registration event, then changes at or below the path only', async () => {
    const seen: string[] = [];
    const w = await fx.client.watch('/dev/a', (e) => void seen.push(e.path));
    await until(() => seen.length === 1);
    expect(seen).toEqual(['/dev/a']);
    await fx.client.write('/dev/a/state', '1');
    await fx.client.write('/dev/ab', 'sibling, not below');
    await fx.client.write('/dev/a', 'self');
    await until(() => seen.length >= 3);
    expect(seen).toEqual(['/dev/a', '/dev/a/state', '/dev/a']);
    await w.unwatch();
    await fx.client.write('/dev/a/state', '2');
    await fx.client.read('/dev/a/state'); // a round trip after the write: any event would be here by now
    expect(seen.length).toBe(3);
  });

  it('fires when a parent of the watched path is removed, naming the watched path', async () => {
    const seen: string[] = [];
    await fx.client.write('/r/x/y', '1');
    await fx.client.watch('/r/x/y', (e) => void seen.push(e.path));
    await until(() => seen.length === 1);
    await fx.client.rm('/r');
    await until(() => seen.length === 2);
    expect(seen[1]).toBe('/r/x/y');
  });

  it('keeps other groups and plain requests flowing while one callback stalls', async () => {
    const gate = deferred();
    const stalled: string[] = [];
    const flowing: string[] = [];
    await fx.client.watch(
      '/slow',
      async (e) => {
        stalled.push(e.path);
        await gate.promise; // a callback that does not return
      },
      { group: 'dev-slow' },
    );
    await fx.client.watch('/fast', (e) => void flowing.push(e.path), { group: 'dev-fast' });
    await until(() => stalled.length === 1 && flowing.length === 1);

    for (let i = 0; i < 20; i++) {
      await fx.client.write(`/slow/k${i}`, 'x');
      await fx.client.write(`/fast/k${i}`, 'x');
    }
    // Requests still answer and the other group got every event, in order.
    expect(await fx.client.read('/fast/k19')).toBe('x');
    await until(() => flowing.length === 21);
    expect(flowing.slice(1)).toEqual(Array.from({ length: 20 }, (_, i) => `/fast/k${i}`));
    // The stalled group is still on its first callback, with the rest queued behind it.
    expect(stalled.length).toBe(1);
    expect(fx.client.watchBacklog()['dev-slow']).toBe(20);

    gate.resolve();
    await until(() => stalled.length === 21);
    expect(stalled.slice(1)).toEqual(Array.from({ length: 20 }, (_, i) => `/slow/k${i}`));
  });

  it('runs one group serially: a callback never overlaps the previous one', async () => {
    let running = 0;
    let maxRunning = 0;
    let count = 0;
    await fx.client.watch('/serial', async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 1));
      running--;
      count++;
    });
    await Promise.all(Array.from({ length: 10 }, (_, i) => fx.client.write(`/serial/${i}`, 'x')));
    await until(() => count === 11);
    expect(maxRunning).toBe(1);
  });

  it('reports a failing callback and keeps delivering', async () => {
    const failures: [unknown, string][] = [];
    const xs = await fx.connect(0, { onCallbackError: (err, group) => void failures.push([err, group]) });
    const seen: WatchEvent[] = [];
    await xs.watch(
      '/boom',
      (e) => {
        seen.push(e);
        if (e.path === '/boom/bad') throw new Error('callback bug');
      },
      { group: 'g1' },
    );
    await xs.write('/boom/bad', '1');
    await xs.write('/boom/good', '1');
    await until(() => seen.length === 3);
    expect(failures.length).toBe(1);
    expect(failures[0]![1]).toBe('g1');
    expect((failures[0]![0] as Error).message).toBe('callback bug');
  });

  it('offers an async-iterator form that unwatches on break', async () => {
    const it = fx.client.watchEvents('/iter');
    await it.ready;
    const got: string[] = [];
    const writer = (async () => {
      await fx.client.write('/iter/a', '1');
      await fx.client.write('/iter/b', '1');
    })();
    for await (const e of it) {
      got.push(e.path);
      if (got.length === 3) break;
    }
    await writer;
    expect(got).toEqual(['/iter', '/iter/a', '/iter/b']);
    const sent = fx.xenstored.stats().watchEventsSent;
    await fx.client.write('/iter/c', '1');
    await fx.client.read('/iter/c');
    expect(fx.xenstored.stats().watchEventsSent).toBe(sent);
  });

  it('ends the iterator with the connection error when the connection closes', async () => {
    const xs = await fx.connect();
    const it = xs.watchEvents('/gone');
    await it.ready;
    expect((await it.next()).value?.path).toBe('/gone');
    const next = it.next();
    xs.close();
    await expect(next).rejects.toMatchObject({ code: 'XS_CLOSED' });
  });

  it('reports relative paths to a relative watch', async () => {
    await fx.client.mkdir('/local/domain/3');
    await fx.client.setPerms('/local/domain/3', [{ perm: 'n', domid: 3 }]);
    const guest = await fx.connect(3);
    const seen: string[] = [];
    await guest.watch('device', (e) => void seen.push(e.path));
    await fx.client.write('/local/domain/3/device/vbd/51712/state', '1');
    await until(() => seen.includes('device/vbd/51712/state'));
    expect(seen[0]).toBe('device');
  });

  it('does not tell a domain about nodes it cannot read', async () => {
    await fx.client.mkdir('/local/domain/4');
    await fx.client.setPerms('/local/domain/4', [{ perm: 'n', domid: 4 }]);
    const guest = await fx.connect(4);
    const seen: string[] = [];
    await guest.watch('/', (e) => void seen.push(e.path));
    await fx.client.write('/private', 'x');
    await fx.client.write('/local/domain/4/mine', 'x');
    await until(() => seen.includes('/local/domain/4/mine'));
    expect(seen).not.toContain('/private');
  });

  it('delivers @introduceDomain and @releaseDomain', async () => {
    const seen: string[] = [];
    await fx.client.watch('@introduceDomain', (e) => void seen.push(e.path));
    await fx.client.watch('@releaseDomain', (e) => void seen.push(e.path));
    await until(() => seen.length === 2);
    fx.xenstored.introduceDomain(9);
    await until(() => seen.length === 3);
    fx.xenstored.releaseDomain(9);
    await until(() => seen.length === 4);
    expect(seen.slice(2)).toEqual(['@introduceDomain', '@releaseDomain']);
  });
});

describe.each(TRANSPORTS)('xenbus state helpers over %s', (kind) => {
  let fx: XsFixture;
  beforeEach(async () => {
    fx = await xsFixture(kind);
  });
  afterEach(() => fx.close());

  const be = '/local/domain/0/backend/vbd/1/51712';

  it('waits for the other end to reach a state, seeing every step', async () => {
    expect(await readState(fx.client, be)).toBe(XenbusState.Unknown);
    const waiting = waitForState(fx.client, be, XenbusState.Connected);
    const backend = await fx.connect();
    for (const s of [XenbusState.Initialising, XenbusState.InitWait, XenbusState.Connected]) {
      await switchState(backend, be, s);
    }
    expect(await waiting).toBe(XenbusState.Connected);
    expect(await readState(fx.client, be)).toBe(XenbusState.Connected);
  });

  it('returns at once when the state was reached before the call', async () => {
    await switchState(fx.client, be, XenbusState.InitWait);
    expect(await waitForState(fx.client, be, [XenbusState.InitWait, XenbusState.Initialised])).toBe(XenbusState.InitWait);
  });

  it('accepts a predicate, and cleans its watch up afterwards', async () => {
    const before = fx.xenstored.stats().watchEventsSent;
    const w = waitForState(fx.client, be, (s) => s >= XenbusState.Closing);
    await switchState(fx.client, be, XenbusState.Closed);
    expect(await w).toBe(XenbusState.Closed);
    await until(() => fx.xenstored.stats().watchEventsSent >= before + 2);
    const after = fx.xenstored.stats().watchEventsSent;
    await switchState(fx.client, be, XenbusState.Connected);
    await fx.client.read(`${be}/state`);
    expect(fx.xenstored.stats().watchEventsSent).toBe(after);
  });

  it('gives XS_TIMEOUT and XS_ABORTED rather than waiting for ever', async () => {
    await expect(waitForState(fx.client, be, XenbusState.Connected, { timeoutMs: 30 })).rejects.toMatchObject({ code: 'XS_TIMEOUT' });
    const ac = new AbortController();
    const w = waitForState(fx.client, be, XenbusState.Connected, { signal: ac.signal });
    setTimeout(() => ac.abort(), 10);
    await expect(w).rejects.toMatchObject({ code: 'XS_ABORTED' });
  });

  it('leaves no close listener behind once a wait or an iterator is done', async () => {
    const listeners = (): number => (Reflect.get(fx.client, 'closeListeners') as Set<unknown>).size;
    for (let i = 0; i < 20; i++) {
      await switchState(fx.client, be, XenbusState.InitWait);
      await waitForState(fx.client, be, XenbusState.InitWait);
      await expect(waitForState(fx.client, be, XenbusState.Connected, { timeoutMs: 5 })).rejects.toMatchObject({ code: 'XS_TIMEOUT' });
    }
    const it = fx.client.watchEvents('/listeners');
    await it.ready;
    expect(listeners()).toBe(1);
    await it.return();
    expect(listeners()).toBe(0);
  });

  it('calls close listeners once, not the removed ones, and at once after the end', async () => {
    const xs = await fx.connect();
    const calls: string[] = [];
    xs.onClose((e) => void calls.push(`a:${e.code}`));
    const off = xs.onClose(() => void calls.push('removed'));
    off();
    xs.close();
    xs.close();
    expect(calls).toEqual(['a:XS_CLOSED']);
    xs.onClose((e) => void calls.push(`late:${e.code}`));
    await until(() => calls.length === 2);
    expect(calls[1]).toBe('late:XS_CLOSED');
  });

  it('rejects a state value that is not a xenbus state', async () => {
    await fx.client.write(`${be}/state`, 'banana');
    await expect(readState(fx.client, be)).rejects.toMatchObject({ code: 'XS_EINVAL' });
  });
});
