import assert from "node:assert/strict";
import { crc32c } from "./crc32c.ts";

const ascii = (s: string) => new TextEncoder().encode(s);

Deno.test("crc32c matches the published CRC-32C check values", () => {
  // The catalogue's check value (reveng.sourceforge.net, "CRC-32/ISCSI") and RFC 3720's B.4 vectors.
  assert.equal(crc32c(ascii("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  assert.equal(crc32c(ascii("The quick brown fox jumps over the lazy dog")), 0x22620404);
  // Castagnoli, not zlib's CRC-32 (whose check value is 0xCBF43926).
  assert.notEqual(crc32c(ascii("123456789")), 0xcbf43926);
});

Deno.test("crc32c continues a CRC over split input", () => {
  const data = ascii("The quick brown fox jumps over the lazy dog");
  for (const cut of [0, 1, 7, 20, data.length]) {
    assert.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), crc32c(data));
  }
});
