/**
 * The parts of the `ext2fs` package (libext2fs compiled to WebAssembly) this
 * project uses, typed here (the package ships no types), and the module
 * itself, loaded once.
 */
import { createRequire } from 'node:module';

export interface Ext2Disk {
  read(buffer: Buffer, bufferOffset: number, length: number, fileOffset: number): Promise<unknown>;
  write(buffer: Buffer, bufferOffset: number, length: number, fileOffset: number): Promise<unknown>;
  discard(offset: number, length: number): Promise<unknown>;
  flush(): Promise<unknown>;
}
export interface Ext2Stats {
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  blocks: number;
  ino: number;
  blksize: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
  isFile(): boolean;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
}
export interface Ext2FileHandle {
  readonly fd: number;
}
export interface Ext2Promises {
  open(path: string, flags: string | number, mode?: number): Promise<Ext2FileHandle>;
  close(fd: number): Promise<void>;
  read(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  fstat(fd: number): Promise<Ext2Stats>;
  lstat(path: string): Promise<Ext2Stats>;
  stat(path: string): Promise<Ext2Stats>;
  readdir(path: string): Promise<string[]>;
  mkdir(path: string, mode?: number): Promise<void>;
  rmdir(path: string): Promise<void>;
  unlink(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  readlink(path: string): Promise<string>;
  symlink(target: string, path: string): Promise<void>;
  ftruncate(fd: number, len: number): Promise<void>;
  trim(): Promise<void>;
}
export interface Ext2Fs {
  promises: Ext2Promises;
  fsPointer: number;
}

export interface Ext2Module {
  mount(disk: Ext2Disk, offset?: number): Promise<Ext2Fs>;
  umount(fs: Ext2Fs): Promise<void>;
}

/** The package (CommonJS): one WebAssembly instance for the whole process. */
export const ext2fs = createRequire(import.meta.url)('ext2fs') as Ext2Module;
