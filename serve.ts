/**
 * `deno task serve [--checkpoint DIR] [--host H] [--port P] [--device D]`: the inference server. Loads
 * the model and tokenizer once, then serves the Hono app from server/app.ts with Deno.serve. SIGTERM or
 * SIGINT drains: new predictions are refused with 503, those in flight are answered, then the process exits
 * 0. The flags are in server/options.ts.
 * @module
 */

import { createHash } from "node:crypto";
import { TextClassifier } from "./inference/text_classifier.ts";
import { resolveDevice, setNumThreads, torchVersion } from "./ffi/model.ts";
import { runCli } from "./cli/args.ts";
import { defaultCheckpoint } from "./model/checkpoints.ts";
import { createApp } from "./server/app.ts";
import { ServerMetrics } from "./server/metrics.ts";
import { parseServeOptions, SERVE_USAGE } from "./server/options.ts";
import { BatchedPredictor } from "./server/predictor.ts";
import { healthReporter } from "./server/health.ts";
import denoConfig from "./deno.json" with { type: "json" };

function log(message: string): void {
  console.error(`[serve] ${message}`);
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

async function main(args: string[]): Promise<void> {
  const options = parseServeOptions(args, Deno.env.get("PORT"));
  if (!options) return console.log(SERVE_USAGE);
  const { limits, drainTimeoutMs } = options;
  const { maxBatchSize, maxWaitMs, bf16 } = options.predictor;
  if (options.threads !== undefined) await setNumThreads(options.threads);
  const deviceIndex = await resolveDevice(options.device);

  // Everything that can fail on a bad checkpoint happens before the port opens: a server that listens is
  // a server that can answer.
  const started = performance.now();
  const classifier = await TextClassifier.load(options.checkpoint ?? await defaultCheckpoint(), {
    device: options.device,
  });
  const { files, model } = classifier;
  const weightsSha256 = await sha256File(files.weightsPath);
  const parameters = model.parameterCount();
  const device = deviceIndex < 0 ? "cpu" : `cuda:${deviceIndex}`;
  log(
    `loaded ${files.weightsPath} (sha256 ${weightsSha256.slice(0, 12)}…, ${(parameters / 1e6).toFixed(1)}M ` +
      `parameters, labels ${classifier.labels.join(", ")}) on ${device} (${bf16 ? "bf16" : "fp32"}) in ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s`,
  );
  log(
    classifier.bundledTokenizer
      ? `tokenizer: bundled BERT uncased vocabulary (${files.dir} has no vocab.txt)`
      : `tokenizer: ${files.dir}/vocab.txt`,
  );
  const metrics = new ServerMetrics();
  const predictor = new BatchedPredictor(classifier, options.predictor, {
    onBatch: (size, ms) => {
      metrics.batchSize.observe(size);
      metrics.forwardSeconds.observe(ms / 1000);
    },
  });
  metrics.gauge("distrinews_queue_depth", "Texts waiting for a batch.", () => predictor.stats().queued);
  metrics.gauge(
    "distrinews_in_flight",
    "Texts accepted and not yet answered.",
    () => predictor.stats().inFlight,
  );
  const bootedAt = performance.now();
  metrics.gauge(
    "distrinews_uptime_seconds",
    "Seconds since the server started.",
    () => (performance.now() - bootedAt) / 1000,
  );

  let draining = false;
  const health = healthReporter({
    predictor,
    device,
    weightsSha256,
    limits,
    versions: { distrinews: denoConfig.version, torch: await torchVersion(), deno: Deno.version.deno },
    bootedAt,
    draining: () => draining,
  });
  const app = createApp({
    predictor,
    metrics,
    limits,
    health,
    version: denoConfig.version,
    draining: () => draining,
    logError: (line) => log(line),
  });

  const server = Deno.serve({
    hostname: options.host,
    port: options.port,
    onListen: ({ hostname, port }) => {
      const shown = hostname.includes(":") ? `[${hostname}]` : hostname;
      log(
        `listening on http://${shown}:${port} (batching: up to ${maxBatchSize} texts, ${maxWaitMs} ms wait)`,
      );
    },
  }, app.fetch);

  const stop = async (signal: string) => {
    if (draining) {
      log(`${signal} again: exiting without waiting`);
      Deno.exit(1);
    }
    draining = true;
    log(`${signal}: draining ${predictor.stats().inFlight} text(s) in flight, refusing new work`);
    const timer = setTimeout(() => {
      log(`requests still in flight after ${drainTimeoutMs / 1000} s; exiting anyway`);
      Deno.exit(1);
    }, drainTimeoutMs);
    // The predictor stops waiting for company (little more will come) but still accepts: a request whose
    // body was being read when the signal came is answered too. Deno's shutdown stops accepting
    // connections and waits for the handlers in flight; then the predictor is closed and the model freed.
    predictor.drain();
    await server.shutdown();
    await predictor.close();
    clearTimeout(timer);
    classifier.dispose();
    log("stopped");
    Deno.exit(0);
  };
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => void stop(signal));
  }
  await server.finished;
}

if (import.meta.main) await runCli(SERVE_USAGE, () => main(Deno.args));
