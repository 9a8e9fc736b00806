// readJsonBody with real Request objects: only JSON media types, a size cap enforced while reading (the
// stream is cancelled, not drained), strict UTF-8, and no duplicate object keys; findDuplicateKey directly.
import assert from "node:assert/strict";
import { findDuplicateKey, readJsonBody } from "./body.ts";
import { ApiError, type ErrorCode } from "./errors.ts";

const encoder = new TextEncoder();
const LIMIT = 1024;

/** A POST with the given body and headers; bodies as bytes, so no content type is implied. */
function post(
  body: BodyInit | null,
  headers: Record<string, string> = { "content-type": "application/json" },
) {
  return new Request("http://localhost/predict", { method: "POST", body, headers });
}

function json(text: string, contentType = "application/json") {
  return post(encoder.encode(text), { "content-type": contentType });
}

function bytes(...parts: (string | number[])[]): Uint8Array<ArrayBuffer> {
  const chunks = parts.map((p) => (typeof p === "string" ? encoder.encode(p) : new Uint8Array(p)));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/** Awaits a rejection with an ApiError of this code (and the status the code maps to), and returns it. */
async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, status: number): Promise<ApiError> {
  let error: unknown;
  try {
    const value = await promise;
    assert.fail(`expected ${code}, got the value ${JSON.stringify(value)}`);
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof ApiError, `expected an ApiError, got ${error}`);
  assert.equal(error.code, code, error.message);
  assert.equal(error.status, status);
  return error;
}

Deno.test("readJsonBody: accepts JSON media types, with or without a UTF-8 charset", async () => {
  const accepted = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    "application/json; charset=utf8",
    'application/json; charset="utf-8"',
    "Application/JSON",
    "application/problem+json",
    "application/vnd.api+json; charset=utf-8",
    "application/json; foo=bar",
  ];
  for (const type of accepted) {
    assert.deepEqual(await readJsonBody(json('{"text":"hi"}', type), LIMIT), { text: "hi" }, type);
  }
});

Deno.test("readJsonBody: other media types, none at all, or a non-UTF-8 charset are 415", async () => {
  const rejected = [
    "text/plain",
    "text/plain; charset=utf-8",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json-seq",
    "application/+json",
    "application/jsonp",
    "application/json; charset=latin1",
    "application/json; charset=iso-8859-1",
    "application/json; charset=utf-16",
  ];
  for (const type of rejected) {
    const err = await rejectsWith(
      readJsonBody(json('{"text":"hi"}', type), LIMIT),
      "unsupported_media_type",
      415,
    );
    assert.equal(err.details.content_type, type);
    assert.match(err.message, /application\/json/);
  }
  // No Content-Type header at all (a Uint8Array body implies none).
  const bare = post(encoder.encode('{"text":"hi"}'), {});
  assert.equal(bare.headers.get("content-type"), null);
  const err = await rejectsWith(readJsonBody(bare, LIMIT), "unsupported_media_type", 415);
  assert.equal(err.details.content_type, null);
  assert.match(err.message, /without a Content-Type/);
});

Deno.test("readJsonBody: the media type is checked before the body is read", async () => {
  const request = json("not even json", "text/plain");
  await rejectsWith(readJsonBody(request, LIMIT), "unsupported_media_type", 415);
  assert.equal(request.bodyUsed, false);
});

Deno.test("readJsonBody: a Content-Length over the limit is 413 without reading the body", async () => {
  const body = '{"text":"' + "x".repeat(2000) + '"}';
  const request = post(encoder.encode(body), {
    "content-type": "application/json",
    "content-length": String(body.length),
  });
  const err = await rejectsWith(readJsonBody(request, LIMIT), "payload_too_large", 413);
  assert.equal(err.details.limit_bytes, LIMIT);
  assert.match(err.message, /over the limit of 1024 bytes/);
  // Not read: the body is still unused and still all there.
  assert.equal(request.bodyUsed, false);
  assert.equal(await request.text(), body);
});

Deno.test("readJsonBody: the limit is inclusive: exactly maxBytes is read, one more byte is 413", async () => {
  const make = (size: number) => '{"t":"' + "x".repeat(size - 8) + '"}';
  assert.equal(make(LIMIT).length, LIMIT);
  assert.deepEqual(await readJsonBody(json(make(LIMIT)), LIMIT), { t: "x".repeat(LIMIT - 8) });
  await rejectsWith(readJsonBody(json(make(LIMIT + 1)), LIMIT), "payload_too_large", 413);
  // The same at the Content-Length check.
  const declared = (size: number) =>
    post(encoder.encode(make(size)), { "content-type": "application/json", "content-length": String(size) });
  assert.ok(await readJsonBody(declared(LIMIT), LIMIT));
  await rejectsWith(readJsonBody(declared(LIMIT + 1), LIMIT), "payload_too_large", 413);
});

Deno.test("readJsonBody: the limit counts bytes, not characters", async () => {
  // 600 "é" are 600 characters but 1200 bytes of UTF-8.
  const text = '{"t":"' + "é".repeat(600) + '"}';
  assert.ok(text.length < LIMIT && encoder.encode(text).length > LIMIT);
  await rejectsWith(readJsonBody(json(text), LIMIT), "payload_too_large", 413);
});

Deno.test("readJsonBody: a streamed body over the limit is 413 and the stream is cancelled", async () => {
  // An endless stream without Content-Length: reading it all would never end, so finishing proves the cap.
  let pulls = 0;
  let cancelled: unknown = "not cancelled";
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulls++;
      controller.enqueue(encoder.encode(pulls === 1 ? '{"text":"' : "x".repeat(100)));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const request = post(stream);
  assert.equal(request.headers.get("content-length"), null);
  const err = await rejectsWith(readJsonBody(request, LIMIT), "payload_too_large", 413);
  assert.equal(err.details.limit_bytes, LIMIT);
  assert.notEqual(cancelled, "not cancelled", "the stream was cancelled");
  // 9 + 100k bytes > 1024 after 12 chunks; a little read-ahead is fine, draining is not.
  assert.ok(pulls <= 20, `pulled ${pulls} chunks`);
});

Deno.test("readJsonBody: a lying small Content-Length does not lift the cap on a bigger stream", async () => {
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new Uint8Array(512).fill(0x20)); // spaces, forever
    },
    cancel() {
      cancelled = true;
    },
  });
  const request = post(stream, { "content-type": "application/json", "content-length": "10" });
  await rejectsWith(readJsonBody(request, LIMIT), "payload_too_large", 413);
  assert.ok(cancelled);
});

Deno.test("readJsonBody: a streamed body within the limit is read across chunks", async () => {
  // Chunk boundaries split a multi-byte character (é = c3 a9) on purpose.
  const all = encoder.encode('{"text":"café crème"}');
  const cut = all.indexOf(0xc3) + 1;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(all.slice(0, cut));
      controller.enqueue(all.slice(cut));
      controller.close();
    },
  });
  assert.deepEqual(await readJsonBody(post(stream), LIMIT), { text: "café crème" });
});

Deno.test("readJsonBody: invalid UTF-8 is 400 invalid_utf8, never silently replaced", async () => {
  const cases: [string, number[]][] = [
    ["0xff", [0xff]],
    ["overlong '/' (c0 af)", [0xc0, 0xaf]],
    ["overlong 3-byte (e0 80 af)", [0xe0, 0x80, 0xaf]],
    ["truncated 2-byte (c3)", [0xc3]],
    ["truncated 3-byte (e2 82)", [0xe2, 0x82]],
    ["lone continuation byte (80)", [0x80]],
    ["UTF-8-encoded surrogate U+D800 (ed a0 80)", [0xed, 0xa0, 0x80]],
    ["above U+10FFFF (f4 90 80 80)", [0xf4, 0x90, 0x80, 0x80]],
  ];
  for (const [what, bad] of cases) {
    const body = bytes('{"text":"a', bad, 'b"}');
    const err = await rejectsWith(readJsonBody(post(body), LIMIT), "invalid_utf8", 400);
    assert.match(err.message, /not valid UTF-8/, what);
  }
  // A truncated sequence at the very end of the body too.
  await rejectsWith(readJsonBody(post(bytes('{"text":"a"}', [0xe2, 0x82])), LIMIT), "invalid_utf8", 400);
});

Deno.test("readJsonBody: valid multi-byte UTF-8 (2, 3 and 4 bytes) decodes", async () => {
  const text = "é — 世界 🎉";
  assert.deepEqual(await readJsonBody(json(JSON.stringify({ text })), LIMIT), { text });
});

Deno.test("readJsonBody: a UTF-8 byte order mark is accepted and dropped", async () => {
  const body = bytes([0xef, 0xbb, 0xbf], '{"text":"bom"}');
  assert.deepEqual(await readJsonBody(post(body), LIMIT), { text: "bom" });
});

Deno.test("readJsonBody: an empty or blank body is 400 invalid_json", async () => {
  for (const body of ["", " ", "\n\t  \r\n"]) {
    const err = await rejectsWith(readJsonBody(json(body), LIMIT), "invalid_json", 400);
    assert.match(err.message, /empty/, JSON.stringify(body));
  }
  // No body at all.
  const none = post(null);
  assert.equal(none.body, null);
  await rejectsWith(readJsonBody(none, LIMIT), "invalid_json", 400);
  // A byte order mark alone is empty too.
  await rejectsWith(readJsonBody(post(bytes([0xef, 0xbb, 0xbf])), LIMIT), "invalid_json", 400);
});

Deno.test("readJsonBody: malformed JSON is 400 invalid_json with the parser's message", async () => {
  const malformed = [
    "{",
    '{"text":',
    '{"text":"unterminated}',
    "{'text':'single quotes'}",
    "{text: 1}",
    '{"a":1,}',
    "[1,2,]",
    '{"a":1} trailing',
    "NaN",
    "undefined",
    '{"a":01}',
    '{"a":"\\x41"}',
    '{"a":"raw\ncontrol"}',
    "// comment\n{}",
  ];
  for (const body of malformed) {
    const err = await rejectsWith(readJsonBody(json(body), LIMIT), "invalid_json", 400);
    assert.match(err.message, /not valid JSON: /, body);
  }
});

Deno.test("readJsonBody: any valid JSON value is returned as parsed (the schema judges its shape)", async () => {
  for (const value of [{ text: "a" }, { texts: ["a", "b"] }, [1, 2], "s", 0, true, null, {}]) {
    assert.deepEqual(await readJsonBody(json(JSON.stringify(value)), LIMIT), value);
  }
  // Surrounding whitespace is fine.
  assert.deepEqual(await readJsonBody(json('\n  {"a": [1, {"b": null}]}  \n'), LIMIT), {
    a: [1, { b: null }],
  });
});

Deno.test("readJsonBody: a duplicate key is 400 duplicate_key naming the key", async () => {
  const cases: [string, string][] = [
    ['{"text":"a","text":"b"}', "text"],
    ['{ "text" : "a" ,\n "text" : "b" }', "text"],
    ['{"texts":["a"],"text":"x","texts":["b"]}', "texts"],
    ['{"outer":{"inner":1,"inner":2}}', "inner"],
    ['{"list":[{"ok":1},{"k":1,"k":2}]}', "k"],
    ['[{"a":1},{"b":1,"b":2}]', "b"],
    ['{"text":"a","\\u0074ext":"b"}', "text"], // the same key, written with an escape
    ['{"\\u0074\\u0065\\u0078\\u0074":1,"text":2}', "text"],
    ['{"a\\"b":1,"a\\"b":2}', 'a"b'], // escaped quote inside the key
    ['{"a\\\\":1,"a\\\\":2}', "a\\"], // escaped backslash at the end of the key
    ['{"\\/":1,"/":2}', "/"],
    ['{"":1,"":2}', ""],
    ['{"a":{"x":[1,{"y":{}}]},"b":2,"a":3}', "a"], // the outer repeat, found after nested values
  ];
  for (const [body, key] of cases) {
    const err = await rejectsWith(readJsonBody(json(body), LIMIT), "duplicate_key", 400);
    assert.deepEqual(err.details, { key }, body);
    assert.match(err.message, /repeats the key/);
  }
});

Deno.test("readJsonBody: repeated names that are not duplicate keys are accepted", async () => {
  const fine = [
    '{"a":{"k":1},"b":{"k":2}}', // the same key in sibling objects
    '{"k":{"k":{"k":1}}}', // the same key at every depth
    '{"text":"text"}', // the key as a value
    '{"a":"b","b":"a"}',
    '{"k":["k","k"]}', // repeated strings in an array
    '[{"k":1},{"k":2},{"k":3}]', // keys in an array of objects
    '[["k","k"],{"k":1}]',
    '{"text":"a","Text":"b","TEXT":"c"}', // keys are case-sensitive
    '{"\\\\u0074ext":1,"text":2}', // a literal backslash-u key is not "text"
    '{"a,\\"b\\":1":1,"b":2}', // a key that looks like JSON
    '{"x":"\\"","x\\"":1}',
    '{"a":{},"b":{},"c":[]}',
  ];
  for (const body of fine) {
    assert.deepEqual(await readJsonBody(json(body), LIMIT), JSON.parse(body), body);
  }
});

Deno.test("findDuplicateKey: tricky inputs", () => {
  const cases: [string, string | undefined][] = [
    ["{}", undefined],
    ["[]", undefined],
    ['"just a string"', undefined],
    ["123", undefined],
    ['{"a":1}', undefined],
    ['{"a":1,"a":1}', "a"],
    // Structural characters inside strings are not structure.
    ['{"{":1,"}":2,"[":3,"]":4,",":5,":":6}', undefined],
    ['{"a":"}","a":1}', "a"], // a brace in a value does not close the object
    ['{"a":"x\\"}\\"","a":1}', "a"], // an escaped quote does not end the value
    ['{"a":"\\\\","a":1}', "a"], // a value ending in an escaped backslash
    ['{"a":"\\\\\\"","b":"\\\\"}', undefined],
    // After a nested array or object closes, the next name at the outer level is a key again.
    ['{"a":[1,2],"a":3}', "a"],
    ['{"a":{"b":1},"b":2}', undefined],
    ['{"a":{"b":1},"c":{"b":2},"c":3}', "c"],
    ['{"a":[{"b":1}],"b":2}', undefined],
    // Inside an array, strings after a comma are values, not keys.
    ['{"a":["b","b"],"b":1}', undefined],
    ['{"a":[{},"a"],"x":"a"}', undefined],
    // Unicode escapes, surrogate pairs and non-ASCII keys.
    ['{"\\u00e9":1,"é":2}', "é"],
    ['{"\\ud83c\\udf89":1,"🎉":2}', "🎉"],
    ['{"\\u00E9":1,"\\u00e9":2}', "é"],
    ['{"e\\u0301":1,"é":2}', undefined], // different code points (no normalization)
    // Whitespace everywhere JSON allows it.
    ['\n{ "a" :\t1 ,\r\n "b" : [ ] , "a" : { } }\n', "a"],
    // The first repeat wins.
    ['{"x":1,"y":1,"y":2,"x":2}', "y"],
    ['{"o":{"z":1,"z":2},"o":1}', "z"],
  ];
  for (const [text, expected] of cases) {
    JSON.parse(text); // the scan's precondition: valid JSON
    assert.equal(findDuplicateKey(text), expected, text);
  }
});

Deno.test("findDuplicateKey: keys named like Object.prototype members are ordinary keys", () => {
  assert.equal(findDuplicateKey('{"__proto__":1,"constructor":2,"toString":3}'), undefined);
  assert.equal(findDuplicateKey('{"__proto__":1,"__proto__":2}'), "__proto__");
  assert.equal(findDuplicateKey('{"hasOwnProperty":1,"hasOwnProperty":2}'), "hasOwnProperty");
});

Deno.test("readJsonBody: 100000 levels of nested arrays do not crash", async () => {
  const depth = 100_000;
  const text = "[".repeat(depth) + "]".repeat(depth);
  assert.equal(findDuplicateKey(text), undefined);
  const value = await readJsonBody(json(text), text.length);
  let level = 0;
  for (let v = value; Array.isArray(v) && v.length > 0; v = v[0]) level++;
  assert.equal(level, depth - 1, "parsed to the full depth");
});

Deno.test("findDuplicateKey: deep nesting of objects and arrays is scanned iteratively", () => {
  const depth = 100_000;
  // {"a":[{"a":[ ... {"a":[]} ... ]}]}: every object has one "a", no duplicates.
  const clean = '{"a":['.repeat(depth) + "]}".repeat(depth);
  JSON.parse(clean);
  assert.equal(findDuplicateKey(clean), undefined);
  // A repeat at the very bottom is still found.
  const deepDup = '{"a":['.repeat(depth) + '{"z":1,"z":2}' + "]}".repeat(depth);
  assert.equal(findDuplicateKey(deepDup), "z");
  // And one at the top level, after the whole deep value.
  const topDup = '{"a":' + "[".repeat(depth) + "]".repeat(depth) + ',"a":1}';
  assert.equal(findDuplicateKey(topDup), "a");
});

Deno.test("findDuplicateKey: many keys in one object stay fast", () => {
  const n = 50_000;
  const keys = Array.from({ length: n }, (_, i) => `"k${i}":${i}`);
  const started = performance.now();
  assert.equal(findDuplicateKey(`{${keys.join(",")}}`), undefined);
  assert.equal(findDuplicateKey(`{${keys.join(",")},"k123":0}`), "k123");
  // Generous: a linear scan takes milliseconds; a quadratic one would take minutes.
  assert.ok(performance.now() - started < 10_000);
});
