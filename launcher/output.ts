/**
 * The ranks' output on the launcher's terminal: every line a rank writes comes out whole, prefixed
 * `[rank R] `, on the same stream (stdout or stderr) — so that lines of N ranks printing at once never
 * interleave mid-line and each can be traced to its rank. Also the launcher's own `[launcher] ` log.
 * @module
 */

import { concatBytes } from "../util/bytes.ts";

const NEWLINE = 10;

/**
 * Splits a byte stream into lines and hands each complete line, prefixed, to `sink`. All complete lines of
 * one chunk go out in one call, so a line is never split between writes. {@link flush} emits an unfinished
 * last line with a newline added. A line longer than `maxLine` bytes is cut there (memory stays bounded).
 */
export class LinePrefixer {
  #prefix: Uint8Array;
  #sink: (bytes: Uint8Array) => void;
  #maxLine: number;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;

  /** `prefix` goes before every line; `sink` receives whole prefixed lines. */
  constructor(prefix: string, sink: (bytes: Uint8Array) => void, maxLine = 1 << 20) {
    this.#prefix = new TextEncoder().encode(prefix);
    this.#sink = sink;
    this.#maxLine = maxLine;
  }

  /** Takes the next chunk of the stream. */
  push(chunk: Uint8Array): void {
    const out: Uint8Array[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      out.push(this.#prefix, ...this.#pending, chunk.subarray(start, nl + 1));
      this.#pending = [];
      this.#pendingBytes = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.#pending.push(chunk.slice(start));
      this.#pendingBytes += chunk.length - start;
      if (this.#pendingBytes >= this.#maxLine) this.#takePending(out);
    }
    if (out.length > 0) this.#sink(concatBytes(out));
  }

  /** Emits an unfinished last line, newline-terminated. */
  flush(): void {
    const out: Uint8Array[] = [];
    this.#takePending(out);
    if (out.length > 0) this.#sink(concatBytes(out));
  }

  #takePending(out: Uint8Array[]): void {
    if (this.#pendingBytes === 0) return;
    out.push(this.#prefix, ...this.#pending, Uint8Array.of(NEWLINE));
    this.#pending = [];
    this.#pendingBytes = 0;
  }
}

/** A sink that writes all bytes synchronously to `file` (whole chunks, so lines stay whole); a closed pipe
 * ends the output silently instead of failing the run. */
export function fileSink(file: { writeSync(p: Uint8Array): number }): (bytes: Uint8Array) => void {
  let broken = false;
  return (bytes) => {
    let offset = 0;
    while (!broken && offset < bytes.length) {
      try {
        offset += file.writeSync(bytes.subarray(offset));
      } catch {
        broken = true;
      }
    }
  };
}

/** This process's stdout, as a sink. */
export const stdoutSink: (bytes: Uint8Array) => void = fileSink(Deno.stdout);
/** This process's stderr, as a sink. */
export const stderrSink: (bytes: Uint8Array) => void = fileSink(Deno.stderr);

/** The launcher's own messages: one line on stderr, prefixed `[launcher] ` (told apart from the ranks'). */
export function launcherLog(line: string): void {
  stderrSink(new TextEncoder().encode(`[launcher] ${line}\n`));
}

/** A stream being copied through a {@link LinePrefixer}; see {@link pump}. */
export interface Pump {
  /** Settles when the stream has ended (and the last line was flushed). */
  done: Promise<void>;
  /** Stops reading (a grandchild may hold the pipe open forever), flushes, and waits for {@link done}. */
  cancel(): Promise<void>;
}

/** Copies `stream` through `lines` until it ends or {@link Pump.cancel} is called. */
export function pump(stream: ReadableStream<Uint8Array>, lines: LinePrefixer): Pump {
  const reader = stream.getReader();
  const done = (async () => {
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        lines.push(value);
      }
    } catch { /* cancelled or broken */ }
    lines.flush();
  })();
  return {
    done,
    cancel: async () => {
      try {
        await reader.cancel();
      } catch { /* already closed */ }
      await done;
    },
  };
}
