/**
 * A frame-level proxy between a client and the simulated xenstored, for tests
 * that need control over replies: hold them back, release them in another
 * order, or inject bytes the daemon would never send.
 */
import type { ByteStream } from '../../src/transport/byte_stream.js';
import { createMemoryPipe } from '../../src/transport/memory.js';
import { XsFrameParser } from '../../src/wire/xs_parser.js';
import { encodeMessage, type XsMessage } from '../../src/wire/xs_wire.js';
import type { SimXenstored } from '../../src/sim/xenstored/server.js';

export class ReplyProxy {
  /** The stream to give the client. */
  readonly clientStream: ByteStream;
  private readonly toClient: ByteStream;
  private readonly held: XsMessage[] = [];
  private holding = false;
  /** Requests seen going to the daemon. */
  readonly requests: XsMessage[] = [];

  constructor(xenstored: SimXenstored, domid = 0) {
    const [client, proxyLeft] = createMemoryPipe();
    this.clientStream = client;
    this.toClient = proxyLeft;
    const toServer = xenstored.connect({ domid });
    const fromClient = new XsFrameParser();
    const fromServer = new XsFrameParser();
    proxyLeft.start({
      data: (chunk) => {
        fromClient.push(chunk);
        for (let r = fromClient.next(); r.kind === 'message'; r = fromClient.next()) {
          this.requests.push(r.message);
          toServer.write(encodeMessage(r.message.type, r.message.reqId, r.message.txId, r.message.payload));
        }
      },
      writable: () => undefined,
      closed: () => toServer.close(),
    });
    toServer.start({
      data: (chunk) => {
        fromServer.push(chunk);
        for (let r = fromServer.next(); r.kind === 'message'; r = fromServer.next()) {
          if (this.holding) this.held.push(r.message);
          else this.forward(r.message);
        }
      },
      writable: () => undefined,
      closed: () => proxyLeft.close(),
    });
  }

  /** Replies from now on are kept until {@link release}. */
  hold(): void {
    this.holding = true;
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Sends the held replies, in the order `order` puts them (default: as received), and stops holding. */
  release(order: (msgs: XsMessage[]) => XsMessage[] = (m) => m): void {
    this.holding = false;
    const msgs = order(this.held.splice(0));
    for (const m of msgs) this.forward(m);
  }

  /** Writes raw bytes to the client, as if the daemon had sent them. */
  inject(bytes: Uint8Array): void {
    this.toClient.write(bytes);
  }

  private forward(m: XsMessage): void {
    this.toClient.write(encodeMessage(m.type, m.reqId, m.txId, m.payload));
  }
}
