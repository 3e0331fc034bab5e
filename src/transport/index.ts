export type { ByteStream, ByteStreamHandlers } from './byte_stream.js';
export { SocketByteStream, connectUnixSocket, DEFAULT_XENSTORED_SOCKET } from './socket.js';
export { XenbusDeviceStream, openXenbusDevice, DEFAULT_XENBUS_DEVICE } from './xenbus_device.js';
export { createMemoryPipe } from './memory.js';
export type { MemoryPipeOptions } from './memory.js';
