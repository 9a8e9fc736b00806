/**
 * Launcher test fixture: a "rank" that records the environment it was given, as JSON, in
 * `$FIXTURE_OUT/env-$RANK.json` (or on stdout without FIXTURE_OUT), then exits 0.
 * @module
 */

const env = Deno.env.toObject();
const json = JSON.stringify(env);
const dir = env.FIXTURE_OUT;
if (dir) {
  Deno.writeTextFileSync(`${dir}/env-${env.RANK ?? "unknown"}.json`, json);
  console.log(`env of rank ${env.RANK} written`);
} else {
  console.log(json);
}
