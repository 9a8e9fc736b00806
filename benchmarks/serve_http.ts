/**
 * Benchmark: the HTTP server end to end. DistriNews' `serve.ts` with dynamic batching, the same without
 * batching, and the reference design it replaces (FastAPI + uvicorn + PyTorch, benchmarks/serve_fastapi.py)
 * serve the same full-size DistilBERT checkpoint, one server at a time, each under a closed-loop load of
 * real AG News texts at several concurrencies (benchmarks/http_load.ts).
 *
 *   deno task bench:serve [--checkpoint DIR] [--data PATH]
 *     [--servers batched,unbatched,fastapi,batched-bf16,fastapi-bf16] [--concurrency 1,16,64]
 *     [--duration-s 20] [--warmup-s 3] [--rounds 2] [--out benchmarks/results]
 *
 * Without --checkpoint it writes a randomly initialised distilbert-base-uncased checkpoint (fixed seed,
 * with the bundled tokenizer) to a temporary folder: speed does not depend on what the weights learned.
 * Texts come from --data, else $DISTRINEWS_BENCH_DATA, else the 300-row fixture. Before any load, every
 * server's answers to a few texts are compared with FastAPI's (same label, probabilities within 1e-4; 2e-2
 * for the bf16 servers, which are compared with each other, never with the fp32 ones).
 * Prints a table and ratios and writes serve_http.md and .json with the hardware, versions and settings.
 * @module
 */

import { join, relative, resolve } from "node:path";
import { loadAgNewsCsv, loadAgNewsParquet, type NewsRecord } from "../data/ag_news.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { DISTILBERT_BASE_UNCASED } from "../model/config.ts";
import { cudaDeviceCount, DistilBertClassifier, getNumThreads, torchVersion } from "../ffi/model.ts";
import { saveCheckpoint } from "../weights/checkpoint.ts";
import { findFreePort } from "../launch.ts";
import { ROOT, venvPython } from "../tests/helpers.ts";
import { parseFlags, positiveInt, runCli, UsageError } from "../cli/args.ts";
import { exists } from "../util/fs.ts";
import { hardwareLine, median, writeResults } from "./common.ts";
import { type LoadResult, runLoad } from "./http_load.ts";

const USAGE = "Usage: deno task bench:serve [--checkpoint DIR] [--data PATH] [--servers LIST] " +
  "[--concurrency LIST] [--duration-s N] [--warmup-s N] [--rounds N] [--health-timeout-s N] [--out DIR]";
const HOST = "127.0.0.1";
const SEED = 0;
const FIXTURE = join(ROOT, "data", "fixtures", "ag_news_test_head300.csv");
/** Texts whose answers must agree across servers, and how closely. */
// fp32 servers must agree with FastAPI to float rounding; bf16 keeps 8 bits of mantissa, so its
// probabilities may move by ~1e-3 to 1e-2 (the labels must still agree on these texts).
const CHECK_TEXTS = 8, CHECK_TOLERANCE = 1e-4, CHECK_TOLERANCE_BF16 = 2e-2;
/** Combined stdout/stderr kept per server, for error messages. */
const TAIL_CHARS = 4000;

/** The servers this benchmark knows, by the name --servers uses. */
interface ServerSpec {
  title: string;
  /** Program and arguments that serve `checkpoint` on `port`. */
  command(checkpoint: string, port: number): string[];
}

const SERVERS_FP32: Record<string, ServerSpec> = {
  batched: {
    title: "DistriNews, batching (max-batch 64, max-wait 5 ms)",
    command: (dir, port) => [
      Deno.execPath(),
      ...["run", "-A", "serve.ts", "--checkpoint", dir, "--host", HOST, "--port", String(port)],
      ...["--max-batch", "64", "--max-wait-ms", "5"],
    ],
  },
  unbatched: {
    title: "DistriNews, no batching (max-batch 1)",
    command: (dir, port) => [
      Deno.execPath(),
      ...["run", "-A", "serve.ts", "--checkpoint", dir, "--host", HOST, "--port", String(port)],
      ...["--max-batch", "1"],
    ],
  },
  fastapi: {
    title: "FastAPI + uvicorn + PyTorch",
    command: (dir, port) => [
      venvPython(),
      ...["benchmarks/serve_fastapi.py", "--checkpoint", dir, "--host", HOST, "--port", String(port)],
    ],
  },
};

const SERVERS: Record<string, ServerSpec> = {
  ...SERVERS_FP32,
  // The same two designs in bf16 (autocast on both sides): a different precision, so never compared with
  // the fp32 rows as if it were the same job.
  "batched-bf16": {
    title: "DistriNews, batching, --bf16",
    command: (dir, port) => [...SERVERS_FP32.batched.command(dir, port), "--bf16"],
  },
  "fastapi-bf16": {
    title: "FastAPI + uvicorn + PyTorch, torch.autocast(bfloat16)",
    command: (dir, port) => [...SERVERS_FP32.fastapi.command(dir, port), "--bf16"],
  },
};

/** The response body both APIs return for POST /predict. */
interface Answer {
  label: string;
  label_id: number;
  confidence: number;
  probabilities: Record<string, number>;
}

/** One server under test, as a child process whose output is drained into a bounded tail. */
class ServerProcess {
  readonly child: Deno.ChildProcess;
  exited: Deno.CommandStatus | undefined;
  #tail = "";
  readonly #drained: Promise<unknown>;

  constructor(readonly name: string, argv: string[]) {
    this.child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child.status.then((s) => this.exited = s);
    // Both pipes must be read: a server blocked on a full pipe would look slow, not broken.
    const keep = (stream: ReadableStream<Uint8Array>) =>
      stream.pipeThrough(new TextDecoderStream()).pipeTo(
        new WritableStream({
          write: (text) => {
            this.#tail = (this.#tail + text).slice(-TAIL_CHARS);
          },
        }),
      );
    this.#drained = Promise.allSettled([keep(this.child.stdout), keep(this.child.stderr)]);
  }

  /** Waits for the pipes to be read to the end, but not for long: a grandchild could hold them open. */
  async #drain(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#drained, new Promise((r) => timer = setTimeout(r, 2000))]);
    clearTimeout(timer);
  }

  /** The last few thousand characters the server printed. */
  get tail(): string {
    return this.#tail.trimEnd() || "(no output)";
  }

  /** Polls GET /health until it answers 200; throws with the server's output if it exits or times out. */
  async waitHealthy(baseUrl: string, timeoutMs: number): Promise<number> {
    const start = performance.now();
    while (true) {
      if (this.exited) {
        await this.#drain();
        throw new Error(
          `${this.name} exited with code ${this.exited.code} before it was healthy. Its output:\n${this.tail}`,
        );
      }
      const ok = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(2000) })
        .then(async (res) => (await res.body?.cancel(), res.status === 200))
        .catch(() => false);
      if (ok) return performance.now() - start;
      if (performance.now() - start > timeoutMs) {
        throw new Error(
          `${this.name} did not answer GET /health with 200 within ${timeoutMs / 1000} s. Its output:\n` +
            this.tail,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.exited) {
      try {
        this.child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        console.error(`${this.name} ignored SIGTERM for ${graceMs / 1000} s; killing it`);
        try {
          this.child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, graceMs);
      await this.child.status;
      clearTimeout(timer);
    }
    await this.#drain();
  }
}

/** POSTs `texts` all at once (so a batching server batches them) and checks the shape of each answer. */
async function ask(url: string, texts: readonly string[]): Promise<Answer[]> {
  return await Promise.all(texts.map(async (text) => {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text }),
    });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`POST ${url} answered ${res.status}: ${body.slice(0, 300)}`);
    const a = JSON.parse(body) as Answer;
    if (
      typeof a.label !== "string" || typeof a.label_id !== "number" || typeof a.confidence !== "number" ||
      typeof a.probabilities !== "object" || a.probabilities === null
    ) {
      throw new Error(`POST ${url} answered an unexpected body: ${body.slice(0, 300)}`);
    }
    return a;
  }));
}

/** How one server's answers compare with the reference's, text by text. */
interface Agreement {
  server: string;
  reference: string;
  texts: number;
  sameLabels: number;
  maxProbabilityDiff: number;
  mismatches: { text: string; reference: string; label: string; maxDiff: number }[];
}

function compareAnswers(
  server: string,
  reference: string,
  texts: readonly string[],
  answers: Answer[],
  ref: Answer[],
  tolerance: number,
): Agreement {
  const out: Agreement = {
    server,
    reference,
    texts: texts.length,
    sameLabels: 0,
    maxProbabilityDiff: 0,
    mismatches: [],
  };
  texts.forEach((text, i) => {
    const a = answers[i], b = ref[i];
    const names = new Set([...Object.keys(a.probabilities), ...Object.keys(b.probabilities)]);
    // A class named on one side only makes the difference infinite: the label sets must match too.
    const diff = Math.max(
      ...[...names].map((n) =>
        n in a.probabilities && n in b.probabilities
          ? Math.abs(a.probabilities[n] - b.probabilities[n])
          : Infinity
      ),
    );
    out.maxProbabilityDiff = Math.max(out.maxProbabilityDiff, diff);
    const sameLabel = a.label === b.label && a.label_id === b.label_id;
    if (sameLabel) out.sameLabels++;
    if (!sameLabel || !(diff <= tolerance)) {
      out.mismatches.push({ text: text.slice(0, 60), reference: b.label, label: a.label, maxDiff: diff });
    }
  });
  return out;
}

function parseList(name: string, value: string): string[] {
  const items = value.split(",").map((s) => s.trim()).filter((s) => s);
  if (items.length === 0) throw new UsageError(`--${name} must not be empty`);
  return items;
}

async function loadTexts(path: string): Promise<NewsRecord[]> {
  return path.endsWith(".parquet") ? await loadAgNewsParquet(path) : await loadAgNewsCsv(path);
}

/** Writes the random full-size checkpoint the servers load, with the bundled tokenizer's files. */
async function makeCheckpoint(dir: string): Promise<void> {
  const config = { ...DISTILBERT_BASE_UNCASED, id2label: [...DISTILBERT_BASE_UNCASED.id2label] };
  using model = await DistilBertClassifier.create(config, { device: "cpu", seed: SEED });
  await saveCheckpoint(dir, model, { tokenizer: await BertTokenizer.bundled() });
}

/** Versions on the Python side, from the venv the FastAPI server runs in. */
async function pythonVersions(): Promise<Record<string, unknown>> {
  const script = "import json, platform, torch, transformers, fastapi, uvicorn, pydantic\n" +
    "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__, " +
    "'transformers': transformers.__version__, 'fastapi': fastapi.__version__, " +
    "'uvicorn': uvicorn.__version__, 'pydantic': pydantic.__version__, " +
    "'torch_threads': torch.get_num_threads(), 'cuda': torch.cuda.is_available()}))";
  const out = await new Deno.Command(venvPython(), { args: ["-c", script], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(
      `the venv lacks the FastAPI server's packages (run ./setup.sh):\n${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const ms = (x: number) => Number.isFinite(x) ? x.toFixed(1) : "—";
const ratio = (a: number, b: number) => Number.isFinite(a / b) && b > 0 ? (a / b).toFixed(2) : "—";

async function main() {
  const { values } = parseFlags(Deno.args, {
    checkpoint: { type: "string" },
    data: { type: "string" },
    servers: { type: "string", default: "batched,unbatched,fastapi,batched-bf16,fastapi-bf16" },
    concurrency: { type: "string", default: "1,16,64" },
    "duration-s": { type: "string" },
    "warmup-s": { type: "string" },
    rounds: { type: "string" },
    "health-timeout-s": { type: "string" },
    out: { type: "string", default: join("benchmarks", "results") },
  });
  const servers = parseList("servers", values.servers!);
  for (const s of servers) {
    if (!(s in SERVERS)) {
      throw new UsageError(`unknown server "${s}" (known: ${Object.keys(SERVERS).join(", ")})`);
    }
  }
  const concurrencies = parseList("concurrency", values.concurrency!).map((c) =>
    positiveInt("concurrency", c, 1)
  );
  const durationS = positiveInt("duration-s", values["duration-s"], 20);
  const warmupS = positiveInt("warmup-s", values["warmup-s"], 3);
  // This machine's speed drifts by 10-20% over minutes (a shared VM): every server runs in every round, the
  // order reversed each round, and the ratios are taken round by round, so drift cannot favour one side.
  const rounds = positiveInt("rounds", values.rounds, 2);
  const healthTimeoutS = positiveInt("health-timeout-s", values["health-timeout-s"], 180);
  if (servers.some((s) => s !== "fastapi") && !await exists(join(ROOT, "serve.ts"))) {
    throw new Error("serve.ts does not exist yet; benchmark FastAPI alone with --servers fastapi");
  }
  // FastAPI runs first, so that its answers are the reference every later server is checked against
  // before it is measured.
  servers.sort((a, b) => Number(b === "fastapi") - Number(a === "fastapi"));

  // Versions first: a venv without fastapi should fail now, not after the other servers have run.
  const hardware = await hardwareLine();
  const py = servers.includes("fastapi") ? await pythonVersions() : undefined;
  const ours = servers.some((s) => s !== "fastapi")
    ? { torch: await torchVersion(), threads: await getNumThreads(), gpus: await cudaDeviceCount() }
    : undefined;

  const dataPath = resolve(values.data ?? Deno.env.get("DISTRINEWS_BENCH_DATA") ?? FIXTURE);
  const records = await loadTexts(dataPath);
  if (records.length === 0) throw new Error(`${dataPath} holds no texts`);
  const texts = records.map((r) => r.text);
  const bodies = texts.map((text) => JSON.stringify({ text }));
  const tokenizer = await BertTokenizer.bundled();
  const lengths = texts.map((t) => tokenizer.encode(t, { maxLength: 512 }).ids.length);
  const meanTokens = lengths.reduce((s, n) => s + Math.min(n, 128), 0) / lengths.length;
  const truncated = lengths.filter((n) => n > 128).length;
  const dataLine = `${relative(ROOT, dataPath) || dataPath}: ${texts.length} AG News texts, ` +
    `${meanTokens.toFixed(1)} tokens on average after truncation to 128 (${truncated} truncated); ` +
    `each request is one text, sent in turn`;

  const tempDir = values.checkpoint
    ? undefined
    : await Deno.makeTempDir({ prefix: "distrinews-bench-serve-" });
  const results: {
    server: string;
    round: number;
    title: string;
    startupMs: number;
    loads: (LoadResult & { concurrency: number })[];
  }[] = [];
  const agreements: Agreement[] = [];
  try {
    let checkpoint: string;
    if (values.checkpoint) {
      checkpoint = resolve(values.checkpoint);
    } else {
      checkpoint = join(tempDir!, "distilbert-base-uncased-random");
      console.error(`writing a random distilbert-base-uncased checkpoint (seed ${SEED}) to ${checkpoint}`);
      await makeCheckpoint(checkpoint);
    }
    const checkTexts = texts.slice(0, CHECK_TEXTS);
    let reference: { server: string; answers: Answer[] } | undefined;

    for (let round = 1; round <= rounds; round++) {
      const order = round % 2 === 1 ? servers : [...servers].reverse();
      for (const name of order) {
        const spec = SERVERS[name];
        const port = findFreePort(HOST);
        const base = `http://${HOST}:${port}`;
        console.error(`round ${round}/${rounds}, ${name}: starting on port ${port}`);
        const server = new ServerProcess(name, spec.command(checkpoint, port));
        try {
          const startupMs = await server.waitHealthy(base, healthTimeoutS * 1000);
          console.error(`${name}: healthy after ${(startupMs / 1000).toFixed(1)} s`);
          const answers = await ask(`${base}/predict`, checkTexts);
          if (round > 1) {
            // Checked once per server, in the first round.
          } else if (reference) {
            const tolerance = name.endsWith("-bf16") ? CHECK_TOLERANCE_BF16 : CHECK_TOLERANCE;
            const agreement = compareAnswers(
              name,
              reference.server,
              checkTexts,
              answers,
              reference.answers,
              tolerance,
            );
            agreements.push(agreement);
            if (agreement.mismatches.length) {
              console.error(
                `WARNING: ${name} disagrees with ${reference.server} (tolerance ${tolerance}):`,
              );
              console.table(agreement.mismatches);
            }
          } else {
            reference = { server: name, answers };
          }
          const loads = [];
          for (const concurrency of concurrencies) {
            console.error(
              `${name}: concurrency ${concurrency}, ${warmupS} s warm-up + ${durationS} s measured`,
            );
            const r = await runLoad({
              url: `${base}/predict`,
              concurrency,
              durationMs: durationS * 1000,
              warmupMs: warmupS * 1000,
              bodies,
            });
            console.error(
              `  ${r.rps.toFixed(1)} req/s, p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, ${r.errors} errors` +
                (r.firstError ? ` (first: ${r.firstError})` : ""),
            );
            loads.push({ concurrency, ...r });
          }
          results.push({ server: name, round, title: spec.title, startupMs, loads });
        } finally {
          await server.stop();
        }
      }
    }
  } finally {
    if (tempDir) await Deno.remove(tempDir, { recursive: true });
  }

  const versions = [
    ours && `DistriNews libtorch ${ours.torch}`,
    `Deno ${Deno.version.deno}`,
    py && `Python ${py.python}, torch ${py.torch}, transformers ${py.transformers}, fastapi ${py.fastapi}, ` +
      `uvicorn ${py.uvicorn}, pydantic ${py.pydantic}`,
  ].filter(Boolean).join("; ");
  const settings = {
    servers,
    concurrencies,
    durationS,
    warmupS,
    rounds,
    checkpoint: values.checkpoint ?? `random distilbert-base-uncased (66M parameters, fp32, seed ${SEED})`,
    checkTexts: CHECK_TEXTS,
    checkTolerance: { fp32: CHECK_TOLERANCE, bf16: CHECK_TOLERANCE_BF16 },
  };
  const find = (server: string, c: number, round: number) =>
    results.find((r) => r.server === server && r.round === round)?.loads.find((l) => l.concurrency === c);

  const lines = [
    "# HTTP serving: DistriNews vs FastAPI + uvicorn + PyTorch",
    "",
    `Measured by \`deno task bench:serve\` (benchmarks/serve_http.ts) on ${
      new Date().toISOString().slice(0, 10)
    }.`,
    "",
    `- Hardware: ${hardware}`,
    `- Versions: ${versions}`,
    `- Model: ${settings.checkpoint}; each server's default device and thread count (${
      [
        ours && `libtorch default ${ours.threads} intra-op threads, ${ours.gpus} CUDA devices visible`,
        py && `Python torch ${py.torch_threads} threads, CUDA ${py.cuda ? "available" : "not available"}`,
      ].filter(Boolean).join("; ")
    })`,
    `- Data: ${dataLine}`,
    `- Servers, one at a time on ${HOST}, in ${rounds} round(s), the order reversed each round: ${
      results.filter((r) => r.round === 1).map((r) => `${r.server} = ${r.title}`).join("; ")
    }. ` +
    "FastAPI: one uvicorn worker, a sync endpoint (FastAPI's threadpool), one forward pass per request, " +
    "access log off",
    `- Load: closed loop (benchmarks/http_load.ts), N clients each sending its next request when the last ` +
    `answer is in, keep-alive; per concurrency ${warmupS} s warm-up, then ${durationS} s measured. ` +
    "Throughput counts answers completed in the window; latencies are of requests that started and ended in it. " +
    "The load generator runs on the same machine and takes its share of the cores",
    `- Agreement with ${
      results[0]?.server ?? "—"
    } on ${CHECK_TEXTS} texts sent at once (same label; |Δp| within ` +
    `${CHECK_TOLERANCE} for fp32, ${CHECK_TOLERANCE_BF16} for bf16): ` +
    (agreements.length
      ? agreements.map((a) =>
        `${a.server} ${a.sameLabels}/${a.texts} same labels, max |Δp| ${
          a.maxProbabilityDiff.toExponential(1)
        }` +
        (a.mismatches.length ? " (MISMATCH)" : "")
      ).join("; ")
      : "nothing to compare"),
    "",
    "| server | round | concurrency | req/s | p50 ms | p95 ms | p99 ms | mean ms | requests | errors |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...[...results].sort((a, b) => servers.indexOf(a.server) - servers.indexOf(b.server) || a.round - b.round)
      .flatMap((r) =>
        r.loads.map((l) =>
          `| ${r.server} | ${r.round} | ${l.concurrency} | ${l.rps.toFixed(1)} | ${ms(l.p50)} | ${
            ms(l.p95)
          } | ${ms(l.p99)} | ` +
          `${ms(l.mean)} | ${l.requests} | ${l.errors} |`
        )
      ),
    "",
  ];
  const pairs: [string, string, string][] = [
    ["batched", "fastapi", "DistriNews batched / FastAPI"],
    ["batched", "unbatched", "batching on / off"],
    ["batched-bf16", "fastapi-bf16", "both bf16: DistriNews batched / FastAPI"],
  ];
  const roundList = Array.from({ length: rounds }, (_, i) => i + 1);
  const ratioRows = pairs.flatMap(([a, b, what]) =>
    concurrencies.flatMap((c) => {
      const per = roundList.flatMap((round) => {
        const x = find(a, c, round), y = find(b, c, round);
        return x && y ? [{ rps: x.rps / y.rps, p99: x.p99 / y.p99 }] : [];
      });
      if (per.length === 0) return [];
      const show = (xs: number[]) => xs.map((x) => ratio(x, 1)).join(", ");
      return [
        `| ${what} | ${c} | ${show(per.map((p) => p.rps))} | ${ratio(median(per.map((p) => p.rps)), 1)} | ` +
        `${show(per.map((p) => p.p99))} | ${ratio(median(per.map((p) => p.p99)), 1)} |`,
      ];
    })
  );
  if (ratioRows.length) {
    lines.push(
      "Ratios: throughput above 1 and p99 below 1 favour the first server.",
      "",
      "| comparison | concurrency | req/s ratio by round | req/s ratio, median | p99 ratio by round | p99 ratio, median |",
      "|---|---:|---:|---:|---:|---:|",
      ...ratioRows,
      "",
    );
  }
  const failures = results.flatMap((r) =>
    r.loads.filter((l) => l.firstError).map((l) =>
      `- ${r.server} (round ${r.round}) at ${l.concurrency}: ${l.firstError}`
    )
  );
  if (failures.length) lines.push("First error per run:", "", ...failures, "");
  console.log(lines.join("\n"));

  const { md, json } = await writeResults(values.out!, "serve_http", lines.join("\n"), {
    date: new Date().toISOString(),
    hardware,
    versions: { deno: Deno.version.deno, ours, python: py },
    data: { path: relative(ROOT, dataPath) || dataPath, texts: texts.length, meanTokens, truncated },
    settings,
    agreements,
    results,
  });
  console.error(`wrote ${md} and ${json}`);
}

if (import.meta.main) await runCli(USAGE, main);
