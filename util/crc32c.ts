/**
 * CRC-32C (Castagnoli), the checksum TFRecord files (TensorBoard's event files) put around every record.
 *
 * CRC-32C differs from the zlib/PNG CRC-32 only in its polynomial (0x1EDC6F41, 0x82F63B78 bit-reversed);
 * it was chosen by iSCSI, ext4 and LevelDB because it detects more error patterns in short messages, and
 * modern CPUs have an instruction for it. A plain table-driven loop is plenty for event records of a few
 * dozen bytes.
 * @module
 */

/** The Castagnoli polynomial, bit-reversed: CRCs here run least-significant bit first, like zlib's. */
const POLY = 0x82f63b78;

/** The CRC of every byte value: one table lookup per byte instead of eight shift-and-xor steps. */
const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/**
 * CRC-32C of `data`, as an unsigned 32-bit number (`crc32c("123456789")` is 0xE3069283). Pass the CRC of
 * the bytes before as `crc` to continue it: `crc32c(b, crc32c(a))` equals the CRC of `a` followed by `b`.
 */
export function crc32c(data: Uint8Array, crc = 0): number {
  // The register starts at all ones and is inverted at the end (the standard's pre- and post-conditioning),
  // so leading zero bytes change the result; undoing the final inversion first lets a CRC be continued.
  let c = ~crc;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
