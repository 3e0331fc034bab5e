/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as ext4's metadata
 * checksums use it: e2fsprogs' ext2fs_crc32c_le and the kernel's crc32c
 * both start from the value given and apply no final inversion, so the
 * superblock's s_checksum is crc32c(~0, bytes) exactly as computed here.
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Continues a CRC-32C from `crc` over `bytes` (no inversion in or out). */
export function crc32c(crc: number, bytes: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}
