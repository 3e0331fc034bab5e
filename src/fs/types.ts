/**
 * What the files layer says of files (stat, directory entries) and the
 * small rules every operation shares: paths normalized, and the library's
 * errno names turned into FS_* codes.
 */
import { FsError, type FsErrorCode } from '../errors.js';
import type { Ext2Stats } from './ext2fs.js';

/** What `ExtFileSystem.stat` reports. */
export interface FileStat {
  readonly type: 'file' | 'directory' | 'symlink' | 'other';
  readonly size: number;
  /** Permission bits and type, as st_mode. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly links: number;
  readonly ino: number;
  /** 512-byte blocks allocated (less than size / 512 for a sparse file). */
  readonly blocks: number;
  readonly mtime: Date;
}

/** A directory entry with its stat. */
export interface DirEntry extends FileStat {
  readonly name: string;
}

/** The library's errno names: the code each becomes, and the words for it. */
export const ERRNO: Record<string, readonly [FsErrorCode, string]> = {
  ENOENT: ['FS_ENOENT', 'no such file or directory'],
  EEXIST: ['FS_EEXIST', 'already exists'],
  ENOTDIR: ['FS_ENOTDIR', 'not a directory'],
  EISDIR: ['FS_EISDIR', 'is a directory'],
  ENOTEMPTY: ['FS_ENOTEMPTY', 'directory not empty'],
  EINVAL: ['FS_EINVAL', 'EINVAL'],
  EROFS: ['FS_EROFS', 'EROFS'],
};

/** What an error message is about: the operation, and its path when there is one. */
export const subject = (what: string, path: string | undefined): string => (path === undefined ? what : `${what} ${path}`);

export function normalize(path: string): string {
  if (typeof path !== 'string' || path.includes('\0')) throw new FsError('FS_EINVAL', `bad path ${JSON.stringify(path)}`);
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') parts.pop();
    else parts.push(p);
  }
  return '/' + parts.join('/');
}

export function statOf(s: Ext2Stats): FileStat {
  const fmt = s.mode & 0o170000;
  const type = fmt === 0o100000 ? 'file' : fmt === 0o040000 ? 'directory' : fmt === 0o120000 ? 'symlink' : 'other';
  // The library reports sizes as signed 32-bit numbers: a file of 2 GiB or more would look negative.
  const size = s.size < 0 ? s.size + 2 ** 32 : s.size;
  return { type, size, mode: s.mode, uid: s.uid, gid: s.gid, links: s.nlink, ino: s.ino, blocks: s.blocks, mtime: s.mtime };
}
