/**
 * The image's HEALTHCHECK: exit 0 when the server on this container's port answers GET /health with 200
 * (the model is loaded and the server is not draining), 1 otherwise. Deno rather than curl, which the
 * runtime image does not have. The port is $PORT, else serve's default 7860; a server started with
 * `--port N` and no PORT is not seen by this check (set PORT instead).
 *
 * Usage: deno run --allow-net=127.0.0.1 --allow-env=PORT deploy/docker/healthcheck.ts
 * @module
 */

const port = Deno.env.get("PORT") || "7860";
try {
  const response = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(4000) });
  await response.body?.cancel();
  Deno.exit(response.status === 200 ? 0 : 1);
} catch {
  Deno.exit(1);
}
