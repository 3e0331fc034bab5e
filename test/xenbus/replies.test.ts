/**
 * Reply matching under pressure: replies released in reverse or shuffled,
 * requests aborted or timed out before and after they were sent, and a
 * daemon that sends bytes no daemon should.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_ABANDONED, XenstoreClient } from '../../src/xenbus/client.js';
import { MAX_DIRECTORY_PARTS } from '../../src/xenbus/ops.js';
import { SimXenstored } from '../../src/sim/xenstored/server.js';
import { createMemoryPipe } from '../../src/transport/memory.js';
import { XsFrameParser } from '../../src/wire/xs_parser.js';
import { XsType, encodeHeader, encodeMessage, joinPayload, splitPayload, type XsMessage } from '../../src/wire/xs_wire.js';
import { ReplyProxy } from '../helpers/proxy.js';
import { until } from '../helpers/xs.js';

let xenstored: SimXenstored;
let proxy: ReplyProxy;
let xs: XenstoreClient;

beforeEach(() => {
  xenstored = new SimXenstored();
  proxy = new ReplyProxy(xenstored);
  xs = new XenstoreClient(proxy.clientStream);
});
afterEach(() => {
  xs.close();
  xenstored.close();
});

function shuffle<T>(a: T[], seed = 42): T[] {
  let s = seed;
  const out = [...a];
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('replies out of order', () => {
  it.each([
    ['reversed', (m: XsMessage[]) => [...m].reverse()],
    ['shuffled', (m: XsMessage[]) => shuffle(m)],
  ])('matches 200 replies released %s', async (_name, order) => {
    await Promise.all(Array.from({ length: 200 }, (_, i) => xs.write(`/o/${i}`, `v${i}`)));
    proxy.hold();
    const reads = Array.from({ length: 200 }, (_, i) =>
      i % 10 === 9 ? xs.read(`/o/missing-${i}`).catch((e: { code: string }) => e.code) : xs.read(`/o/${i}`),
    );
    await until(() => proxy.heldCount === 200);
    proxy.release(order);
    const got = await Promise.all(reads);
    got.forEach((v, i) => expect(v).toBe(i % 10 === 9 ? 'XS_ENOENT' : `v${i}`));
    expect(xs.stats().unknownReplies).toBe(0);
  });
});

describe('abort and timeout', () => {
  it('never sends a request aborted while still queued', async () => {
    const ac = new AbortController();
    const p = xs.write('/never', 'x', { signal: ac.signal });
    ac.abort(); // same tick: the frame is still in the queue
    await expect(p).rejects.toMatchObject({ code: 'XS_ABORTED' });
    await xs.write('/after', 'y');
    expect(proxy.requests.map((r) => r.type)).toEqual([XsType.Write]);
    expect(await xs.exists('/never')).toBe(false);
  });

  it('rejects at once on an already-aborted signal', async () => {
    await expect(xs.read('/x', { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'XS_ABORTED' });
    expect(xs.stats().requestsSent).toBe(0);
  });

  it('discards the late reply of an aborted request and keeps its id reserved until then', async () => {
    await xs.write('/late', 'old');
    proxy.hold();
    const ac = new AbortController();
    const aborted = xs.read('/late', { signal: ac.signal });
    await until(() => proxy.heldCount === 1);
    ac.abort();
    await expect(aborted).rejects.toMatchObject({ code: 'XS_ABORTED' });
    const abortedId = proxy.requests.at(-1)!.reqId;
    // New requests while the late reply is outstanding must not reuse its id.
    const next = Array.from({ length: 20 }, (_, i) => xs.write(`/n/${i}`, 'x'));
    await until(() => proxy.heldCount === 21);
    const ids = proxy.requests.slice(-20).map((r) => r.reqId);
    expect(ids).not.toContain(abortedId);
    proxy.release((m) => [...m].reverse()); // the stale reply arrives last
    await Promise.all(next);
    await until(() => xs.stats().lateReplies === 1);
    expect(xs.stats().inFlight).toBe(0);
    expect(xs.stats().unknownReplies).toBe(0);
  });

  it('times out with XS_TIMEOUT and stays usable', async () => {
    proxy.hold();
    await expect(xs.read('/slow', { timeoutMs: 30 })).rejects.toMatchObject({ code: 'XS_TIMEOUT' });
    proxy.release();
    await xs.write('/fast', '1');
    expect(await xs.read('/fast')).toBe('1');
    await until(() => xs.stats().lateReplies === 1);
  });

  it('applies the client-wide default timeout, and a per-request one over it', async () => {
    const client = new XenstoreClient(new ReplyProxy(xenstored).clientStream, { defaultTimeoutMs: 25 });
    await client.write('/d', '1'); // answered in time
    const stalled = new ReplyProxy(xenstored);
    const slow = new XenstoreClient(stalled.clientStream, { defaultTimeoutMs: 25 });
    stalled.hold();
    const t0 = Date.now();
    await expect(slow.read('/d')).rejects.toMatchObject({ code: 'XS_TIMEOUT' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(20);
    const longer = slow.read('/d', { timeoutMs: 5000 });
    await until(() => stalled.heldCount === 2);
    stalled.release();
    expect(await longer).toBe('1');
    client.close();
    slow.close();
  });

  it('ends a transaction whose start was abandoned, so it does not linger', async () => {
    proxy.hold();
    const ac = new AbortController();
    const start = xs.startTransaction({ signal: ac.signal });
    await until(() => proxy.heldCount === 1);
    ac.abort();
    await expect(start).rejects.toMatchObject({ code: 'XS_ABORTED' });
    proxy.release();
    await until(() => proxy.requests.some((r) => r.type === XsType.TransactionEnd));
    const end = proxy.requests.find((r) => r.type === XsType.TransactionEnd)!;
    expect(end.txId).toBeGreaterThan(0);
    expect(new TextDecoder().decode(end.payload)).toBe('F\0');
  });
});

/** A daemon stand-in that answers whatever the test tells it to. */
function hostile(): { client: XenstoreClient; requests: XsMessage[]; send(bytes: Uint8Array): void; close(): void } {
  const [clientEnd, serverEnd] = createMemoryPipe();
  const requests: XsMessage[] = [];
  const parser = new XsFrameParser();
  serverEnd.start({
    data: (chunk) => {
      parser.push(chunk);
      for (let r = parser.next(); r.kind === 'message'; r = parser.next()) requests.push(r.message);
    },
    writable: () => undefined,
    closed: () => undefined,
  });
  return { client: new XenstoreClient(clientEnd), requests, send: (b) => void serverEnd.write(b), close: () => serverEnd.close() };
}

describe('late success is undone', () => {
  it('removes a watch whose registration was abandoned', async () => {
    proxy.hold();
    const ac = new AbortController();
    const w = xs.watch('/late-watch', () => undefined, { signal: ac.signal });
    await until(() => proxy.heldCount >= 1); // the reply, and the registration event right behind it
    ac.abort();
    await expect(w).rejects.toMatchObject({ code: 'XS_ABORTED' });
    proxy.release();
    await until(() => proxy.requests.some((r) => r.type === XsType.Unwatch));
    const watch = proxy.requests.find((r) => r.type === XsType.Watch)!;
    const unwatch = proxy.requests.find((r) => r.type === XsType.Unwatch)!;
    expect(splitPayload(unwatch.payload)).toEqual(splitPayload(watch.payload));
    // The daemon holds no watch any more: a change sends no event.
    const sent = xenstored.stats().watchEventsSent;
    await xs.write('/late-watch', 'x');
    expect(xenstored.stats().watchEventsSent).toBe(sent);
  });
});

describe('hostile daemon bytes', () => {
  it('drops and counts a reply for an unknown req_id, then carries on', async () => {
    const h = hostile();
    const p = h.client.read('/a');
    await until(() => h.requests.length === 1);
    h.send(encodeMessage(XsType.Read, 999_999, 0, joinPayload(['bogus'], false)));
    h.send(encodeMessage(XsType.Read, h.requests[0]!.reqId, 0, joinPayload(['real'], false)));
    expect(await p).toBe('real');
    expect(h.client.stats().unknownReplies).toBe(1);
  });

  it('fails the connection on an oversized frame and rejects every pending request', async () => {
    const h = hostile();
    const pending = Array.from({ length: 10 }, (_, i) => h.client.read(`/p/${i}`));
    await until(() => h.requests.length === 10);
    const hdr = new Uint8Array(16);
    encodeHeader(hdr, 0, { type: XsType.Read, reqId: h.requests[0]!.reqId, txId: 0, len: 0x7fffffff });
    h.send(hdr);
    const results = await Promise.allSettled(pending);
    for (const r of results) expect(r.status === 'rejected' && r.reason.code).toBe('XS_EPROTO');
    expect((await h.client.closed).message).toMatch(/XENSTORE_PAYLOAD_MAX/);
    await expect(h.client.read('/after')).rejects.toMatchObject({ code: 'XS_EPROTO' });
  });

  it('fails the connection on garbage (an unknown message type)', async () => {
    const h = hostile();
    const p = h.client.read('/g');
    await until(() => h.requests.length === 1);
    h.send(new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\n\r\n'));
    await expect(p).rejects.toMatchObject({ code: 'XS_EPROTO' });
  });

  it('rejects only the request whose reply has the wrong type', async () => {
    const h = hostile();
    const a = h.client.read('/a');
    const b = h.client.read('/b');
    await until(() => h.requests.length === 2);
    h.send(encodeMessage(XsType.Directory, h.requests[0]!.reqId, 0, joinPayload(['x'])));
    h.send(encodeMessage(XsType.Read, h.requests[1]!.reqId, 0, joinPayload(['fine'], false)));
    await expect(a).rejects.toMatchObject({ code: 'XS_EPROTO' });
    expect(await b).toBe('fine');
  });

  it('maps an unknown errno name to XS_EUNKNOWN', async () => {
    const h = hostile();
    const p = h.client.read('/e');
    await until(() => h.requests.length === 1);
    h.send(encodeMessage(XsType.Error, h.requests[0]!.reqId, 0, joinPayload(['EWHATEVER'])));
    await expect(p).rejects.toMatchObject({ code: 'XS_EUNKNOWN' });
  });

  it('rejects pending requests with XS_CLOSED when the daemon hangs up mid-frame', async () => {
    const h = hostile();
    const p = h.client.read('/c');
    await until(() => h.requests.length === 1);
    h.send(encodeMessage(XsType.Read, h.requests[0]!.reqId, 0, joinPayload(['partial'], false)).subarray(0, 10));
    h.close();
    await expect(p).rejects.toMatchObject({ code: 'XS_CLOSED' });
  });

  it('restarts a DIRECTORY_PART listing when the generation changes mid-way', async () => {
    const h = hostile();
    const listing = h.client.directoryPart('/d');
    const answer = async (payload: Uint8Array): Promise<XsMessage> => {
      const n = h.requests.length;
      await until(() => h.requests.length === n + 1);
      const req = h.requests[n]!;
      h.send(encodeMessage(XsType.DirectoryPart, req.reqId, 0, payload));
      return req;
    };
    const part = (gen: string, names: string[], last: boolean): Uint8Array =>
      Uint8Array.from([...joinPayload([gen, ...names]), ...(last ? [0] : [])]);
    const offsets: string[] = [];
    const note = (r: XsMessage): void => void offsets.push(splitPayload(r.payload)[1]!);
    note(await answer(part('7', ['a', 'b'], false)));
    note(await answer(part('8', ['x'], false))); // changed under us: start again
    note(await answer(part('8', ['a', 'b'], false)));
    note(await answer(part('8', ['c'], true)));
    expect(await listing).toEqual(['a', 'b', 'c']);
    expect(offsets).toEqual(['0', '4', '0', '4']);
  });

  it('never hangs on a daemon that never answers: timeouts fire', async () => {
    const h = hostile();
    const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => h.client.read(`/q/${i}`, { timeoutMs: 20 })));
    expect(results.map((r) => r.status === 'rejected' && r.reason.code)).toEqual(Array(5).fill('XS_TIMEOUT'));
  });
});

/** A daemon stand-in that answers each request with what `reply` returns (nothing: no answer). */
function responder(
  reply: (m: XsMessage) => Uint8Array | null,
  delayMs = 0,
): { client: XenstoreClient; requests: () => number; send(b: Uint8Array): void } {
  const [clientEnd, serverEnd] = createMemoryPipe();
  const parser = new XsFrameParser();
  let n = 0;
  serverEnd.start({
    data: (chunk) => {
      parser.push(chunk);
      for (let r = parser.next(); r.kind === 'message'; r = parser.next()) {
        n++;
        const out = reply(r.message);
        if (out === null) continue;
        if (delayMs === 0) serverEnd.write(out);
        else setTimeout(() => serverEnd.write(out), delayMs);
      }
    },
    writable: () => undefined,
    closed: () => undefined,
  });
  return { client: new XenstoreClient(clientEnd), requests: () => n, send: (b) => void serverEnd.write(b) };
}

describe('bounds against a daemon that never finishes', () => {
  /** DIRECTORY says E2BIG; every DIRECTORY_PART brings one more name and never the end marker. */
  const endless = (m: XsMessage): Uint8Array =>
    m.type === XsType.Directory
      ? encodeMessage(XsType.Error, m.reqId, 0, joinPayload(['E2BIG']))
      : encodeMessage(XsType.DirectoryPart, m.reqId, 0, joinPayload(['1', `n${m.reqId}`]));

  it("directory(): the caller's timeout bounds the whole listing, not each part", async () => {
    const d = responder(endless, 2); // 4096 parts would take over 8 s
    const t0 = Date.now();
    await expect(d.client.directory('/big', { timeoutMs: 300 })).rejects.toMatchObject({ code: 'XS_TIMEOUT' });
    expect(Date.now() - t0).toBeLessThan(1500);
    d.client.close();
  });

  it('directory(): without a timeout, the parts are capped (XS_EPROTO), and an abort ends it too', async () => {
    const d = responder(endless);
    await expect(d.client.directory('/big')).rejects.toMatchObject({ code: 'XS_EPROTO', message: expect.stringMatching(/no end marker/) });
    expect(d.requests()).toBeLessThanOrEqual(MAX_DIRECTORY_PARTS + 1);
    // Abort mid-listing: once a few more parts have been asked for (a fixed delay raced the cap).
    const ac = new AbortController();
    const before = d.requests();
    const listing = d.client.directory('/big', { signal: ac.signal });
    const abortSoon = (): void => {
      if (d.requests() >= before + 3) ac.abort();
      else setImmediate(abortSoon);
    };
    abortSoon();
    await expect(listing).rejects.toMatchObject({ code: 'XS_ABORTED' });
    expect(d.requests()).toBeLessThan(before + MAX_DIRECTORY_PARTS);
    d.client.close();
  });

  it('timed-out requests keep their ids reserved as small records, at most MAX_ABANDONED', async () => {
    const held: XsMessage[] = [];
    const d = responder((m) => {
      held.push(m);
      return null;
    });
    const n = MAX_ABANDONED + 500;
    const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => d.client.read(`/t/${i}`, { timeoutMs: 50 })));
    expect(results.every((r) => r.status === 'rejected' && r.reason.code === 'XS_TIMEOUT')).toBe(true);
    expect(d.client.stats()).toMatchObject({ inFlight: 0, abandoned: MAX_ABANDONED, forgottenRequests: 500 });
    // A late reply to a remembered request is discarded as late; to a forgotten one, as unknown.
    d.send(encodeMessage(XsType.Read, held[n - 1]!.reqId, 0, joinPayload(['late'], false)));
    d.send(encodeMessage(XsType.Read, held[0]!.reqId, 0, joinPayload(['later still'], false)));
    await until(() => d.client.stats().lateReplies + d.client.stats().unknownReplies === 2);
    expect(d.client.stats()).toMatchObject({ lateReplies: 1, unknownReplies: 1, abandoned: MAX_ABANDONED - 1 });
    // Still usable, and no new request takes a reserved id.
    const next = d.client.read('/after', { timeoutMs: 50 }).catch(() => undefined);
    await until(() => held.length === n + 1);
    expect(held.slice(500, n - 1).map((m) => m.reqId)).not.toContain(held[n]!.reqId);
    await next;
    d.client.close();
  });
});
