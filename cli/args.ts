/**
 * Small helpers shared by the command-line entry points: flag parsing with clear errors and a uniform
 * way to fail (message on stderr, non-zero exit, never a stack trace for a user's mistake).
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** A mistake in how the command was called: printed with the usage, exit code 2. */
export class UsageError extends Error {}

/** Parses `args` with node:util's parseArgs (strict: unknown flags are errors), as UsageError on failure. */
export function parseFlags<T extends ParseArgsConfig["options"]>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

/** Parses a flag value as a positive integer, or throws a UsageError naming the flag. */
export function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new UsageError(`--${name} must be a positive integer, got "${value}"`);
  }
  return n;
}

/** Parses a flag value as a finite number >= 0, or throws a UsageError naming the flag. */
export function nonNegativeNumber(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number >= 0, got "${value}"`);
  return n;
}

/** Runs a CLI body: prints errors without stack traces and exits 2 for usage errors, 1 otherwise. */
export async function runCli(usage: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (err instanceof UsageError) {
      console.error(`error: ${message}\n\n${usage}`);
      Deno.exit(2);
    }
    console.error(`error: ${message}`);
    Deno.exit(1);
  }
}
