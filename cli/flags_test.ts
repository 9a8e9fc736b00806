import assert from "node:assert/strict";
import { flags, parseFlagTable, usage } from "./flags.ts";
import { UsageError } from "./args.ts";

const TABLE = {
  name: flags.string({ section: "Things", help: "what to call it", default: "x", placeholder: "NAME" }),
  count: flags.int({ help: "how many", default: 3 }),
  start: flags.int({ help: "where from", default: 0, min: 0 }),
  limit: flags.optionalInt({ help: "at most", defaultText: "none" }),
  rate: flags.number({ section: "Speed", help: "how fast", default: 0.5, exclusiveMin: true }),
  mode: flags.choice({ help: "how", choices: ["fast", "slow"], default: "fast" }),
  backend: flags.optionalChoice({ help: "which", choices: ["a", "b"] }),
  dry: flags.boolean({ help: "do nothing", short: "n" }),
  note: flags.optionalString({ help: "a " + "long ".repeat(40) + "note" }),
};

Deno.test("flags: defaults, typed values and positionals", () => {
  const { values, positionals, help } = parseFlagTable(["pos"], TABLE);
  assert.deepEqual(values, {
    name: "x",
    count: 3,
    start: 0,
    limit: undefined,
    rate: 0.5,
    mode: "fast",
    backend: undefined,
    dry: false,
    note: undefined,
  });
  assert.deepEqual(positionals, ["pos"]);
  assert.equal(help, false);
  const given = parseFlagTable(
    [
      "--name",
      "y",
      "--count",
      "7",
      "--limit",
      "2",
      "--rate",
      "1e-3",
      "--mode",
      "slow",
      "--backend",
      "b",
      "-n",
    ],
    TABLE,
  ).values;
  assert.equal(given.name, "y");
  assert.equal(given.count, 7);
  assert.equal(given.limit, 2);
  assert.equal(given.rate, 1e-3);
  assert.equal(given.mode, "slow");
  assert.equal(given.backend, "b");
  assert.equal(given.dry, true);
  assert.equal(parseFlagTable(["-h"], TABLE).help, true);
});

Deno.test("flags: bad values are UsageErrors naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--count", "0"], /--count must be a positive integer, got "0"/],
    [["--count", "1.5"], /--count must be a positive integer/],
    [["--count", ""], /--count must be a positive integer/],
    [["--start=-1"], /--start must be an integer >= 0/],
    [["--rate", "0"], /--rate must be a number > 0/],
    [["--rate", "abc"], /--rate must be a number > 0/],
    [["--mode", "medium"], /--mode must be fast or slow, got "medium"/],
    [["--backend", "c"], /--backend must be a or b/],
    [["--bogus"], /Unknown option '--bogus'/],
  ];
  for (const [args, message] of cases) {
    assert.throws(
      () => parseFlagTable(args, TABLE),
      (e: unknown) => e instanceof UsageError && message.test(e.message),
    );
  }
});

Deno.test("flags: the usage lists every flag once, with its default, sections and wrapped help", () => {
  const text = usage("Usage: thing [options]", TABLE, "See also: other");
  const lines = text.split("\n");
  assert.equal(lines[0], "Usage: thing [options]");
  assert.ok(lines.includes("Things:") && lines.includes("Speed:"));
  assert.ok(lines.indexOf("Things:") < lines.findIndex((l) => l.startsWith("  --name NAME")));
  assert.match(text, /--count N {13}how many \(default 3\)/);
  assert.match(text, /--limit N {13}at most \(default none\)/);
  assert.match(text, /--mode fast\|slow {6}how \(default fast\)/);
  assert.match(text, /-n, --dry {13}do nothing\n/);
  assert.match(text, /-h, --help {12}this help/);
  for (const line of lines) assert.ok(line.length <= 108, `too long: ${line}`);
  assert.ok(lines.filter((l) => l.startsWith(" ".repeat(24) + "long")).length >= 1, "long help wraps");
  assert.equal(lines.at(-1), "See also: other");
});
