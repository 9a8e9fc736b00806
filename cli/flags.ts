/**
 * A flag table that parses the command line and prints its own usage, so each flag's name, meaning, default
 * and check is written once. The entry points (train, serve, predict, launch) declare a table with
 * {@link flags}, get typed values from {@link parseFlagTable} and their help text from {@link usage}.
 * @module
 */

import { parseFlags, UsageError } from "./args.ts";

/** One flag: how it reads, how it is described, and how its raw value becomes a typed one. */
export interface Flag<T> {
  readonly kind: "string" | "boolean";
  /** The value's placeholder in the usage (`N`, `DIR`); none for a boolean. */
  readonly placeholder?: string;
  /** One-letter alias (`-h`). */
  readonly short?: string;
  /** What the flag does, one or more sentences; wrapped to the terminal width of the usage. */
  readonly help: string;
  /** A heading printed before this flag in the usage (the first flag of each group has one). */
  readonly section?: string;
  /** How the default reads in the usage; undefined prints none. */
  readonly defaultText?: string;
  /** Raw value (undefined when absent) to the typed value; throws UsageError naming the flag. */
  readonly parse: (raw: string | boolean | undefined, name: string) => T;
}

interface Described {
  help: string;
  section?: string;
  placeholder?: string;
  short?: string;
}

/** A table of flags by long name (`"batch-size"`). */
export type FlagTable = Record<string, Flag<unknown>>;

/** The typed values a table parses to, by long name. */
export type FlagValues<T extends FlagTable> = { [K in keyof T]: T[K] extends Flag<infer V> ? V : never };

function flag<T>(
  kind: Flag<T>["kind"],
  d: Described,
  defaultText: string | undefined,
  parse: Flag<T>["parse"],
) {
  return { kind, ...d, defaultText, parse } satisfies Flag<T>;
}

const text = (value: unknown) => (typeof value === "string" ? value : String(value));

function int(name: string, raw: string, min: number): number {
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(n) || n < min) {
    throw new UsageError(
      `--${name} must be ${min === 1 ? "a positive integer" : `an integer >= ${min}`}, got "${raw}"`,
    );
  }
  return n;
}

function num(name: string, raw: string, min: number, exclusive: boolean): number {
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || n < min || (exclusive && n === min)) {
    throw new UsageError(`--${name} must be a number ${exclusive ? ">" : ">="} ${min}, got "${raw}"`);
  }
  return n;
}

/** Constructors for the flags of a table. */
export const flags = {
  /** An on/off switch, false unless given. */
  boolean(d: Omit<Described, "placeholder">): Flag<boolean> {
    return flag<boolean>("boolean", d, undefined, (raw) => raw === true);
  },

  /** A string with a default. */
  string(d: Described & { default: string; defaultText?: string }): Flag<string> {
    return flag<string>(
      "string",
      { placeholder: "VALUE", ...d },
      d.defaultText ?? d.default,
      (raw) => typeof raw === "string" ? raw : d.default,
    );
  },

  /** A string that may be absent (the caller decides what absent means; say it in `defaultText`). */
  optionalString(d: Described & { defaultText?: string }): Flag<string | undefined> {
    return flag<string | undefined>(
      "string",
      { placeholder: "VALUE", ...d },
      d.defaultText,
      (raw) => (typeof raw === "string" ? raw : undefined),
    );
  },

  /** An integer >= `min` (default 1) with a default. */
  int(d: Described & { default: number; min?: number; defaultText?: string }): Flag<number> {
    return flag<number>(
      "string",
      { placeholder: "N", ...d },
      d.defaultText ?? text(d.default),
      (raw, name) => (typeof raw === "string" ? int(name, raw, d.min ?? 1) : d.default),
    );
  },

  /** An integer >= `min` (default 1) that may be absent. */
  optionalInt(d: Described & { min?: number; defaultText?: string }): Flag<number | undefined> {
    return flag<number | undefined>(
      "string",
      { placeholder: "N", ...d },
      d.defaultText,
      (raw, name) => (typeof raw === "string" ? int(name, raw, d.min ?? 1) : undefined),
    );
  },

  /** A finite number >= `min` (default 0; > with `exclusiveMin`) with a default. */
  number(
    d: Described & { default: number; min?: number; exclusiveMin?: boolean; defaultText?: string },
  ): Flag<number> {
    return flag<number>(
      "string",
      { placeholder: "X", ...d },
      d.defaultText ?? text(d.default),
      (
        raw,
        name,
      ) => (typeof raw === "string" ? num(name, raw, d.min ?? 0, d.exclusiveMin ?? false) : d.default),
    );
  },

  /** One of a fixed list of words, with a default. */
  choice<const C extends string>(d: Described & { choices: readonly C[]; default: C }): Flag<C> {
    return flag<C>("string", { placeholder: d.choices.join("|"), ...d }, d.default, (raw, name) => {
      if (raw === undefined || raw === false || raw === true) return d.default;
      if (!(d.choices as readonly string[]).includes(raw)) {
        throw new UsageError(`--${name} must be ${d.choices.join(" or ")}, got "${raw}"`);
      }
      return raw as C;
    });
  },

  /** One of a fixed list of words, or absent. */
  optionalChoice<const C extends string>(
    d: Described & { choices: readonly C[]; defaultText?: string },
  ): Flag<C | undefined> {
    return flag<C | undefined>(
      "string",
      { placeholder: d.choices.join("|"), ...d },
      d.defaultText,
      (raw, name) => {
        if (typeof raw !== "string") return undefined;
        if (!(d.choices as readonly string[]).includes(raw)) {
          throw new UsageError(`--${name} must be ${d.choices.join(" or ")}, got "${raw}"`);
        }
        return raw as C;
      },
    );
  },
};

/** What {@link parseFlagTable} returns. */
export interface ParsedFlags<T extends FlagTable> {
  values: FlagValues<T>;
  positionals: string[];
  /** `-h`/`--help` was given: print the usage and exit 0. */
  help: boolean;
}

/**
 * Parses `args` against a table (strict: an unknown flag or a bad value is a UsageError naming it).
 * `-h`/`--help` is always accepted.
 */
export function parseFlagTable<T extends FlagTable>(args: string[], table: T): ParsedFlags<T> {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const [name, f] of Object.entries(table)) {
    options[name] = f.short ? { type: f.kind, short: f.short } : { type: f.kind };
  }
  const { values, positionals } = parseFlags(args, options);
  const raw = values as Record<string, string | boolean | undefined>;
  const parsed: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(table)) parsed[name] = f.parse(raw[name], name);
  return { values: parsed as FlagValues<T>, positionals, help: raw.help === true };
}

const HELP_COLUMN = 24;
const WIDTH = 108;

function wrap(words: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of words.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/**
 * The usage text of a table: `header` (the command line and what it does), then each flag with its
 * placeholder, help and default, grouped under the sections the table names, then `-h, --help`.
 */
export function usage(header: string, table: FlagTable, footer?: string): string {
  const out = [header.trimEnd(), ""];
  for (const [name, f] of Object.entries(table)) {
    if (f.section) out.push(`${f.section}:`);
    const left = `  ${f.short ? `-${f.short}, ` : ""}--${name}${f.placeholder ? ` ${f.placeholder}` : ""}`;
    const help = f.defaultText === undefined ? f.help : `${f.help} (default ${f.defaultText})`;
    const body = wrap(help, WIDTH - HELP_COLUMN);
    if (left.length < HELP_COLUMN - 1) {
      out.push(left.padEnd(HELP_COLUMN) + (body.shift() ?? ""));
    } else {
      out.push(left);
    }
    for (const line of body) out.push(" ".repeat(HELP_COLUMN) + line);
  }
  out.push("  -h, --help".padEnd(HELP_COLUMN) + "this help");
  if (footer) out.push("", footer.trimEnd());
  return out.join("\n");
}
