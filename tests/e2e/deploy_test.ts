// The deployment files, checked by machines rather than by eye: every manifest under deploy/k8s decoded
// strictly into Kubernetes' (and the operators') own Go API types by deploy/validate, and the GitHub
// workflows linted by actionlint. Each check is also shown to fail, naming the culprit, on a broken copy:
// a check that cannot fail proves nothing.
//
// The tools are Go programs pinned in deploy/validate/go.mod (the validator, actionlint, and kustomize, which
// renders the serving kustomization as `kubectl apply -k` would), built once per run: .ci/run builds them
// and passes their paths in DISTRINEWS_K8S_VALIDATE, DISTRINEWS_ACTIONLINT and DISTRINEWS_KUSTOMIZE;
// without those, this file builds them itself (Go 1.26+ needed; modules come from the Go module proxy).
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { ROOT } from "../helpers.ts";

const VALIDATE_MODULE = join(ROOT, "deploy", "validate");
const K8S = join(ROOT, "deploy", "k8s");
const WORKFLOWS = join(ROOT, ".github", "workflows");
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

// Built tools and broken copies, all in one folder, removed when the tests end.
const TMP = await Deno.makeTempDir({ prefix: "distrinews-deploy-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(TMP, { recursive: true }));
/** A new empty folder under TMP. */
const tempDir = () => Deno.makeTempDir({ dir: TMP });

/** The tools: the variable that may name a built binary, and the package in deploy/validate's module. */
const TOOLS = {
  validate: { env: "DISTRINEWS_K8S_VALIDATE", pkg: "." },
  actionlint: { env: "DISTRINEWS_ACTIONLINT", pkg: "github.com/rhysd/actionlint/cmd/actionlint" },
  kustomize: { env: "DISTRINEWS_KUSTOMIZE", pkg: "sigs.k8s.io/kustomize/kustomize/v5" },
};
type Tools = Record<keyof typeof TOOLS, string>;

/**
 * The Go command: $DISTRINEWS_GO, else `go` on PATH or where Go's own tarball puts it; else an error that
 * says what to do.
 */
async function findGo(): Promise<string> {
  const chosen = Deno.env.get("DISTRINEWS_GO");
  for (const candidate of chosen ? [chosen] : ["go", "/usr/local/go/bin/go"]) {
    try {
      const out = await new Deno.Command(candidate, { args: ["version"], stdout: "null", stderr: "null" })
        .output();
      if (out.success) return candidate;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  throw new Error(
    "Go is not installed, and the deploy checks need it: they build deploy/validate (manifests against " +
      "Kubernetes' API types), kustomize and actionlint (the workflows), pinned in deploy/validate/go.mod. " +
      "Install Go " +
      "1.26+ (https://go.dev/dl/), or name built binaries in " +
      Object.values(TOOLS).map((t) => t.env).join(", "),
  );
}

let tools: Promise<Tools> | undefined;

/** The tools' binaries, built at most once per test run (not at all when the environment names them). */
function getTools(): Promise<Tools> {
  tools ??= (async () => {
    const names = Object.keys(TOOLS) as (keyof Tools)[];
    const given = Object.fromEntries(names.map((name) => [name, Deno.env.get(TOOLS[name].env)]));
    if (names.every((name) => given[name])) return given as Tools;
    const go = await findGo();
    const dir = await tempDir();
    const built = Object.fromEntries(names.map((name) => [name, join(dir, name)])) as Tools;
    for (const name of names) {
      const out = await new Deno.Command(go, {
        args: ["build", "-o", built[name], TOOLS[name].pkg],
        cwd: VALIDATE_MODULE,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        throw new Error(`go build ${TOOLS[name].pkg} (in deploy/validate) failed:\n${decode(out.stderr)}`);
      }
    }
    return built;
  })();
  return tools;
}

interface Result {
  code: number;
  stdout: string;
  /** stdout and stderr together. */
  output: string;
}

async function run(command: string, args: string[], cwd = ROOT): Promise<Result> {
  const out = await new Deno.Command(command, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const stdout = decode(out.stdout);
  return { code: out.code, stdout, output: stdout + decode(out.stderr) };
}

/** Runs the manifest validator on `paths`. */
async function validate(...paths: string[]): Promise<Result> {
  return run((await getTools()).validate, paths);
}

/** Every *.yaml / *.yml below `dir`, relative to it. */
async function yamlFiles(dir: string, prefix = ""): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) files.push(...await yamlFiles(dir, rel));
    else if (/\.ya?ml$/.test(entry.name)) files.push(rel);
  }
  return files.sort();
}

/**
 * `source` with `from` replaced by `to`. A replacement that finds nothing is an error: after an edit of
 * the manifests, a broken copy that is not broken would make its test pass for the wrong reason.
 */
function edit(source: string, from: string | RegExp, to: string): string {
  const edited = source.replace(from, to);
  assert.notEqual(edited, source, `the broken copy's edit found no ${from} to replace`);
  return edited;
}

/** A copy of deploy/k8s/`rel` in a temporary folder, with `change` applied; returns the copy's path. */
async function brokenCopy(rel: string, change: (text: string) => string): Promise<string> {
  const dir = await tempDir();
  const path = join(dir, basename(rel));
  await Deno.writeTextFile(path, change(await Deno.readTextFile(join(K8S, rel))));
  return path;
}

/** Asserts that the validator rejects `path`, with a message that names the file, the document and `what`. */
async function assertRejected(path: string, document: string, ...what: (string | RegExp)[]): Promise<string> {
  const { code, output } = await validate(path);
  assert.equal(code, 1, `the validator accepted a broken manifest:\n${output}`);
  const failures = output.split("\n").filter((line) => line.startsWith("FAIL"));
  assert.ok(failures.length > 0, output);
  const line = failures.find((l) => what.every((w) => typeof w === "string" ? l.includes(w) : w.test(l)));
  assert.ok(line, `no failure names ${what.join(" and ")}:\n${output}`);
  assert.ok(line.includes(`${path}:`), `the failure does not name the file:\n${line}`);
  assert.ok(line.includes(document), `the failure does not name ${document}:\n${line}`);
  return line;
}

Deno.test("deploy/k8s: every manifest decodes strictly into its API type and passes the checks", async () => {
  const { code, output } = await validate(K8S);
  assert.equal(code, 0, output);
  const files = await yamlFiles(K8S);
  for (const file of files) {
    assert.ok(output.includes(join(K8S, file)), `${file} was not validated:\n${output}`);
  }
  const kinds = [
    "apps/v1 Deployment",
    "v1 Service",
    "autoscaling/v2 HorizontalPodAutoscaler",
    "policy/v1 PodDisruptionBudget",
    "monitoring.coreos.com/v1 ServiceMonitor",
    "kustomize.config.k8s.io/v1beta1 Kustomization",
    "v1 PersistentVolumeClaim",
    "kubeflow.org/v1 PyTorchJob",
    "batch/v1 Job",
  ];
  const lines = output.split("\n").map((line) => `${line} `);
  for (const kind of kinds) {
    assert.ok(lines.some((line) => line.includes(` ${kind} `)), `no ${kind} among the manifests:\n${output}`);
  }
  assert.match(output, /\n\d+ document\(s\) in \d+ file\(s\), 0 problem\(s\)\n$/);
});

Deno.test("validator: an unknown field fails, naming its path", async () => {
  const path = await brokenCopy(
    "serving/deployment.yaml",
    (s) => edit(s, "\n  replicas: 2\n", "\n  replicas: 2\n  replica: 3\n"),
  );
  await assertRejected(path, 'document 1 (Deployment "distrinews")', 'unknown field "spec.replica"');
  // Deep inside the pod template too, and case-sensitively, as the API server decodes.
  const deep = await brokenCopy(
    "serving/deployment.yaml",
    (s) => edit(s, "imagePullPolicy: IfNotPresent", "ImagePullPolicy: IfNotPresent"),
  );
  await assertRejected(
    deep,
    "document 1",
    'unknown field "spec.template.spec.containers[0].ImagePullPolicy"',
  );
});

Deno.test("validator: a wrong type fails, naming the field and the type", async () => {
  const path = await brokenCopy("serving/deployment.yaml", (s) => edit(s, "replicas: 2", 'replicas: "two"'));
  await assertRejected(path, "document 1", "spec.replicas", "cannot unmarshal string", "int32");
  // An env value must be a string: YAML's unquoted 1 is an int.
  const env = await brokenCopy("serving/deployment.yaml", (s) => edit(s, 'value: "1"', "value: 1"));
  await assertRejected(env, "document 1", "spec.template.spec.containers.env.value", "of type string");
});

Deno.test("validator: a duplicate key fails, as kubectl would", async () => {
  const path = await brokenCopy(
    "serving/deployment.yaml",
    (s) => edit(s, "\n  replicas: 2\n", "\n  replicas: 2\n  replicas: 3\n"),
  );
  await assertRejected(path, "document 1", /key "replicas" already set/);
});

Deno.test("validator: a missing required field fails, naming it", async () => {
  const image = await brokenCopy(
    "serving/deployment.yaml",
    (s) => edit(s, /\n +image: distrinews:latest\n/, "\n"),
  );
  await assertRejected(image, "document 1", "spec.template.spec.containers[0].image: required");
  // The second document of a file is named as such.
  const completions = await brokenCopy(
    "training/indexed-job.yaml",
    (s) => edit(s, "\n  completions: 2\n", "\n"),
  );
  await assertRejected(
    completions,
    'document 2 (Job "distrinews-ddp")',
    "spec.completions: required with completionMode Indexed",
  );
  const probe = await brokenCopy(
    "serving/deployment.yaml",
    (s) => edit(s, "path: /openapi.json", "path: openapi.json"),
  );
  await assertRejected(probe, "document 1", "spec.template.spec.containers[0].livenessProbe.httpGet.path");
});

Deno.test("validator: an unknown kind or apiVersion fails, listing the known ones", async () => {
  const kind = await brokenCopy(
    "serving/deployment.yaml",
    (s) => edit(s, "kind: Deployment", "kind: Deploymnet"),
  );
  const line = await assertRejected(kind, "document 1", 'unknown kind "Deploymnet" in apiVersion "apps/v1"');
  assert.match(line, /known: .*apps\/v1\/Deployment/);
  const version = await brokenCopy(
    "serving/hpa.yaml",
    (s) => edit(s, "autoscaling/v2", "autoscaling/v2beta1"),
  );
  await assertRejected(version, "document 1", 'in apiVersion "autoscaling/v2beta1"');
});

Deno.test("validator: the operators' rules (PyTorchJob, ServiceMonitor)", async () => {
  const pytorch = await brokenCopy(
    "training/pytorchjob.yaml",
    (s) => edit(s, "- name: pytorch", "- name: trainer"),
  );
  await assertRejected(
    pytorch,
    'document 1 (PyTorchJob "distrinews-train")',
    'spec.pytorchReplicaSpecs.Master.template.spec.containers: a container named "pytorch" is required',
  );
  const master = await brokenCopy(
    "training/pytorchjob.yaml",
    (s) => edit(s, /(Master:\n\s+replicas:) 1/, "$1 2"),
  );
  await assertRejected(master, "document 1", "spec.pytorchReplicaSpecs.Master.replicas: must be 1");
  const monitor = await brokenCopy(
    "serving/servicemonitor.yaml",
    (s) => edit(s, /- port: http\n\s+path:/, "- path:"),
  );
  await assertRejected(
    monitor,
    "document 1",
    "spec.endpoints[0]: port (a Service port's name) or targetPort",
  );
});

Deno.test("validator: a kustomization fails on a missing or an unlisted manifest", async () => {
  const dir = await tempDir();
  for (const file of await yamlFiles(join(K8S, "serving"))) {
    await Deno.copyFile(join(K8S, "serving", file), join(dir, file));
  }
  await Deno.remove(join(dir, "hpa.yaml"));
  await Deno.writeTextFile(
    join(dir, "extra.yaml"),
    await Deno.readTextFile(join(K8S, "serving", "pdb.yaml")),
  );
  const { code, output } = await validate(dir);
  assert.equal(code, 1, output);
  const kustomization = join(dir, "kustomization.yaml");
  assert.match(
    output,
    new RegExp(`FAIL  ${kustomization}:\\d+: .*resources\\[2\\]: "hpa.yaml" does not exist`),
  );
  assert.match(
    output,
    new RegExp(`FAIL  ${kustomization}:\\d+: .*extra.yaml is in the kustomization's folder`),
  );
});

Deno.test("deploy/k8s/serving: kustomize renders it, and the rendered objects validate", async () => {
  const { code, stdout, output } = await run((await getTools()).kustomize, ["build", join(K8S, "serving")]);
  assert.equal(code, 0, output);
  const rendered = join(await tempDir(), "rendered.yaml");
  await Deno.writeTextFile(rendered, stdout);
  const checked = await validate(rendered);
  assert.equal(checked.code, 0, checked.output);
  for (
    const kind of [
      "Deployment",
      "Service",
      "HorizontalPodAutoscaler",
      "PodDisruptionBudget",
      "ServiceMonitor",
    ]
  ) {
    assert.match(checked.output, new RegExp(` ${kind} "distrinews"\n`), `${kind} not rendered:\n${stdout}`);
  }
  // The kustomization's label is on every object (5 of them), and on no selector.
  assert.equal(stdout.match(/^ {4}app\.kubernetes\.io\/part-of: distrinews$/gm)?.length, 5, stdout);
});

Deno.test("validator: a folder without manifests is a usage error, not a pass", async () => {
  const dir = await tempDir();
  const { code, output } = await validate(dir);
  assert.equal(code, 2, output);
  assert.match(output, /no \*\.yaml or \*\.yml files/);
});

// actionlint checks workflow syntax, expressions (contexts, step outputs, needs), action inputs, and the
// `run:` scripts with shellcheck where it is installed (the GitHub runners have it).
async function actionlint(cwd: string, files: string[]): Promise<Result> {
  return run((await getTools()).actionlint, ["-no-color", ...files], cwd);
}

Deno.test("workflows: .github/workflows passes actionlint", async () => {
  const files = (await yamlFiles(WORKFLOWS)).map((f) => join(WORKFLOWS, f));
  assert.deepEqual(files.map((f) => basename(f)), ["ci.yml", "release.yml"]);
  const { code, output } = await actionlint(ROOT, files);
  assert.equal(code, 0, output);
});

Deno.test("workflows: actionlint fails a broken copy, naming the file and the mistake", async () => {
  const cases: [file: string, from: string, to: string, expected: RegExp][] = [
    ["ci.yml", "runs-on: ubuntu-24.04", "run-on: ubuntu-24.04", /unexpected key "run-on"/],
    [
      "release.yml",
      "steps.push.outputs.digest",
      "steps.pushed.outputs.digest",
      /property "pushed" is not defined/,
    ],
    ["release.yml", "needs: image", "needs: images", /needs job "images" which does not exist/],
  ];
  for (const [file, from, to, expected] of cases) {
    const root = await tempDir();
    const dir = join(root, ".github", "workflows");
    await Deno.mkdir(dir, { recursive: true });
    for (const name of ["ci.yml", "release.yml"]) await Deno.copyFile(join(WORKFLOWS, name), join(dir, name));
    const path = join(dir, file);
    await Deno.writeTextFile(path, edit(await Deno.readTextFile(path), from, to));
    const { code, output } = await actionlint(root, [path]);
    assert.equal(code, 1, `actionlint passed ${file} with ${to}:\n${output}`);
    assert.match(output, expected);
    // file:line:column: message, the path relative to the project.
    assert.match(output, new RegExp(`^\\.github/workflows/${file.replace(".", "\\.")}:\\d+:\\d+: `, "m"));
  }
});
