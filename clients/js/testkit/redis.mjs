// A real redis-server for the JS tests, on a free loopback port, without persistence.
//
// Never a mock: what the client must survive (a lost stream, a new epoch) is what Redis does.
// `command(...)` speaks RESP over a plain socket, so the tests need no Redis client package.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { freePort } from "./server.mjs";

/** One RESP command; resolves with the first reply line (e.g. "+OK", "+PONG"). */
function command(port, ...args) {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, "127.0.0.1");
    let reply = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis ${args[0]}: no reply within 5 s`));
    }, 5000);
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on("connect", () => {
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
    });
    socket.on("data", (chunk) => {
      reply += chunk.toString();
      const end = reply.indexOf("\r\n");
      if (end < 0) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(reply.slice(0, end));
    });
  });
}

/** Start redis-server; resolves once it answers PING. `stop()` kills it and removes its directory. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "broadcaster-js-redis-"));
  const proc = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no",
      "--protected-mode", "no", "--loglevel", "warning"],
    { stdio: "ignore" },
  );
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  proc.on("error", () => {}); // reported below as "did not answer"
  let ready = false;
  for (let attempt = 0; attempt < 500 && !ready; attempt++) {
    ready = await command(port, "PING").then((r) => r === "+PONG", () => false);
    if (!ready) await new Promise((r) => setTimeout(r, 10));
  }
  if (!ready) {
    proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw new Error("redis-server did not answer PING (is it installed?)");
  }
  return {
    port,
    /** The [broker] table of a node using this Redis (short timeouts, as in the Python tests). */
    toml: `
[broker]
kind = "redis"
url = "redis://127.0.0.1:${port}/0"
prefix = "test:"
timeout = 1.0
breaker_threshold = 2
breaker_cooldown = 0.2
`,
    command: (...args) => command(port, ...args),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGKILL");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
