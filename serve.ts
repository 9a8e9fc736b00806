/**
 * `deno task serve [--checkpoint DIR] [--host H] [--port P] [--device D]`: the inference server. Loads
 * the model and tokenizer once, then serves the Hono app from server/app.ts with Deno.serve. SIGTERM or SIGINT drains:
 * new predictions are refused with 503, those in flight are answered, then the process exits 0.
 * @module
 */

import { createHash } from "node:crypto";
import { TextClassifier } from "./inference/text_classifier.ts";
import { resolveDevice, setNumThreads, torchVersion } from "./ffi/model.ts";
import { nonNegativeNumber, parseFlags, positiveInt, runCli, UsageError } from "./cli/args.ts";
import { DEFAULT_CHECKPOINT_HELP, defaultCheckpoint } from "./model/checkpoints.ts";
import { createApp } from "./server/app.ts";
import { ServerMetrics } from "./server/metrics.ts";
import { BatchedPredictor } from "./server/predictor.ts";
import { DEFAULT_LIMITS, type RequestLimits } from "./server/schemas.ts";
import { healthReporter } from "./server/health.ts";
import denoConfig from "./deno.json" with { type: "json" };

const USAGE = `Usage: deno task serve [options]

Serves the classifier over HTTP: POST /predict, GET /health, /metrics, /openapi.json, and a page at /.

Options:
  --checkpoint SRC      checkpoint directory or weights file, or a Hugging Face model id of a fine-tuned
                        DistilBERT (default ${DEFAULT_CHECKPOINT_HELP})
  --host HOST           interface to listen on (default 127.0.0.1; 0.0.0.0 in a container)
  --port N              port (default $PORT, else 7860, the Hugging Face Spaces port)
  --device DEV          auto | cpu | cuda | cuda:N (default auto: CUDA when available)
  --max-batch N         most texts per batch; 1 turns dynamic batching off (default 64)
  --max-wait-ms MS      longest a batch waits for company once the model is free (default 5)
  --max-queue N         texts waiting before requests get 503; at least --max-texts (default 1024)
  --max-length N        tokens per text, longer texts are truncated (default 128, at most the
                        model's max_position_embeddings)
  --max-text-chars N    longest accepted text, characters (default ${DEFAULT_LIMITS.maxTextChars})
  --max-texts N         most texts in one {"texts": [...]} request (default ${DEFAULT_LIMITS.maxTexts})
  --max-body-bytes N    largest request body (default ${DEFAULT_LIMITS.maxBodyBytes})
  --bf16                bf16 autocast: on CPUs with AMX or AVX-512-BF16 and on GPUs, batches run
                        faster (2.5x in process on a 2-vCPU Xeon); probabilities move slightly
                        (up to 5e-4 in the benchmark's check) (default: fp32)
  --threads N           libtorch intra-op threads (default: libtorch's choice)
  --drain-timeout-s N   on SIGTERM, longest wait for requests in flight (default 30); a second
                        signal exits at once
  -h, --help            this help`;

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
  const { values, positionals } = parseFlags(args, {
    checkpoint: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    device: { type: "string", default: "auto" },
    "max-batch": { type: "string" },
    "max-wait-ms": { type: "string" },
    "max-queue": { type: "string" },
    "max-length": { type: "string" },
    "max-text-chars": { type: "string" },
    "max-texts": { type: "string" },
    "max-body-bytes": { type: "string" },
    threads: { type: "string" },
    bf16: { type: "boolean", default: false },
    "drain-timeout-s": { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return console.log(USAGE);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  // An empty PORT counts as unset; anything else must be a decimal port number.
  const portText = values.port ?? (Deno.env.get("PORT") || undefined);
  const port = portText === undefined ? 7860 : /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new UsageError(`the port must be an integer in 0..65535, got "${portText}"`);
  }
  const limits: RequestLimits = {
    maxTextChars: positiveInt("max-text-chars", values["max-text-chars"], DEFAULT_LIMITS.maxTextChars),
    maxTexts: positiveInt("max-texts", values["max-texts"], DEFAULT_LIMITS.maxTexts),
    maxBodyBytes: positiveInt("max-body-bytes", values["max-body-bytes"], DEFAULT_LIMITS.maxBodyBytes),
  };
  const maxBatchSize = positiveInt("max-batch", values["max-batch"], 64);
  const maxWaitMs = nonNegativeNumber("max-wait-ms", values["max-wait-ms"], 5);
  const maxQueue = positiveInt("max-queue", values["max-queue"], 1024);
  const maxLength = positiveInt("max-length", values["max-length"], 128);
  if (maxLength < 3) {
    throw new UsageError(`--max-length must be at least 3 ([CLS], one token, [SEP]), got ${maxLength}`);
  }
  if (maxQueue < limits.maxTexts) {
    throw new UsageError(
      `--max-queue (${maxQueue}) must be at least --max-texts (${limits.maxTexts}), or a full request could never be queued`,
    );
  }
  const drainTimeoutMs = 1000 * nonNegativeNumber("drain-timeout-s", values["drain-timeout-s"], 30);
  if (values.threads !== undefined) await setNumThreads(positiveInt("threads", values.threads, 1));
  const deviceIndex = await resolveDevice(values.device!);

  // Everything that can fail on a bad checkpoint happens before the port opens: a server that listens is
  // a server that can answer.
  const started = performance.now();
  const classifier = await TextClassifier.load(values.checkpoint ?? await defaultCheckpoint(), {
    device: values.device,
  });
  const { files, model } = classifier;
  const weightsSha256 = await sha256File(files.weightsPath);
  const parameters = model.parameterCount();
  const device = deviceIndex < 0 ? "cpu" : `cuda:${deviceIndex}`;
  log(
    `loaded ${files.weightsPath} (sha256 ${weightsSha256.slice(0, 12)}…, ${(parameters / 1e6).toFixed(1)}M ` +
      `parameters, labels ${classifier.labels.join(", ")}) on ${device} (${
        values.bf16 ? "bf16" : "fp32"
      }) in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  log(
    classifier.bundledTokenizer
      ? `tokenizer: bundled BERT uncased vocabulary (${files.dir} has no vocab.txt)`
      : `tokenizer: ${files.dir}/vocab.txt`,
  );
  const metrics = new ServerMetrics();
  const predictor = new BatchedPredictor(classifier, {
    maxBatchSize,
    maxWaitMs,
    maxQueue,
    maxLength,
    bf16: values.bf16,
  }, {
    onBatch: (size, ms) => {
      metrics.batchSize.observe(size);
      metrics.forwardSeconds.observe(ms / 1000);
    },
  });
  metrics.gauge("distrinews_queue_depth", "Texts waiting for a batch.", () => predictor.batcher.queued);
  metrics.gauge(
    "distrinews_in_flight",
    "Texts accepted and not yet answered.",
    () => predictor.batcher.inFlight,
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
    hostname: values.host,
    port,
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
    log(`${signal}: draining ${predictor.batcher.inFlight} text(s) in flight, refusing new work`);
    const timer = setTimeout(() => {
      log(`requests still in flight after ${drainTimeoutMs / 1000} s; exiting anyway`);
      Deno.exit(1);
    }, drainTimeoutMs);
    // The batcher stops waiting for company (little more will come) but still accepts: a request whose
    // body was being read when the signal came is answered too. Deno's shutdown stops accepting
    // connections and waits for the handlers in flight; then the batcher is closed and the model freed.
    predictor.flushFromNowOn();
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

if (import.meta.main) await runCli(USAGE, () => main(Deno.args));
