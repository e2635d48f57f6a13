// A real broadcaster server for the JS tests: `python -m broadcaster serve` in a child process.
//
// The Python is $BROADCASTER_PYTHON (pytest sets it to its own interpreter), else the
// repository's .venv/bin/python. Readiness and other server-side moments are awaited on the
// server's own log lines, never on a sleep.

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const PYTHON = process.env.BROADCASTER_PYTHON || join(REPO_ROOT, ".venv", "bin", "python");

/** Small buffers and quick shutdowns: a stalled client backs up after a few kilobytes. */
export const BASE_TOML = `
[server]
host = "127.0.0.1"
socket_send_buffer = 4096
shutdown_timeout = 0.5
close_timeout = 0.5
`;

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** A timer that rejects after `ms`, so that every wait in a test is bounded. */
function deadline(ms, what) {
  let timer;
  const promise = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

export class ServerProcess {
  constructor(toml, port) {
    this.dir = mkdtempSync(join(tmpdir(), "broadcaster-js-"));
    this.config = join(this.dir, "server.toml");
    writeFileSync(this.config, toml);
    this.port = port;
    this.proc = null;
    this.log = "";
    this._waiters = new Set();
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Start (or restart, on the same port) and resolve once the server listens. */
  async start() {
    this.log = "";
    const proc = spawn(
      PYTHON,
      ["-m", "broadcaster", "serve", "--config", this.config, "--port", String(this.port)],
      { cwd: REPO_ROOT, env: { ...process.env, PYTHONUNBUFFERED: "1" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    this.proc = proc;
    this.exited = new Promise((resolveExit) => proc.on("exit", (code, signal) => resolveExit({ code, signal })));
    const onData = (chunk) => {
      this.log += chunk.toString();
      for (const waiter of [...this._waiters]) waiter();
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    const early = this.exited.then(({ code }) => {
      throw new Error(`server exited with ${code} before listening:\n${this.log}`);
    });
    await Promise.race([this.waitForLog(/listening on/, 20000), early]);
    early.catch(() => {});
    return this;
  }

  /** Resolve when the server's output (since the last start) matches `pattern`. */
  waitForLog(pattern, ms = 10000) {
    const limit = deadline(ms, `server log ${pattern}`);
    const found = new Promise((resolveFound) => {
      const check = () => {
        if (pattern.test(this.log)) {
          this._waiters.delete(check);
          resolveFound();
        }
      };
      this._waiters.add(check);
      check();
    });
    return Promise.race([found, limit.promise]).finally(limit.cancel);
  }

  /** SIGTERM: clients get close 1001; resolves when the process has exited. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill("SIGTERM");
    const limit = deadline(15000, "server exit");
    try {
      await Promise.race([this.exited, limit.promise]);
    } finally {
      limit.cancel();
    }
  }

  /** SIGKILL and clean up (for teardown). */
  async kill() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill("SIGKILL");
      await this.exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** GET /stats as JSON. */
  async stats() {
    const response = await fetch(`${this.httpUrl}/stats`);
    return response.json();
  }
}

/** Start a server with `extraToml` appended to BASE_TOML on a free (or the given) port. */
export async function startServer(extraToml = "", { port, base = BASE_TOML } = {}) {
  const server = new ServerProcess(`${base}\n${extraToml}`, port ?? (await freePort()));
  return server.start();
}
