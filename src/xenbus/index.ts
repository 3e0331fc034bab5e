export { XenstoreClient, Transaction, Watch, WatchIterator } from './client.js';
export type { WatchEvent, WatchCallback, WatchOptions, XenstoreClientOptions, XenstoreClientStats, TransactionOptions } from './client.js';
export { XsOps } from './ops.js';
export type { RequestOptions } from './ops.js';
export type { ByteStream, ByteStreamHandlers } from './transport.js';
export { SocketByteStream, connectUnixSocket, DEFAULT_XENSTORED_SOCKET } from './socket_transport.js';
export { DeviceByteStream, openXenbusDevice, DEFAULT_XENBUS_DEVICE } from './dev_transport.js';
export { switchState, readState, waitForState } from './device.js';
export type { WaitForStateOptions } from './device.js';
