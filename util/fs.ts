/**
 * File-system helpers shared across the project: existence checks that never throw, and durable,
 * atomic writes (temporary file, fsync, rename) so a crash never leaves a half-written file.
 * @module
 */

/** Whether anything exists at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether `path` is a regular file. */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Whether `path` is a directory. */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Flushes a file's data to disk, so a rename after it can't expose a half-written file after a crash. */
export async function fsyncFile(path: string): Promise<void> {
  using file = await Deno.open(path, { read: true, write: true });
  await file.sync();
}

/** Writes `data` to `path` atomically: a temporary sibling, fsync, then rename over `path`. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  // A random suffix: two writers (two processes, or two saves in one) never share a temporary file.
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await fsyncFile(tmp);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}
