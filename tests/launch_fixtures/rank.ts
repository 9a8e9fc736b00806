/**
 * Launcher test fixture: a "rank" whose behaviour the flags choose. It first writes its pid to
 * `OUT/pid-$RANK` (and, with --spawn-child, the pid of a `sleep 60` child to `OUT/child-$RANK`), so a test
 * can check afterwards that nothing was left running.
 *
 *   --out DIR            where the pid files go (required)
 *   --fail-rank R        rank R exits with --code (default 3) after --after ms (default 500)
 *   --sigkill-rank R     rank R kills itself with SIGKILL after --after ms
 *   --sleep MS           every other rank sleeps MS, then exits 0 (default 0)
 *   --ignore-sigterm     ignore SIGTERM (only SIGKILL stops this rank)
 *   --spawn-child        start a `sleep 60` grandchild in the rank's process group
 *   --print N            write N numbered lines to stdout and stderr, each in several pieces, then an
 *                        unfinished last line ("tail R" without a newline) on stdout
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    out: { type: "string" },
    "fail-rank": { type: "string" },
    "sigkill-rank": { type: "string" },
    code: { type: "string", default: "3" },
    after: { type: "string", default: "500" },
    sleep: { type: "string", default: "0" },
    "ignore-sigterm": { type: "boolean" },
    "spawn-child": { type: "boolean" },
    print: { type: "string" },
  },
});

const rank = Deno.env.get("RANK") ?? "?";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const out = values.out;
if (!out) throw new Error("--out DIR is required");

if (values["ignore-sigterm"]) Deno.addSignalListener("SIGTERM", () => {});
if (values["spawn-child"]) {
  const child = new Deno.Command("sleep", { args: ["60"], stdout: "null", stderr: "null" }).spawn();
  Deno.writeTextFileSync(`${out}/child-${rank}`, String(child.pid));
}
// Written last, and atomically: a test that sees this file knows the setup above is done.
Deno.writeTextFileSync(`${out}/pid-${rank}.tmp`, String(Deno.pid));
Deno.renameSync(`${out}/pid-${rank}.tmp`, `${out}/pid-${rank}`);

const enc = new TextEncoder();
const write = (file: typeof Deno.stdout, text: string) => {
  const bytes = enc.encode(text);
  let offset = 0;
  while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
};

if (values.print) {
  for (let i = 0; i < Number(values.print); i++) {
    // Three writes per line, with pauses, so lines of different ranks overlap in time.
    write(Deno.stdout, `line ${i} `);
    write(Deno.stderr, `err ${i} `);
    await sleep(1);
    write(Deno.stdout, `of rank ${rank}`);
    write(Deno.stderr, `of rank ${rank}`);
    await sleep(1);
    write(Deno.stdout, ` ü\n`);
    write(Deno.stderr, `\n`);
  }
  write(Deno.stdout, `tail ${rank}`);
}

if (values["fail-rank"] === rank) {
  await sleep(Number(values.after));
  console.error(`rank ${rank} crashing with code ${values.code}`);
  Deno.exit(Number(values.code));
}
if (values["sigkill-rank"] === rank) {
  await sleep(Number(values.after));
  Deno.kill(Deno.pid, "SIGKILL");
}
await sleep(Number(values.sleep));
if (values["spawn-child"]) Deno.exit(0); // do not wait for the grandchild
