/**
 * The ext2/3/4 superblock (e2fsprogs' lib/ext2fs/ext2_fs.h), the fields
 * this package reads. Pure: offsets and flags, no I/O. The superblock is
 * 1024 bytes at byte 1024 of the file system, little-endian.
 *
 *   struct ext2_super_block {
 *       __u32 s_inodes_count;            // 0x00
 *       __u32 s_blocks_count;            // 0x04  (low 32 bits)
 *       __u32 s_r_blocks_count;          // 0x08
 *       __u32 s_free_blocks_count;       // 0x0c  (low 32 bits)
 *       __u32 s_free_inodes_count;       // 0x10
 *       __u32 s_first_data_block;        // 0x14
 *       __u32 s_log_block_size;          // 0x18  block size = 1024 << this
 *       ...
 *       __u32 s_mtime;                   // 0x2c  last mount
 *       __u32 s_wtime;                   // 0x30  last write
 *       __u16 s_mnt_count;               // 0x34  mounts since the last check
 *       __s16 s_max_mnt_count;           // 0x36  mounts before a check is due (<= 0: none)
 *       __u16 s_magic;                   // 0x38  EXT2_SUPER_MAGIC
 *       __u16 s_state;                   // 0x3a  EXT2_VALID_FS, EXT2_ERROR_FS
 *       __u16 s_errors;                  // 0x3c
 *       __u16 s_minor_rev_level;         // 0x3e
 *       __u32 s_lastcheck;               // 0x40
 *       __u32 s_checkinterval;           // 0x44  seconds between checks (0: none)
 *       ...
 *       __u32 s_feature_compat;          // 0x5c
 *       __u32 s_feature_incompat;        // 0x60
 *       __u32 s_feature_ro_compat;       // 0x64
 *       __u8  s_uuid[16];                // 0x68
 *       char  s_volume_name[16];         // 0x78
 *       ...
 *       __u32 s_last_orphan;             // 0xe8  head of the orphan list (0: none)
 *       ...
 *       __u8  s_checksum_type;           // 0x175 1: crc32c
 *       ...
 *       __u32 s_blocks_count_hi;         // 0x150 (64bit feature)
 *       __u32 s_r_blocks_count_hi;       // 0x154
 *       __u32 s_free_blocks_hi;          // 0x158
 *       ...
 *       __u32 s_error_count;             // 0x194 errors recorded
 *       __u32 s_first_error_time;        // 0x198
 *       ...
 *       __u8  s_first_error_func[32];    // 0x1a8 not NUL-terminated when full
 *       ...
 *       __u32 s_last_error_time;         // 0x1cc
 *       ...
 *       __u8  s_last_error_func[32];     // 0x1e0
 *       ...
 *       __u32 s_checksum;                // 0x3fc crc32c of the 0x3fc bytes before it (metadata_csum)
 *   };
 */

/** Where the superblock starts, and its size. */
export const EXT_SUPERBLOCK_OFFSET = 1024;
export const EXT_SUPERBLOCK_SIZE = 1024;
/** EXT2_SUPER_MAGIC. */
export const EXT2_SUPER_MAGIC = 0xef53;

/** Byte offsets within the superblock (checked against ext2_fs.h in test/wire/layouts.test.ts). */
export const ExtSuperOffset = {
  inodesCount: 0x00,
  blocksCount: 0x04,
  freeBlocksCount: 0x0c,
  freeInodesCount: 0x10,
  logBlockSize: 0x18,
  mtime: 0x2c,
  wtime: 0x30,
  mntCount: 0x34,
  maxMntCount: 0x36,
  magic: 0x38,
  state: 0x3a,
  lastcheck: 0x40,
  checkinterval: 0x44,
  featureCompat: 0x5c,
  featureIncompat: 0x60,
  featureRoCompat: 0x64,
  uuid: 0x68,
  volumeName: 0x78,
  lastOrphan: 0xe8,
  blocksCountHi: 0x150,
  freeBlocksHi: 0x158,
  checksumType: 0x175,
  errorCount: 0x194,
  firstErrorTime: 0x198,
  firstErrorFunc: 0x1a8,
  lastErrorTime: 0x1cc,
  lastErrorFunc: 0x1e0,
  checksum: 0x3fc,
} as const;

/** s_state: cleanly unmounted (or checked) since the last read-write mount. */
export const EXT2_VALID_FS = 0x0001;
/** s_state: errors were detected; e2fsck must check it. */
export const EXT2_ERROR_FS = 0x0002;
/** s_feature_incompat: the journal holds transactions not yet written home (needs_recovery). */
export const EXT3_FEATURE_INCOMPAT_RECOVER = 0x0004;
/** s_feature_ro_compat: metadata checksums; the superblock carries its crc32c in s_checksum. */
export const EXT4_FEATURE_RO_COMPAT_METADATA_CSUM = 0x0400;

/** s_feature_compat: EXT3_FEATURE_COMPAT_HAS_JOURNAL. */
export const EXT3_FEATURE_COMPAT_HAS_JOURNAL = 0x0004;
/** s_feature_incompat flags that make a file system ext4. */
export const EXT3_FEATURE_INCOMPAT_EXTENTS = 0x0040;
export const EXT4_FEATURE_INCOMPAT_64BIT = 0x0080;
export const EXT4_FEATURE_INCOMPAT_FLEX_BG = 0x0200;
/** s_feature_ro_compat flags that make a file system ext4. */
export const EXT4_FEATURE_RO_COMPAT_HUGE_FILE = 0x0008;
export const EXT4_FEATURE_RO_COMPAT_GDT_CSUM = 0x0010;
export const EXT4_FEATURE_RO_COMPAT_DIR_NLINK = 0x0020;
export const EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE = 0x0040;
