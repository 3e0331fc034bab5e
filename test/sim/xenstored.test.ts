/** The simulated xenstored's semantics, checked at the wire. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../../src/xenbus/client.js';
import { SimXenstored } from '../../src/sim/xenstored/server.js';
import { EVENT_BACKLOG_BYTES, REPLY_BACKLOG_BYTES } from '../../src/sim/xenstored/connection.js';
import { createMemoryPipe } from '../../src/transport/memory.js';
import { XsFrameParser } from '../../src/wire/xs_parser.js';
import {
  XENSTORE_ABS_PATH_MAX,
  XENSTORE_PAYLOAD_MAX,
  XENSTORE_REL_PATH_MAX,
  XsType,
  encodeHeader,
  joinPayload,
  payloadString,
  splitPayload,
} from '../../src/wire/xs_wire.js';
import { until } from '../helpers/xs.js';

let sim: SimXenstored;
let dom0: XenstoreClient;
const text = (b: Uint8Array): string => payloadString(b);

beforeEach(() => {
  sim = new SimXenstored();
  dom0 = new XenstoreClient(sim.connect());
});
afterEach(() => sim.close());

describe('limits', () => {
  it('drops a connection that sends a frame over XENSTORE_PAYLOAD_MAX, and only that one', async () => {
    const stream = sim.connect();
    let closed = false;
    const replies = new XsFrameParser();
    stream.start({ data: (c) => replies.push(c), writable: () => undefined, closed: () => void (closed = true) });
    const hdr = new Uint8Array(16);
    encodeHeader(hdr, 0, { type: XsType.Write, reqId: 1, txId: 0, len: XENSTORE_PAYLOAD_MAX + 1 });
    stream.write(hdr);
    await until(() => closed);
    expect(replies.next().kind).toBe('need'); // no reply was sent
    expect(sim.stats().droppedConnections).toBe(1);
    await dom0.write('/still', 'fine');
  });

  it('answers EINVAL for paths too long or malformed', async () => {
    await expect(dom0.write(`/${'a'.repeat(XENSTORE_ABS_PATH_MAX)}`, '')).rejects.toMatchObject({ code: 'XS_EINVAL' });
    await dom0.write(`/${'a'.repeat(XENSTORE_ABS_PATH_MAX - 1)}`, 'max');
    await expect(dom0.write('a'.repeat(XENSTORE_REL_PATH_MAX + 1), '')).rejects.toMatchObject({ code: 'XS_EINVAL' });
    for (const bad of ['/a//b', '/a/', '/a b', '/a*', '']) {
      await expect(dom0.write(bad, 'x'), bad).rejects.toMatchObject({ code: 'XS_EINVAL' });
    }
  });

  it('answers EINVAL for a type it does not serve and keeps the connection', async () => {
    await expect(dom0.request(20, 0, joinPayload(['/']))).rejects.toMatchObject({ code: 'XS_EINVAL' });
    await expect(dom0.request(XsType.WatchEvent, 0, joinPayload(['/', 'x']))).rejects.toMatchObject({ code: 'XS_EINVAL' });
    await dom0.write('/ok', '1');
  });

  it('enforces the watch quota and refuses duplicate watches', async () => {
    const small = new SimXenstored({ maxWatches: 3 });
    const xs = new XenstoreClient(small.connect());
    for (let i = 0; i < 3; i++) await xs.request(XsType.Watch, 0, joinPayload([`/w${i}`, 'tok']));
    await expect(xs.request(XsType.Watch, 0, joinPayload(['/w9', 'tok']))).rejects.toMatchObject({ code: 'XS_E2BIG' });
    await expect(xs.request(XsType.Watch, 0, joinPayload(['/w0', 'tok']))).rejects.toMatchObject({ code: 'XS_EEXIST' });
    await expect(xs.request(XsType.Unwatch, 0, joinPayload(['/nope', 'tok']))).rejects.toMatchObject({ code: 'XS_ENOENT' });
    await xs.request(XsType.ResetWatches, 0, joinPayload(['']));
    await xs.request(XsType.Watch, 0, joinPayload(['/w9', 'tok']));
    small.close();
  });
});

describe('faults inside the daemon', () => {
  it('answer EIO for that request, are logged, and leave the daemon serving', async () => {
    const lines: string[] = [];
    const faulty = new SimXenstored({ log: (l) => void lines.push(l) });
    const xs = new XenstoreClient(faulty.connect());
    const write = faulty.tree.write.bind(faulty.tree);
    faulty.tree.write = () => {
      throw new TypeError('store bug');
    };
    await expect(xs.write('/x', '1')).rejects.toMatchObject({ code: 'XS_EIO' });
    expect(lines.some((l) => l.includes('store bug'))).toBe(true);
    faulty.tree.write = write;
    await xs.write('/x', '1');
    expect(await xs.read('/x')).toBe('1');
    faulty.close();
  });
});

describe('nodes', () => {
  it('removes recursively and follows RM rules for absent nodes', async () => {
    await dom0.write('/a/b/c', '1');
    await dom0.rm('/a/b/none'); // absent, parent exists: fine
    await expect(dom0.rm('/a/x/none')).rejects.toMatchObject({ code: 'XS_ENOENT' });
    await expect(dom0.rm('/')).rejects.toMatchObject({ code: 'XS_EINVAL' });
    await dom0.rm('/a/b');
    expect(await dom0.directory('/a')).toEqual([]);
    expect(await dom0.exists('/a/b/c')).toBe(false);
  });

  it("gives new nodes their parent's permissions and a guest ownership of what it creates", async () => {
    await dom0.mkdir('/local/domain/6');
    await dom0.setPerms('/local/domain/6', [
      { perm: 'n', domid: 6 },
      { perm: 'r', domid: 0 },
    ]);
    await dom0.write('/local/domain/6/by-dom0', 'x');
    expect(await dom0.getPerms('/local/domain/6/by-dom0')).toEqual([
      { perm: 'n', domid: 6 },
      { perm: 'r', domid: 0 },
    ]);
    await dom0.mkdir('/shared');
    await dom0.setPerms('/shared', [
      { perm: 'n', domid: 0 },
      { perm: 'b', domid: 6 },
    ]);
    const guest = new XenstoreClient(sim.connect({ domid: 6 }));
    await guest.write('/shared/from-guest', 'y');
    expect((await dom0.getPerms('/shared/from-guest'))[0]).toEqual({ perm: 'n', domid: 6 });
    await expect(guest.write('/elsewhere', 'z')).rejects.toMatchObject({ code: 'XS_EACCES' });
  });

  it('serves DIRECTORY_PART in the documented format', async () => {
    const names = Array.from({ length: 400 }, (_, i) => `n${String(i).padStart(20, '0')}`);
    for (const n of names) await dom0.write(`/dp/${n}`, '');
    const full = joinPayload(names);
    let off = 0;
    const parts: Uint8Array[] = [];
    let gen: string | undefined;
    for (;;) {
      const r = await dom0.request(XsType.DirectoryPart, 0, joinPayload(['/dp', String(off)]));
      expect(r.length).toBeLessThanOrEqual(XENSTORE_PAYLOAD_MAX);
      const g = text(r.subarray(0, r.indexOf(0)));
      if (gen !== undefined) expect(g).toBe(gen);
      gen = g;
      const body = r.subarray(r.indexOf(0) + 1);
      const last = body.length >= 2 && body[body.length - 1] === 0 && body[body.length - 2] === 0;
      const names = last ? body.subarray(0, body.length - 1) : body;
      parts.push(names);
      off += names.length;
      if (last) break;
    }
    expect(parts.length).toBeGreaterThan(2);
    expect(Buffer.concat(parts).equals(Buffer.from(full))).toBe(true);
    await expect(dom0.request(XsType.DirectoryPart, 0, joinPayload(['/dp', '3']))).rejects.toMatchObject({ code: 'XS_EINVAL' });
    // A change moves the generation, so a reader can restart.
    await dom0.write('/dp/extra', '');
    const r2 = await dom0.request(XsType.DirectoryPart, 0, joinPayload(['/dp', '0']));
    expect(text(r2.subarray(0, r2.indexOf(0)))).not.toBe(gen);
  });
});

describe('transactions', () => {
  it('commits disjoint transactions without a false conflict', async () => {
    await dom0.write('/tx/a', '0');
    await dom0.write('/tx/b', '0');
    const t1 = await dom0.startTransaction();
    const t2 = await dom0.startTransaction();
    await t1.write('/tx/a', '1');
    await t2.write('/tx/b', '2');
    await t1.end(true);
    await t2.end(true);
    expect([await dom0.read('/tx/a'), await dom0.read('/tx/b')]).toEqual(['1', '2']);
  });

  it('fails the commit of a transaction whose reads went stale', async () => {
    await dom0.write('/tx/r', '0');
    const t = await dom0.startTransaction();
    await t.read('/tx/r');
    await dom0.write('/tx/r', 'changed');
    await t.write('/tx/other', 'x');
    await expect(t.end(true)).rejects.toMatchObject({ code: 'XS_EAGAIN' });
    expect(await dom0.exists('/tx/other')).toBe(false);
  });

  it('notices a node created under it meanwhile', async () => {
    const t = await dom0.startTransaction();
    expect(await t.exists('/tx/new')).toBe(false);
    await dom0.write('/tx/new', 'outside');
    await t.write('/tx/new', 'inside');
    await expect(t.end(true)).rejects.toMatchObject({ code: 'XS_EAGAIN' });
    expect(await dom0.read('/tx/new')).toBe('outside');
  });

  it('fires watches only when a transaction commits', async () => {
    const seen: string[] = [];
    await dom0.watch('/txw', (e) => void seen.push(e.path));
    await until(() => seen.length === 1);
    const t = await dom0.startTransaction();
    await t.write('/txw/k', 'v');
    await dom0.read('/'); // a round trip: an event would have come by now
    expect(seen.length).toBe(1);
    await t.end(true);
    await until(() => seen.length === 2);
    expect(seen[1]).toBe('/txw/k');
  });

  it('answers ENOENT for an unknown transaction id and EBUSY for a nested start', async () => {
    await expect(dom0.request(XsType.Read, 77, joinPayload(['/']))).rejects.toMatchObject({ code: 'XS_ENOENT' });
    const t = await dom0.startTransaction();
    await expect(dom0.request(XsType.TransactionStart, t.id, joinPayload(['']))).rejects.toMatchObject({ code: 'XS_EBUSY' });
    await t.end(false);
  });
});

describe('domains', () => {
  it('introduces and releases domains (dom0 only) and answers GET_DOMAIN_PATH', async () => {
    const guest = new XenstoreClient(sim.connect({ domid: 2 }));
    await expect(guest.request(XsType.Introduce, 0, joinPayload(['5', '1234', '3']))).rejects.toMatchObject({ code: 'XS_EACCES' });
    await dom0.request(XsType.Introduce, 0, joinPayload(['5', '1234', '3']));
    expect(text(await dom0.request(XsType.IsDomainIntroduced, 0, joinPayload(['5'])))).toBe('T');
    await dom0.request(XsType.Release, 0, joinPayload(['5']));
    expect(text(await dom0.request(XsType.IsDomainIntroduced, 0, joinPayload(['5'])))).toBe('F');
    await expect(dom0.request(XsType.Release, 0, joinPayload(['5']))).rejects.toMatchObject({ code: 'XS_ENOENT' });
    await expect(dom0.request(XsType.Introduce, 0, joinPayload(['0', '1', '1']))).rejects.toMatchObject({ code: 'XS_EINVAL' });
    expect(text(await guest.request(XsType.GetDomainPath, 0, joinPayload(['7'])))).toBe('/local/domain/7');
  });

  it("lets a SET_TARGET domain act with its target's rights", async () => {
    await dom0.mkdir('/local/domain/8');
    await dom0.setPerms('/local/domain/8', [{ perm: 'n', domid: 8 }]);
    const stub = new XenstoreClient(sim.connect({ domid: 9 }));
    await expect(stub.read('/local/domain/8')).rejects.toMatchObject({ code: 'XS_EACCES' });
    await dom0.request(XsType.SetTarget, 0, joinPayload(['9', '8']));
    expect(await stub.read('/local/domain/8')).toBe('');
  });

  it('answers CONTROL help and rejects unknown commands', async () => {
    expect(splitPayload(await dom0.request(XsType.Control, 0, joinPayload(['help'])))[0]).toContain('print');
    await expect(dom0.request(XsType.Control, 0, joinPayload(['explode']))).rejects.toMatchObject({ code: 'XS_EINVAL' });
  });
});

describe('one client cannot hurt the daemon or the others', () => {
  it("a guest's 4,000-byte watch token under a long path: the event is dropped, nothing crashes", async () => {
    await dom0.mkdir('/local/domain/4');
    await dom0.setPerms('/local/domain/4', [{ perm: 'n', domid: 4 }]);
    sim.introduceDomain(4);
    const guest = new XenstoreClient(sim.connect({ domid: 4 }));
    const token = 't'.repeat(4000);
    await guest.request(XsType.Watch, 0, joinPayload(['data', token]));
    const long = `data/${'p'.repeat(300)}`;
    const dropped = sim.stats().watchEventsDropped;
    await guest.write(long, 'x');
    await until(() => sim.stats().watchEventsDropped > dropped);
    // Everyone is still served, the guest included.
    expect(await guest.read(long)).toBe('x');
    await dom0.write('/after', 'fine');
    expect(sim.connectionCount).toBe(2);
  });

  it('CONTROL is for dom0: a guest gets EACCES', async () => {
    const guest = new XenstoreClient(sim.connect({ domid: 5 }));
    await expect(guest.request(XsType.Control, 0, joinPayload(['check']))).rejects.toMatchObject({ code: 'XS_EACCES' });
    expect(text(await dom0.request(XsType.Control, 0, joinPayload(['check'])))).toBe('OK');
  });

  /** A connection whose client end never reads: what the daemon sends it piles up. */
  function deaf(): { send(type: number, reqId: number, payload: Uint8Array): void; closed: () => boolean } {
    const [client, server] = createMemoryPipe({}, { writeCapacity: 64 * 1024 });
    let closed = false;
    sim.serve(server, { domid: 0 });
    const frame = (type: number, reqId: number, payload: Uint8Array): Uint8Array => {
      const f = new Uint8Array(16 + payload.length);
      encodeHeader(f, 0, { type, reqId, txId: 0, len: payload.length });
      f.set(payload, 16);
      return f;
    };
    return {
      send: (type, reqId, payload) => {
        if (client.write(frame(type, reqId, payload)) === 0) closed = true;
      },
      closed: () => closed || sim.connectionCount === 1,
    };
  }

  it('watch events a client never reads stop at a bound; the daemon stays up', async () => {
    const d = deaf();
    d.send(XsType.Watch, 1, joinPayload(['/deaf', 'tok']));
    const dir = `/deaf/${'d'.repeat(2400)}`;
    for (let i = 0; i < 900; i++) await dom0.write(`${dir}/${i}`, 'x');
    await until(() => sim.stats().watchEventsDropped > 0);
    const s = sim.stats();
    // Sent events (about 2.4 KB each) stop once about EVENT_BACKLOG_BYTES wait unread.
    expect(s.watchEventsSent * 2450).toBeLessThan(EVENT_BACKLOG_BYTES + 2 * 64 * 1024 + 3000);
    expect(s.watchEventsDropped).toBeGreaterThan(400);
    await dom0.write('/after', 'fine');
  });

  it('replies a client never reads: past a bound the connection is dropped, and only it', async () => {
    await dom0.write('/big', 'v'.repeat(3000));
    const d = deaf();
    for (let i = 0; i < 2000; i++) d.send(XsType.Read, i + 1, joinPayload(['/big']));
    await until(() => d.closed(), 10000);
    expect(sim.stats().droppedConnections).toBe(1);
    expect(await dom0.read('/after-drop').catch((e: { code: string }) => e.code)).toBe('XS_ENOENT');
    expect(REPLY_BACKLOG_BYTES).toBeLessThan(2000 * 3016);
  });
});
