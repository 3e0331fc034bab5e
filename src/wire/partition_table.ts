/**
 * Partition table layouts. Pure: offsets, sizes and constants, no I/O.
 *
 * The PC BIOS master boot record (and each extended boot record, which has
 * the same shape), 512 bytes at the start of the disk (of the EBR's sector):
 *
 *   struct mbr {
 *       uint8_t  bootstrap[440];
 *       uint32_t disk_signature;          // 440
 *       uint16_t reserved;                // 444
 *       struct mbr_entry entries[4];      // 446, 16 bytes each
 *       uint8_t  signature[2];            // 510: 0x55, 0xAA
 *   };
 *   struct mbr_entry {
 *       uint8_t  boot_flag;               // 0 or 0x80
 *       uint8_t  chs_first[3];
 *       uint8_t  type;                    // 4
 *       uint8_t  chs_last[3];
 *       uint32_t first_lba;               // 8 (an EBR's: relative to it, or to the extended partition for the link)
 *       uint32_t sectors;                 // 12
 *   };
 *
 * The UEFI specification's GPT (chapter 5), little-endian, GUIDs in their
 * mixed-endian on-disk form:
 *
 *   struct gpt_header {                   // at LBA 1, the backup at the last LBA
 *       char     signature[8];            // 0: "EFI PART"
 *       uint32_t revision;                // 8
 *       uint32_t header_size;             // 12: at least 92
 *       uint32_t header_crc32;            // 16: over header_size bytes, this field zero
 *       uint32_t reserved;                // 20
 *       uint64_t my_lba;                  // 24
 *       uint64_t alternate_lba;           // 32
 *       uint64_t first_usable_lba;        // 40
 *       uint64_t last_usable_lba;         // 48
 *       uint8_t  disk_guid[16];           // 56
 *       uint64_t entries_lba;             // 72
 *       uint32_t entry_count;             // 80
 *       uint32_t entry_size;              // 84: 128 × 2^n
 *       uint32_t entries_crc32;           // 88
 *   };
 *   struct gpt_entry {
 *       uint8_t  type_guid[16];           // 0: all zero for an unused entry
 *       uint8_t  unique_guid[16];         // 16
 *       uint64_t first_lba;               // 32
 *       uint64_t last_lba;                // 40: inclusive
 *       uint64_t attributes;              // 48: bit 2 legacy BIOS bootable
 *       uint16_t name[36];                // 56: UTF-16LE
 *   };
 */

export const MBR_SIZE = 512;
export const MbrOffset = { diskSignature: 440, entries: 446, signature: 510 } as const;
export const MBR_ENTRY_SIZE = 16;
export const MBR_ENTRIES = 4;
export const MbrEntryOffset = { bootFlag: 0, type: 4, firstLba: 8, sectors: 12 } as const;
/** The boot signature's bytes. */
export const MBR_SIGNATURE = [0x55, 0xaa] as const;
export const MBR_BOOTABLE = 0x80;
/** The type of the protective MBR entry that says a GPT follows. */
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
/** Types of an extended partition (CHS, LBA, Linux). */
export const MBR_TYPES_EXTENDED: ReadonlySet<number> = new Set([0x05, 0x0f, 0x85]);

export const GPT_SIGNATURE = 'EFI PART';
/** Smallest header (the fields above); header_size may be larger, up to a sector. */
export const GPT_HEADER_MIN_SIZE = 92;
export const GptHeaderOffset = {
  signature: 0,
  revision: 8,
  headerSize: 12,
  headerCrc32: 16,
  myLba: 24,
  alternateLba: 32,
  firstUsableLba: 40,
  lastUsableLba: 48,
  diskGuid: 56,
  entriesLba: 72,
  entryCount: 80,
  entrySize: 84,
  entriesCrc32: 88,
} as const;
export const GPT_ENTRY_MIN_SIZE = 128;
export const GptEntryOffset = { typeGuid: 0, uniqueGuid: 16, firstLba: 32, lastLba: 40, attributes: 48, name: 56 } as const;
/** UTF-16 code units in an entry's name. */
export const GPT_NAME_UNITS = 36;
/** attributes bit 2: legacy BIOS bootable. */
export const GPT_ATTR_LEGACY_BOOTABLE = 4;

/** A GUID in its on-disk mixed-endian form at `at`, as text (upper case, as sfdisk prints it). */
export function decodeGuid(b: Uint8Array, at: number): string {
  const h = (i: number): string => b[at + i]!.toString(16).padStart(2, '0');
  return (
    h(3) +
    h(2) +
    h(1) +
    h(0) +
    '-' +
    h(5) +
    h(4) +
    '-' +
    h(7) +
    h(6) +
    '-' +
    h(8) +
    h(9) +
    '-' +
    h(10) +
    h(11) +
    h(12) +
    h(13) +
    h(14) +
    h(15)
  ).toUpperCase();
}
